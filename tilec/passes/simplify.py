"""Simplification: fold scalar constants, share identical pure ops (CSE), drop dead ops."""
from __future__ import annotations

import math
import operator

from ..ir import Block, Function, Op, Value, const_value, uses

_FOLD = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "max": max, "min": min,
         "floordiv": operator.floordiv, "mod": operator.mod}
# never shared: side effects, per-program values, and loads (a store may come between two)
_UNSHARED = {"store", "for", "if", "load", "program_id", "num_programs"}


def simplify(fn: Function) -> Function:
    replace: dict[int, Value] = {}
    _rewrite(fn.body, replace, {})
    _dce(fn)
    return fn


def _key(op: Op) -> tuple:
    attrs = tuple(sorted((k, repr(v)) for k, v in op.attrs.items()))
    return (op.kind, tuple(v.id for v in op.operands), attrs, tuple(str(r.type) for r in op.results))


def _rewrite(block: Block, replace: dict[int, Value], seen: dict[tuple, Value]) -> None:
    seen = dict(seen)  # an op in a child block may reuse the parent's values, never the reverse
    kept = []
    for op in block.ops:
        op.operands = [replace.get(v.id, v) for v in op.operands]
        for child in op.blocks:
            _rewrite(child, replace, seen)
        folded = _fold(op)
        if folded is not None:
            op.kind, op.operands, op.attrs = "const", [], {"value": folded}
        if op.kind not in _UNSHARED:
            k = _key(op)
            if k in seen:
                replace[op.result.id] = seen[k]
                continue
            seen[k] = op.result
        kept.append(op)
    block.ops = kept
    block.yields = [replace.get(v.id, v) for v in block.yields]


def _fold(op: Op):
    if op.kind == "binary" and op.result.shape == () and op.attrs["op"] in _FOLD:
        a, b = (const_value(v) for v in op.operands)
        if a is None or b is None:
            return None
        if op.attrs["op"] in ("floordiv", "mod") and b == 0:
            return None
        out = _FOLD[op.attrs["op"]](a, b)
        return float(out) if op.result.dtype.is_float else int(out)
    if op.kind == "cast" and op.result.shape == ():
        a = const_value(op.operands[0])
        if a is None:
            return None
        d = op.result.dtype
        if d.is_float:
            return float(a)
        if d.kind == "bool":
            return bool(a)
        if isinstance(a, float) and not math.isfinite(a):
            return None
        return int(a)
    return None


def _dce(fn: Function) -> None:
    while True:
        count = uses(fn)
        removed = _drop_unused(fn.body, count)
        if not removed:
            return


def _drop_unused(block: Block, count: dict[int, int]) -> bool:
    removed = False
    kept = []
    for op in block.ops:
        for child in op.blocks:
            removed |= _drop_unused(child, count)
        if op.kind != "store" and not _has_store(op) and all(count.get(r.id, 0) == 0 for r in op.results):
            removed = True
            continue
        kept.append(op)
    block.ops = kept
    return removed


def _has_store(op: Op) -> bool:
    return any(o.kind == "store" or _has_store(o) for b in op.blocks for o in b.ops)

