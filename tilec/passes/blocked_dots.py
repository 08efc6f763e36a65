"""Register-blocked dots over a computed operand: a float32 dot with few rows whose right
operand is an elementwise expression (codes unpacked from packed bytes, dequantized keys) is
computed in a loop nest with the operand inlined, never stored.

The operand's tile must be (..., L) reshaped to (tokens, L) at most, L its contiguous axis,
and one of its leading axes must leave every tile it reads by name unchanged (the shift axis
of packed codes, along which each byte read serves several codes). That axis is unrolled
together with up to four rows of the left operand. The pass annotates the dot (``blocked``:
a ``BlockedDot``), marks the operand ``inline`` and the reshape/trans between them
``read_through`` (the loop nest indexes the operand directly)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import ELEMENTWISE, Function, Op, Value, uses
from .analysis import inlined, yielded

_MAX_ROWS = 16      # more rows than this: BLAS's packed kernels win
_ROW_BLOCK = (4, 3, 2, 1)   # rows per pass: the first that divides the row count


@dataclass(frozen=True)
class BlockedDot:
    operand: Value      # the computed tile, (..., L)
    shared_axis: int    # a leading axis of it along which no tile read by name changes
    unroll: int         # entries of that axis per pass
    rows: int           # rows of the left operand per pass
    transposed: bool    # dot(a, trans(operand)) rather than dot(a, operand)

    def __repr__(self) -> str:
        return (f"BlockedDot({self.operand!r}, shared_axis={self.shared_axis}, unroll={self.unroll}, "
                f"rows={self.rows}, transposed={self.transposed})")


def block_computed_dots(fn: Function, options: dict) -> Function:
    """Annotate every dot that a blocked loop nest computes (only where dots otherwise go to
    BLAS: with loop-nest dots the operand is inlined anyway)."""
    if options.get("dot") != "blas":
        return fn
    count, outlive, inline = uses(fn), yielded(fn.body), inlined(fn)
    for op in fn.walk():
        plan, between = _plan(op, count, outlive, inline)
        if plan is not None:
            op.attrs["blocked"] = plan
            plan.operand.producer.attrs["inline"] = True
            inline.add(plan.operand.id)
            for v in between:
                v.producer.attrs["read_through"] = True
    return fn


def _plan(op: Op, count: dict, outlive: set[int], inline: set[int]) -> tuple[BlockedDot | None, list[Value]]:
    if op.kind != "dot" or op.result.dtype.name != "float32":
        return None, []
    a, b = op.operands[:2]
    if a.shape[0] > _MAX_ROWS or a is b:
        return None, []
    between, x, transposed = [], b, False
    if x.producer is not None and x.producer.kind == "trans":
        between.append(x)
        x, transposed = x.producer.operands[0], True
    y = x
    if y.producer is not None and y.producer.kind == "reshape":
        between.append(y)
        y = y.producer.operands[0]
    p = y.producer
    if p is None or p.kind not in ELEMENTWISE or p.kind == "const" or len(y.shape) < 2 or \
            y.dtype.name != "float32" or y.shape[-1] != x.shape[-1] or \
            math.prod(y.shape[:-1]) != x.shape[0] or y.id in outlive or \
            any(count.get(v.id, 0) != 1 or v.id in outlive for v in between + [y]):
        return None, []
    inline = inline | {y.id}
    best = None
    for ax, n in enumerate(y.shape[:-1]):
        unroll = 4 if n % 4 == 0 else 2 if n % 2 == 0 else 1
        if unroll > 1 and not _named_reads_vary(y, ax, inline) and (best is None or unroll >= best[1]):
            best = (ax, unroll)
    if best is None:
        return None, []
    rows = next(r for r in _ROW_BLOCK if a.shape[0] % r == 0)
    return BlockedDot(y, best[0], best[1], rows, transposed), between


def _named_reads_vary(v: Value, axis: int, inline: set[int]) -> bool:
    """Does a tile read by name inside v's inlined expression change along v's ``axis``?"""
    if axis < 0 or v.shape == () or v.shape[axis] == 1:
        return False
    if v.id not in inline:
        return True
    p = v.producer
    if p.kind == "gather":
        return True   # its table is read by name at an index computed per element
    if p.kind == "expand_dims":
        e = p.attrs["axis"]
        return axis != e and _named_reads_vary(p.operands[0], axis - (axis > e), inline)
    return any(_named_reads_vary(w, axis - (len(v.shape) - len(w.shape)), inline) for w in p.operands)
