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
from .blocked_dots import block_computed_dots
from .buffers import loop_private_buffers
from .clone import clone
from .hoist import hoist
from .inlining import inline_index_tiles, inline_into_one_loop, inline_pointwise, inline_single_use
from .int_dots import int_dot_rows
from .reductions import choose_reductions
from .row_sums import fuse_row_sums
from .simplify import simplify
from .verify import verify
from .views import accumulate_in_place, choose_views, update_in_place
from .windows import prefetch_next_rows, read_in_place


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
    "numba": [
        Pass("int-dot-rows", int_dot_rows, "a byte dot reads its stored rows or k-quads: dot-product instructions"),
        Pass("inline-single-use", inline_single_use, "a tile read once as an expression is never stored"),
        Pass("inline-into-one-loop", inline_into_one_loop, "an epilogue is one pass over its tile, nothing stored between"),
        Pass("inline-index-tiles", inline_index_tiles, "index arithmetic recomputed beats a tile read in a loop"),
        Pass("block-computed-dots", block_computed_dots, "a computed operand with few rows is never stored"),
        Pass("fuse-row-sums", fuse_row_sums, "the loop writing a tile sums its rows: no second read"),
        Pass("read-in-place", read_in_place, "a load read by element indexes the tensor: no copy"),
        Pass("prefetch-next-rows", prefetch_next_rows, "rows a step jumps to are fetched a step ahead"),
        Pass("accumulate-in-place", accumulate_in_place, "a dot adds into an accumulator nothing else reads"),
        Pass("update-in-place", update_in_place, "a carried tile's elementwise update overwrites it: no new array"),
        Pass("loop-private-buffers", loop_private_buffers, "a tile dead by the step's end is allocated once"),
        Pass("choose-reductions", choose_reductions, "lookup sums, vector rows, row blocks, lanes: fewer reads"),
        Pass("choose-views", choose_views, "a tile that is only read is a view of what it reads: no copy"),
    ],
    "triton": [],
    "cuda": [
        Pass("inline-pointwise", inline_pointwise, "a tile read once at the element a thread owns is never stored"),
    ],
}

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
