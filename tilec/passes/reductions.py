"""How each reduction is computed, stated on the ``reduce`` op (``lowering``) for backends that
lower tiles to loop nests (Numba); a reduction without it is a plain loop nest:

- ``table_lookup_sum``: a float32 sum over the next-to-last axis of a gather along the last
  axis from 16-entry float32 tables (hits of a lookup table summed over chunks), where tables
  and hits are matrices of their own or views of one (``has_matrix_view``): the tables can
  stay in vector registers while the hits index them.
- ``row_simd``: max/min along the last axis of a float32 matrix tile of its own (16 or more
  wide): whole vectors at a time (a compiler leaves a max/min loop scalar).
- ``row_blocks``: sums along the last axis, ROW_BLOCK rows per pass, when what the rows read
  is shared by all of them (a vector broadcast along the rows of a matrix): read once per pass.
- ``lanes``: max/min of a computed row (an inlined expression) through LANES partials."""
from __future__ import annotations

from ..ir import Function, Op, Value
from .analysis import in_place, inlined

ROW_BLOCK = 4
LANES = 16


def choose_reductions(fn: Function, options: dict) -> Function:
    inline, windows = inlined(fn), in_place(fn)
    for op in fn.walk():
        if op.kind == "reduce":
            how = _lowering(op, inline, windows)
            if how is not None:
                op.attrs["lowering"] = how
    return fn


def _lowering(op: Op, inline: set[int], windows: set[int]) -> str | None:
    x, r = op.operands[0], op.result
    kind, axis, rank = op.attrs["op"], op.attrs["axis"], len(x.shape)
    if kind == "sum" and r.dtype.name == "float32" and x.id in inline and x.producer.kind == "gather":
        src = x.producer.operands[0]
        index = x.producer.operands[1]
        if x.producer.attrs["axis"] == rank - 1 and axis == rank - 2 and src.shape[-1] == 16 and \
                src.shape[-2] == x.shape[-2] and src.dtype.name == "float32" and \
                index.shape[-2] > 1 and index.shape[-1] > 1 and has_matrix_view(src, inline) and \
                has_matrix_view(index, inline):
            return "table_lookup_sum"
    if axis != rank - 1:
        return None
    if kind in ("max", "min") and r.dtype.name == "float32" and rank == 2 and x.shape[-1] >= 16 \
            and x.id not in inline and x.id not in windows:
        return "row_simd"
    if kind == "sum" and r.shape and rank >= 2 and x.shape[-2] % ROW_BLOCK == 0 and _shared_by_rows(x, inline):
        return "row_blocks"
    if kind in ("max", "min") and r.dtype.is_float and x.shape[-1] >= 2 * LANES:
        return "lanes"
    return None


def has_matrix_view(v: Value, inline: set[int]) -> bool:
    """Can v's last two axes be read as a matrix at any outer index: a tile of its own (or a
    load read in place), or an inlined expand_dims of one in front of those axes?"""
    if v.id not in inline:
        return True
    p = v.producer
    return p.kind == "expand_dims" and p.attrs["axis"] < len(v.shape) - 2 and has_matrix_view(p.operands[0], inline)


def _shared_by_rows(v: Value, inline: set[int]) -> bool:
    """Does the expression inlined into ``v`` read a tile every row (axis -2) shares? Only then
    do blocked row sums save reads (sums of exp over the rows of a small tile ran slower so)."""
    if v.id not in inline:
        return False
    for w in v.producer.operands:
        if len(w.shape) == 1 or len(w.shape) >= 2 and w.shape[-2] == 1:
            return True
        if _shared_by_rows(w, inline):
            return True
    return False
