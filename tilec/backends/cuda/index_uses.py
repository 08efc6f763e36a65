"""Which axes of a thread's tile index the C text of a value reads, decided from the IR and
the plan before anything is printed, so that the renderer binds only the index helpers
(``row``, ``col``, one per leading axis) something reads.

An index is a list with one entry per axis; each entry is the set of owned axes that entry's
expression is made from. The rules follow ``CudaRenderer.ref`` and ``CudaRenderer.expr``:
a value inlined reads what its expression reads; a tile in shared memory reads its row-major
offset (every axis longer than 1); a register tile reads its slot, a scalar nothing."""
from __future__ import annotations

from ...ir import Op, Value
from ...passes.analysis import operand_identity
from .plan import Plan

Index = list[frozenset]


def axes(rank: int) -> Index:
    """The owned index of a rank-``rank`` tile: entry d is made from axis d."""
    return [frozenset([d]) for d in range(rank)]


def flat_reads(idx: Index, shape: tuple[int, ...]) -> frozenset:
    """What the row-major offset of ``idx`` in ``shape`` reads (trailing-aligned, size-1 axes
    left out), as ``CudaRenderer.flat`` writes it."""
    own = idx[len(idx) - len(shape):] if shape else []
    return frozenset().union(*(i for i, s in zip(own, shape) if s != 1))


def value_reads(plan: Plan, v: Value, idx: Index, ident: bool) -> frozenset:
    if v.id in plan.inline:
        return expr_reads(plan, v.producer, idx, ident)
    if v.shape == () or not plan.in_smem(v):
        return frozenset()
    return flat_reads(idx, v.shape)


def expr_reads(plan: Plan, op: Op, idx: Index, ident: bool) -> frozenset:
    r = op.result
    own = idx[len(idx) - len(r.shape):] if r.shape else []
    k = op.kind

    def operand(j: int, at: Index) -> frozenset:
        return value_reads(plan, op.operands[j], at, operand_identity(op, j, ident))

    if k == "const":
        return frozenset()
    if k == "arange":
        return own[-1]
    if k == "expand_dims":
        ax = op.attrs["axis"]
        return operand(0, own[:ax] + own[ax + 1:])
    if k == "trans":
        return operand(0, [own[1], own[0]])
    if k == "from_quads":
        return operand(0, [own[0], own[0] | own[1]])
    if k == "reshape":
        return operand(0, [flat_reads(own, r.shape)] * len(op.operands[0].shape))
    if k == "gather":
        at = list(own)
        at[op.attrs["axis"]] = operand(1, own)
        return operand(0, at) | operand(1, own)
    return frozenset().union(*(operand(j, own) for j in range(len(op.operands))))
