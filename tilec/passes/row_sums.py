"""Fused row sums: a float32 sum along the last axis of an elementwise tile made in the same
block (``sum(p, 1)`` beside a ``dot(p, v)`` that also reads p) is computed by the
loop nest that writes the tile (``row_sum`` on the tile's op names the sum's result; the sum
is ``summed_by_producer``), so the tile is not read a second time."""
from __future__ import annotations

from ..ir import Function
from .analysis import inlined

# ops a backend computes as an elementwise loop nest into a tile of their own
MATERIALIZED = {"full", "arange", "unary", "binary", "where", "expand_dims", "broadcast"}


def fuse_row_sums(fn: Function, options: dict) -> Function:
    inline = inlined(fn)
    for block in [fn.body] + [child for op in fn.walk() for child in op.blocks]:
        made = {op.result.id: op for op in block.ops if op.results}
        for op in block.ops:
            if op.kind != "reduce" or op.attrs["op"] != "sum" or op.result.dtype.name != "float32":
                continue
            x = op.operands[0]
            producer = made.get(x.id)
            if producer is not None and producer.kind in MATERIALIZED and x.id not in inline and \
                    x.dtype.name == "float32" and op.attrs["axis"] == len(x.shape) - 1 and \
                    "row_sum" not in producer.attrs:
                producer.attrs["row_sum"] = op.result
                op.attrs["summed_by_producer"] = True
    return fn
