"""Verification: the IR is well formed before any backend sees it."""
from __future__ import annotations

from ..errors import TilecError
from ..ir import KINDS, Block, Function, TileType


def verify(fn: Function) -> Function:
    defined = {p.id for p in fn.params}
    _block(fn.body, defined, fn)
    return fn


def _fail(op, msg: str):
    raise TilecError(f"invalid IR in {op.kind}: {msg} (this is a tilec bug)", op.loc or None)


def _block(block: Block, defined: set[int], fn: Function) -> None:
    scope = set(defined) | {a.id for a in block.args}
    for op in block.ops:
        if op.kind not in KINDS:
            _fail(op, f"unknown op kind {op.kind!r}")
        for v in op.operands:
            if v.id not in scope:
                _fail(op, f"operand {v!r} is used before it is defined")
        for child in op.blocks:
            _block(child, scope, fn)
        if op.kind == "for":
            body = op.blocks[0]
            inits = op.operands[3:]
            if len(body.yields) != len(inits) or len(op.results) != len(inits):
                _fail(op, "loop yields and carried values disagree in number")
            for i, y, r in zip(inits, body.yields, op.results):
                if not (i.type == y.type == r.type):
                    _fail(op, f"carried value types differ: {i.type}, {y.type}, {r.type}")
        if op.kind == "if":
            then, other = op.blocks
            if [v.type for v in then.yields] != [v.type for v in other.yields] or \
                    len(then.yields) != len(op.results):
                _fail(op, "branches yield different types")
        if op.kind == "dot":
            a, b = op.operands[:2]
            if a.shape[1] != b.shape[0]:
                _fail(op, f"dot inner extents differ: {a.type} @ {b.type}")
        for r in op.results:
            if isinstance(r.type, TileType) and any(s < 1 for s in r.shape):
                _fail(op, f"empty tile {r.type}")
        scope.update(r.id for r in op.results)
    for y in block.yields:
        if y.id not in scope:
            raise TilecError(f"invalid IR: yielded {y!r} is not defined (this is a tilec bug)")
