"""The pass pipeline: a flat, named list. Each pass is a function ``Function -> Function``
(or a report) living in its own module; ``run_pipeline`` applies them in order.

Shape and type inference happen while the IR is built (``tilec.builder``); the passes here
check it, tidy it and measure it.
"""
from __future__ import annotations

from typing import Callable

from ..ir import Function
from .hoist import hoist
from .simplify import simplify
from .verify import verify

PIPELINE: list[tuple[str, Callable[[Function], Function]]] = [
    ("verify", verify),        # every operand defined before use, types agree
    ("simplify", simplify),    # fold scalar constants, share equal ops, drop dead ones
    ("hoist", hoist),          # loop-invariant ops move out of loops
    ("simplify-again", simplify),  # hoisted copies of outer values are shared
    ("verify-again", verify),  # a rewrite must leave valid IR behind
]


def run_pipeline(fn: Function) -> Function:
    for _name, pass_fn in PIPELINE:
        fn = pass_fn(fn)
    return fn
