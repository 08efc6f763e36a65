"""Views and in-place accumulation, for backends whose tiles are arrays (Numba).

``choose-views`` says how each tile load reads its tensor (``lowering`` on the load):

- ``in_place``: its readers index the tensor where it lies (``read-in-place``);
- ``view``: only float32 BLAS dots read it (directly or transposed): a strided view;
- ``slab``: it is only read, from a tensor the kernel never writes, and its box is a slab of
  whole rows when its sliced axes past the first start at 0 and span the tensor (checked at
  run time): then a C-ordered view, else a copy;
- ``copy``: anything else.

and marks a ``trans`` only BLAS dots read as a view (``view``: BLAS takes the transposed
layout as a flag), and a loop-carried ``reshape`` as a copy (``copy``: a carried view would
alias its source). ``accumulate-in-place`` marks a dot that may add into its accumulator's
array (``in_place_acc``) because nothing else reads it and no other tile shares it, and an
elementwise update of a loop-carried tile (``acc = acc + ...``) that may write its result over
the tile it reads at the same element (``in_place_of``: that tile)."""
from __future__ import annotations

from ..ir import ELEMENTWISE, Function, Op, Value, root, uses
from .analysis import (SIXTEEN, blas_reads, branch_results, in_place, operand_identity, producers,
                       read_only_by_dot, readers, used_up, yielded)

# ops whose result is a new array of its own (a load copies unless it is a view, and a view
# is never a dot's accumulator)
FRESH = ELEMENTWISE | {"load", "dot", "reduce", "gather"}


def choose_views(fn: Function, options: dict) -> Function:
    reads, outlive, branch = readers(fn), yielded(fn.body), branch_results(fn)
    dot_only, windows = read_only_by_dot(reads, outlive), in_place(fn)
    written = {root(op.operands[0]).id for op in fn.walk() if op.kind == "store"}   # through limits too
    for op in fn.walk():
        if op.kind == "trans" and op.result.id in dot_only and options.get("dot") == "blas":
            op.attrs["view"] = True
        if op.kind == "reshape" and op.result.id in outlive:
            op.attrs["copy"] = True     # a carried view would alias its source
        if op.kind != "load" or not op.result.shape:
            continue
        tensor, r, box = op.operands[0], op.result, op.attrs["box"]
        sliced = [ax for ax, e in enumerate(box) if e is not None]
        if r.id in windows:
            how = "in_place"
        elif blas_reads(op, options, dot_only):
            how = "view"
        elif tensor.dtype.name not in SIXTEEN and root(tensor).id not in written and r.id not in outlive and \
                sliced and sliced == list(range(sliced[0], len(box))) and used_up(r, reads, outlive, branch):
            how = "slab"
        else:
            how = "copy"
        op.attrs["lowering"] = how
    return fn


def accumulate_in_place(fn: Function, options: dict) -> Function:
    count, made_by = uses(fn), producers(fn)
    for op in fn.walk():
        if op.kind == "dot" and len(op.operands) > 2 and _owns(op.operands[2], count, made_by, op):
            op.attrs["in_place_acc"] = True
    return fn


def update_in_place(fn: Function, options: dict) -> Function:
    count, made_by = uses(fn), producers(fn)
    for op in fn.walk():
        if op.kind not in ELEMENTWISE or not op.results or not op.result.shape or op.attrs.get("inline"):
            continue
        for v in _read_pointwise(op):
            if v.type == op.result.type and isinstance(made_by.get(v.id), tuple) and _owns(v, count, made_by, op):
                op.attrs["in_place_of"] = v
                break
    return fn


def _read_pointwise(op: Op):
    """The tiles ``op`` reads at the element it writes, directly or through inlined elementwise
    ops (``acc + a + b`` reads acc through the inlined ``acc + a``)."""
    for k, v in enumerate(op.operands):
        if operand_identity(op, k, True):
            yield v
            p = v.producer
            if p is not None and p.kind in ELEMENTWISE and p.attrs.get("inline"):
                yield from _read_pointwise(p)


def _owns(v: Value, count: dict[int, int], made_by: dict, dot: Op | None) -> bool:
    """May ``dot`` (a dot, or an elementwise update) overwrite tile ``v`` in place? Only if
    nothing else reads v and no other value shares its array. A loop-carried v qualifies when
    the loop carries this op's result in its place and the array it starts from qualifies."""
    if count.get(v.id, 0) != 1:
        return False
    p = made_by.get(v.id)
    if isinstance(p, tuple):
        loop, position = p
        return dot is not None and loop.blocks[0].yields[position] is dot.result and \
            _owns(loop.operands[3 + position], count, made_by, None)
    return p is not None and p.kind in FRESH and p.kind != "const"
