"""Facts about a function's values that several lowering passes read: who reads a value,
which values outlive their iteration, what makes each value, and the lowering annotations
already on the IR (``inline``, ``in_place``)."""
from __future__ import annotations

from ..ir import ELEMENTWISE, Block, Function, Op, Value

SIXTEEN = ("float16", "bfloat16")
# Ops computed elementwise over their result tile (each operand read at a derived index).
EXPRESSION = ELEMENTWISE | {"trans", "from_quads", "reshape", "gather"}
# Expression ops that only re-index or build constants: inlining them never adds reads.
INDEX_ONLY = {"const", "full", "arange", "expand_dims", "broadcast"}


# a byte dot's right operand, re-indexed by -> the attribute int-dot-rows sets when the dot reads
# the stored tile itself (passes/int_dots.py)
HELPER_ORDERS = {"trans": "rows_of_transpose", "from_quads": "quads"}


def by_helper(op: Op) -> bool:
    """A byte dot given to a vector helper (int-dot-rows): it reads its operands as arrays."""
    return op.kind == "dot" and any(op.attrs.get(attr) for attr in HELPER_ORDERS.values())


def operand_identity(op: Op, k: int, ident: bool) -> bool:
    """Whether operand ``k`` of expression op ``op`` is read at the same element of its tile as
    ``op``'s result, given that ``op`` itself is read at the element it is made at (``ident``)."""
    v = op.operands[k]
    if not ident or v.shape != op.result.shape:
        return False
    if op.kind in ("trans", "from_quads", "reshape", "expand_dims", "broadcast"):
        return False
    if op.kind == "gather":
        return k == 1
    return True


def readers(fn: Function) -> dict[int, list[Op]]:
    """Value id -> the ops that read it, in walk order."""
    out: dict[int, list[Op]] = {}
    for op in fn.walk():
        for v in op.operands:
            out.setdefault(v.id, []).append(op)
    return out


def yielded(block: Block) -> set[int]:
    """Ids of values that a loop or branch yields (they outlive the iteration that made them)."""
    out = {v.id for v in block.yields}
    for op in block.ops:
        for child in op.blocks:
            out |= yielded(child)
    return out


def branch_results(fn: Function) -> dict[int, list[Value]]:
    """Per value yielded only by if-branches (never by a loop body): the if results it becomes."""
    out: dict[int, list[Value]] = {}
    loop_yields = {v.id for v in fn.body.yields}
    for op in fn.walk():
        for blk in op.blocks:
            if op.kind == "if":
                for v, r in zip(blk.yields, op.results):
                    out.setdefault(v.id, []).append(r)
            else:
                loop_yields |= {v.id for v in blk.yields}
    return {vid: rs for vid, rs in out.items() if vid not in loop_yields}


def producers(fn: Function) -> dict[int, object]:
    """Value id -> the op that makes it, or (for op, position) for a loop-carried block argument."""
    out: dict[int, object] = {}
    for op in fn.walk():
        for r in op.results:
            out[r.id] = op
        if op.kind == "for":
            for position, arg in enumerate(op.blocks[0].args[1:]):
                out[arg.id] = (op, position)
    return out


def read_only_by_dot(reads: dict[int, list[Op]], outlive: set[int]) -> set[int]:
    """Ids of values whose every reader is a float32 ``dot`` operand (never a yield or another op),
    and of tiles only transposed for such dots (a transpose is a flag to BLAS). A ``blocked`` dot
    is a loop nest that reads its operands at their whole tile extent, so it does not count."""
    direct = {vid for vid, ops in reads.items() if vid not in outlive and
              all(o.kind == "dot" and o.result.dtype.name == "float32" and "blocked" not in o.attrs and
                  any(x.id == vid for x in o.operands[:2]) and
                  not (len(o.operands) > 2 and o.operands[2].id == vid) for o in ops)}
    return direct | {vid for vid, ops in reads.items() if vid not in outlive and
                     all(o.kind == "trans" and o.result.id in direct for o in ops)}


def reads_as_expression(reader: Op, v: Value) -> bool:
    """Whether ``reader`` can take ``v`` as an inline expression rather than a named tile: a
    gather indexes its table by name, so only its index operand may be inlined."""
    if reader.kind == "gather":
        return reader.operands[1] is v and reader.operands[0] is not v
    return reader.kind in ELEMENTWISE or reader.kind in ("reduce", "store")


def inlined(fn: Function) -> set[int]:
    """Ids of values an ``inline`` annotation says are computed inside their readers."""
    return {op.result.id for op in fn.walk() if op.attrs.get("inline") and op.results}


def in_place(fn: Function) -> set[int]:
    """Ids of loads an ``in_place`` annotation says are read from the tensor where it lies."""
    return {op.result.id for op in fn.walk() if op.kind == "load" and op.attrs.get("in_place")}


def blas_reads(op: Op, options: dict, dot_only: set[int]) -> bool:
    """A float32 2-D load that only BLAS dots read (directly or transposed) stays in the tensor
    as a view, e.g. a tile K[b, h, n:n + BN, :] of a 4-D tensor."""
    tensor, r = op.operands[0], op.result
    return options.get("dot") == "blas" and r.id in dot_only and tensor.dtype.name == "float32" \
        and len(r.shape) == 2


def used_up(v: Value, reads: dict[int, list[Op]], outlive: set[int], branch: dict[int, list[Value]]) -> bool:
    """Is v's array, and any reshaped or transposed view of it, used within the iteration that
    made it: not carried, read only element by element, stored, or a BLAS operand (never a
    dot's accumulator, never a loop's value, a branch's only if the branch's result is)?"""
    if v.id in outlive:
        # a branch's value is used up when what the branch makes of it is (a tile a branch
        # masks on some steps and passes through on others)
        made = branch.get(v.id)
        if made is None or not all(used_up(r, reads, outlive, branch) for r in made):
            return False
    elif not reads.get(v.id):
        return False
    for o in reads.get(v.id, []):
        if o.kind in ELEMENTWISE or o.kind in ("reduce", "store", "gather"):
            continue
        if o.kind == "dot" and all(x is not v for x in o.operands[2:]):
            continue
        if o.kind in ("reshape", "trans") and used_up(o.result, reads, outlive, branch):
            continue
        return False
    return True
