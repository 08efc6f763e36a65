"""The pass pipelines: flat, named lists of passes, each with the one-line reason it runs.

Every backend's pipeline is the common passes (check, tidy, hoist: run once per kernel
specialization, ``run_pipeline``) followed by that backend's lowering (run on a copy of the
IR when the backend renders it, ``lower``): passes that annotate or rewrite the IR in IR
terms, so that a renderer only prints what the IR says. ``print_after_all`` shows the IR
after each pass (``tilec show OP --passes``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir import Function
from .clone import clone
from .hoist import hoist
from .simplify import simplify
from .verify import verify


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Function, dict], Function]     # (IR, backend options) -> IR
    reason: str


def _plain(f: Callable[[Function], Function]) -> Callable[[Function, dict], Function]:
    return lambda fn, options: f(fn)


COMMON: list[Pass] = [
    Pass("verify", _plain(verify), "every operand defined before use, types agree"),
    Pass("simplify", _plain(simplify), "fold scalar constants, share equal ops, drop dead ones"),
    Pass("hoist", _plain(hoist), "loop-invariant ops move out of loops"),
    Pass("simplify-again", _plain(simplify), "hoisted copies of outer values are shared"),
    Pass("verify-again", _plain(verify), "a rewrite must leave valid IR behind"),
]

# backend -> its lowering passes, in order, after COMMON
LOWERING: dict[str, list[Pass]] = {
    "numba": [],
    "triton": [],
    "cuda": [],
}

# the names older code imports
PIPELINE = [(p.name, lambda fn, p=p: p.run(fn, {})) for p in COMMON]


def pipeline(backend: str | None = None) -> list[Pass]:
    """The full list of passes a kernel goes through on ``backend`` (common ones alone: None)."""
    return COMMON + (LOWERING.get(backend, []) if backend else [])


def run_pipeline(fn: Function, after: Callable[[Pass, Function], None] | None = None) -> Function:
    """The common passes, in place (``after`` sees the IR after each)."""
    return _run(fn, COMMON, {}, after)


def lower(fn: Function, backend: str, options: dict,
          after: Callable[[Pass, Function], None] | None = None) -> Function:
    """``backend``'s lowering passes on a copy of ``fn`` (the common passes already ran)."""
    passes = LOWERING.get(backend, [])
    return _run(clone(fn), passes, options, after) if passes else fn


def _run(fn: Function, passes: list[Pass], options: dict, after) -> Function:
    for p in passes:
        fn = p.run(fn, options)
        if after is not None:
            after(p, fn)
    return fn


def print_after_all(fn: Function, backend: str, options: dict) -> str:
    """The IR after every pass of ``backend``'s pipeline, from ``fn`` as the front end built it
    (``fn`` is not changed), like MLIR's ``--print-ir-after-all``."""
    from ..printer import format_function
    parts: list[str] = []

    def show(p: Pass, ir: Function) -> None:
        parts.append(f"// ----- IR after {p.name}: {p.reason}\n{format_function(ir)}")

    lower(run_pipeline(clone(fn), show), backend, options, show)
    return "\n\n".join(parts) + "\n"
