"""Loads read where they lie (``in_place``), and the prefetch of the rows such a load reads in
its loop's next step (``prefetch``: how far each offset moves per step)."""
from __future__ import annotations

import math

from ..ir import ELEMENTWISE, Block, Function, Op, Value, const_value, root, walk
from .analysis import SIXTEEN, blas_reads, by_helper, inlined, read_only_by_dot, reads_as_expression, readers, yielded

PREFETCH_BYTES = 16384     # a box this large streams from memory


def read_in_place(fn: Function, options: dict) -> Function:
    """Loads read only element by element, from tensors the kernel never stores to, whose readers
    end (through inlined expressions) in a reduction, a store, a loop-nest dot or a carried
    tile's elementwise update (an accumulator scaled per step): inside the
    tensor their readers index it in place instead of a copy (the copy was a second pass over
    every byte); only a box that crosses the tensor's edge is copied, padded."""
    reads, outlive, inline = readers(fn), yielded(fn.body), inlined(fn)
    dot_only = read_only_by_dot(reads, outlive)
    written = {root(op.operands[0]).id for op in fn.walk() if op.kind == "store"}
    blas = options.get("dot") == "blas"

    def consumed(reader: Op) -> bool:
        if reader.kind in ("reduce", "store", "dot"):
            return True
        r = reader.result if reader.results else None
        if r is not None and r.id not in inline and r.id in outlive and reader.kind in ELEMENTWISE:
            return True   # a carried tile's elementwise update, e.g. acc + scale * part
        return r is not None and r.id in inline and all(consumed(o) for o in reads.get(r.id, []))

    def by_element(reader: Op, v: Value) -> bool:
        if reader.kind == "cast" and reader.attrs["dtype"] in SIXTEEN:
            return False  # rounds the whole tile
        if reader.kind == "store" and reader.operands[0].dtype.name in SIXTEEN:
            return False
        if by_helper(reader):
            return reader.operands[2:] == [] or reader.operands[2] is not v  # rows of the window, as a view
        if reader.kind == "dot":  # a loop-nest dot reads its right operand element by element
            on_blas = blas and reader.result.dtype.name == "float32"
            return not on_blas and reader.operands[1] is v and all(o is not v for o in reader.operands[::2])
        return reads_as_expression(reader, v)

    for op in fn.walk():
        if op.kind != "load" or not op.result.shape or blas_reads(op, options, dot_only):
            continue
        tensor, r = op.operands[0], op.result
        if tensor.dtype.name in SIXTEEN or root(tensor).id in written or r.id in outlive:
            continue
        if reads.get(r.id) and all(by_element(o, r) and consumed(o) for o in reads[r.id]):
            op.attrs["in_place"] = True
    return fn


def prefetch_next_rows(fn: Function, options: dict) -> Function:
    """A 2-D load read in place, 16 KB or more, whose offsets move by constants per step of its
    innermost loop and to new rows (not further along the same rows): ``prefetch`` gives each
    offset's step, so the next step's rows are fetched while this step's are read. Rows a
    stride apart that a step jumps to are rows the hardware prefetchers do not see coming; a box
    moving along its rows continues streams they already follow (prefetching that was slower)."""
    _prefetch(fn.body, None)
    return fn


def _prefetch(block: Block, loop: dict | None) -> None:
    for op in block.ops:
        if op.kind == "load" and op.attrs.get("in_place") and loop is not None:
            deltas = _deltas(op, loop)
            if deltas is not None:
                op.attrs["prefetch"] = deltas
        for child in op.blocks:
            if op.kind == "for":
                body = op.blocks[0]
                inner = {"iv": body.args[0].id, "step": const_value(op.operands[2]),
                         "made": {r.id for o in walk(body) for r in o.results} | {a.id for a in body.args[1:]}}
                _prefetch(child, inner)
            else:
                _prefetch(child, loop)


def _deltas(op: Op, loop: dict) -> tuple[int, ...] | None:
    tensor, offsets, box = op.operands[0], op.operands[1:], op.attrs["box"]
    size = tensor.dtype.itemsize * math.prod(e for e in box if e is not None)
    if size < PREFETCH_BYTES or sum(e is not None for e in box) != 2:
        return None
    deltas = [step_delta(o, loop) for o in offsets]
    last = max(ax for ax, e in enumerate(box) if e is not None)
    if None in deltas or not any(deltas) or deltas[last]:
        return None
    return tuple(deltas)


def step_delta(v: Value, loop: dict) -> int | None:
    """How much scalar ``v`` grows from one step of ``loop`` to the next: 0 when it does not
    depend on the loop, None when not by a constant (carried values, or anything but adds,
    subtractions, multiplications and exact divisions by constants)."""
    if v.id == loop["iv"]:
        return loop["step"]
    if v.id not in loop["made"]:
        return 0
    p = v.producer
    if p is None or v.shape != ():
        return None
    if p.kind == "cast" and v.dtype.is_int:
        return step_delta(p.operands[0], loop)
    if p.kind != "binary":
        return None
    a, b = p.operands
    da, db = step_delta(a, loop), step_delta(b, loop)
    if da is None or db is None:
        return None
    o = p.attrs["op"]
    if o in ("add", "sub"):
        return da + db if o == "add" else da - db
    ca, cb = const_value(a), const_value(b)
    if o == "mul":
        if db == 0 and cb is not None:
            return da * cb
        if da == 0 and ca is not None:
            return db * ca
        return None
    if o == "floordiv" and db == 0 and cb and da % cb == 0:
        return da // cb
    return None
