"""Loop-invariant code motion: pure ops in a loop body whose operands all come from outside
the loop move in front of it (offsets like ``pid * BM`` are computed once, not per step)."""
from __future__ import annotations

from ..ir import Block, Function, Op

_PINNED = {"load", "store", "for", "if"}  # memory and control flow stay where they are


def hoist(fn: Function) -> Function:
    _visit(fn.body)
    return fn


def _visit(block: Block) -> None:
    out: list[Op] = []
    for op in block.ops:
        for child in op.blocks:
            _visit(child)
        if op.kind == "for":
            out.extend(_invariants(op))
        out.append(op)
    block.ops = out


def _invariants(loop: Op) -> list[Op]:
    body = loop.blocks[0]
    inside = {a.id for a in body.args}
    for op in body.ops:
        inside.update(r.id for r in op.results)
    moved, kept = [], []
    for op in body.ops:
        if op.kind not in _PINNED and not op.blocks and not any(v.id in inside for v in op.operands):
            moved.append(op)
            inside.difference_update(r.id for r in op.results)
        else:
            kept.append(op)
    body.ops = kept
    return moved
