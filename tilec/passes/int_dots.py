"""Integer dots read by vector helpers: a ``dot`` of an int8 tile with a uint8 tile stored in
one of the two orders the CPU's byte dot-product instructions (AVX2 ``vpmaddubsw``/``vpmaddwd``,
VNNI ``vpdpbusd``) take, and the dot reads that stored tile itself:

- ``dot(a, trans(b))``: each output column is one contiguous run of b's row (``rows_of_transpose``);
- ``dot(a, from_quads(b))``: b in k-quad order, each vector lane one output column, four bytes of
  depth per lane (``quads``): no horizontal sums, every unpacked vector serves all rows of a.

The re-indexing op goes away when nothing else reads it.

Codes unpacked from bytes by a shift and a mask with constants, ``(q >> s) & m``, go into the
dot too (``b_unpack = (s, m)``, the dot reading q): a backend unpacks them in registers.

``b_max`` on the dot bounds b's values where the IR shows one (``x & 15``: 15), so a backend may
pick instructions whose int16 pair sums are exact only below a bound; otherwise it is the
largest uint8, 255."""
from __future__ import annotations

from ..ir import Block, Function, Op, Value, const_value
from .analysis import HELPER_ORDERS as _ORDERS
from .analysis import by_helper, readers


def int_dot_rows(fn: Function, options: dict) -> Function:
    reads = readers(fn)
    for block in [fn.body] + [child for op in fn.walk() for child in op.blocks]:
        dead: list[Op] = []
        for op in block.ops:
            if op.kind != "dot" or op.result.dtype.name != "int32" or by_helper(op):
                continue
            a, b = op.operands[:2]
            t = b.producer
            if a.dtype.name != "int8" or b.dtype.name != "uint8" or t is None or t.kind not in _ORDERS:
                continue
            rows = t.operands[0]
            op.operands[1] = rows
            op.attrs[_ORDERS[t.kind]] = True
            op.attrs["b_max"] = value_bound(rows)
            reads.setdefault(rows.id, []).append(op)
            reads[b.id] = [r for r in reads.get(b.id, []) if r is not op]
            if not reads[b.id] and not _yielded(block, b):
                dead.append(t)
                reads[rows.id] = [r for r in reads[rows.id] if r is not t]
            # codes unpacked from bytes, (q >> s) & m with constant s and m: the dot reads q and
            # unpacks in registers (b_unpack = (s, m)), so the codes are never stored
            shift, mask, src, peeled = 0, 255, rows, []
            for kind in ("and", "shr"):
                p = src.producer
                c = _scalar_operand(p, kind)
                if c is None or src.dtype.name != "uint8" or len(reads.get(src.id, [])) != 1 or _yielded(block, src) \
                        or p not in block.ops:
                    continue
                if kind == "and":
                    mask = c
                else:
                    shift = c
                peeled.append(p)
                src = p.operands[0]
            if peeled and src.dtype.name == "uint8":
                op.operands[1] = src
                op.attrs["b_unpack"] = (shift, mask)
                reads.setdefault(src.id, []).append(op)
                dead.extend(peeled)
        block.ops = [o for o in block.ops if o not in dead]
    return fn


def value_bound(v: Value) -> int:
    """The largest value an unsigned 8-bit tile can hold, as far as its producers show."""
    op = v.producer
    top = (1 << v.dtype.bits) - 1
    if op is None:
        return top
    if op.kind in ("reshape", "trans", "from_quads", "expand_dims", "broadcast"):
        return min(top, value_bound(op.operands[0]))
    if op.kind == "cast" and op.operands[0].dtype.kind == "uint":
        return min(top, value_bound(op.operands[0]))
    if op.kind == "binary" and op.attrs["op"] == "and":
        masks = [const_value(x) if x.shape == () else _full_const(x) for x in op.operands]
        known = [m for m in masks if isinstance(m, int) and m >= 0]
        if known:
            return min(top, min(known))
    if op.kind == "binary" and op.attrs["op"] == "shr" and v.dtype.kind == "uint":
        shift = const_value(op.operands[1]) if op.operands[1].shape == () else _full_const(op.operands[1])
        if isinstance(shift, int) and shift >= 0:
            return min(top, value_bound(op.operands[0]) >> shift)
    return top


def _scalar_operand(p: Op | None, kind: str) -> int | None:
    """c for an op ``x <kind> c`` with a constant scalar c in 0..255, else None."""
    if p is None or p.kind != "binary" or p.attrs["op"] != kind or len(p.operands) != 2:
        return None
    c = const_value(p.operands[1]) if p.operands[1].shape == () else None
    return c if isinstance(c, int) and 0 <= c <= 255 else None


def _full_const(v: Value):
    p = v.producer
    if p is not None and p.kind in ("full", "broadcast", "expand_dims") and p.operands:
        inner = p.operands[0]
        return const_value(inner) if inner.shape == () else _full_const(inner)
    return None


def _yielded(block: Block, v: Value) -> bool:
    return any(y is v for y in block.yields)
