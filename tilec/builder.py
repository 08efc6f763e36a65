"""Builds IR ops and infers each result's shape and dtype as it goes.

The front end calls one method per DSL operation; a wrong shape or dtype raises
``TilecError`` here and the front end adds the source location.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from . import dtypes as dt
from .dtypes import DType
from .errors import TilecError
from .ir import (BINARY_OPS, COMPARE_OPS, REDUCE_OPS, UNARY_OPS, Block, Op, TensorType,
                 TileType, Value)

FLOAT_ONLY_UNARY = {"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "tanh", "erf", "sin", "cos",
                    "floor", "ceil"}
INT_ONLY_BINARY = {"and", "or", "xor", "shl", "shr"}


def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise TilecError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(max(x, y))
    return tuple(reversed(out))


class Builder:
    def __init__(self) -> None:
        self.blocks: list[Block] = [Block()]
        self.loc = ""

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def block(self) -> Block:
        return self.blocks[-1]

    def emit(self, kind: str, operands: list[Value], result_types: list, attrs: dict | None = None,
             hint: str = "", blocks: list[Block] | None = None) -> Op:
        results = [Value(t, hint) for t in result_types]
        op = Op(kind, list(operands), results, dict(attrs or {}), blocks or [], self.loc)
        for r in results:
            r.producer = op
        self.block.ops.append(op)
        return op

    def _one(self, kind: str, operands: list[Value], t, attrs: dict | None = None, hint: str = "") -> Value:
        return self.emit(kind, operands, [t], attrs, hint).result

    @staticmethod
    def _tile(v: Value, what: str) -> None:
        if v.is_tensor:
            raise TilecError(f"{what} takes tiles or scalars, got the tensor parameter {v.hint or v!r}; "
                             f"use tc.load to read a tile from it")

    # -- leaves -----------------------------------------------------------------------------
    def const(self, value: Any, dtype: DType) -> Value:
        if dtype.is_float:
            value = float(value)
        elif dtype.kind == "bool":
            value = bool(value)
        else:
            value = int(value)
        return self._one("const", [], TileType((), dtype), {"value": value})

    def program_id(self, axis: int) -> Value:
        return self._one("program_id", [], TileType((), dt.int32), {"axis": axis}, "pid")

    def num_programs(self, axis: int) -> Value:
        return self._one("num_programs", [], TileType((), dt.int32), {"axis": axis}, "nprog")

    def dim(self, tensor: Value, axis: int) -> Value:
        assert isinstance(tensor.type, TensorType)
        if not -tensor.type.rank <= axis < tensor.type.rank:
            raise TilecError(f"{tensor.hint}.shape[{axis}] is out of range for a rank-{tensor.type.rank} tensor")
        return self._one("dim", [tensor], TileType((), dt.int32), {"axis": axis % tensor.type.rank},
                         f"{tensor.hint}_dim{axis % tensor.type.rank}")

    # -- memory -----------------------------------------------------------------------------
    def _box(self, tensor: Value, offsets: Sequence[Value], box: Sequence[int | None], what: str) -> tuple:
        if not tensor.is_tensor:
            raise TilecError(f"{what} needs a tensor parameter as its first argument, got a tile {tensor.type}")
        rank = tensor.type.rank
        if len(offsets) != rank or len(box) != rank:
            raise TilecError(f"{what} of rank-{rank} tensor {tensor.hint!r} needs {rank} offsets and a "
                             f"{rank}-entry shape, got {len(offsets)} offsets and shape {tuple(box)}")
        for o in offsets:
            if o.shape != () or not o.dtype.is_int:
                raise TilecError(f"{what} offsets must be integer scalars, got {o.type}")
        for b in box:
            if b is not None and (not isinstance(b, int) or b < 1):
                raise TilecError(f"{what} tile extents must be positive compile-time ints (or None to "
                                 f"index one element), got {b!r}; declare tile sizes tc.constexpr")
        return tuple(box)

    def load(self, tensor: Value, offsets: Sequence[Value], box: Sequence[int | None],
             padding: float = 0.0, hint: str = "") -> Value:
        box = self._box(tensor, offsets, box, "tc.load")
        shape = tuple(b for b in box if b is not None)
        return self._one("load", [tensor, *offsets], TileType(shape, tensor.dtype),
                         {"box": box, "padding": padding}, hint or f"{tensor.hint}_tile")

    def store(self, tensor: Value, offsets: Sequence[Value], value: Value, box: Sequence[int | None] | None) -> None:
        self._tile(value, "tc.store value")
        if box is None:
            rank = tensor.type.rank if tensor.is_tensor else 0
            if len(value.shape) != rank:
                raise TilecError(f"tc.store of a {value.type} tile into a rank-{rank} tensor needs an explicit "
                                 f"shape with None for the indexed axes")
            box = value.shape
        box = self._box(tensor, offsets, box, "tc.store")
        shape = tuple(b for b in box if b is not None)
        if shape != value.shape:
            if broadcast_shapes(value.shape, shape) != shape:
                raise TilecError(f"tc.store writes a {shape} box but the value is {value.type}")
            value = self.broadcast(value, shape)
        self.emit("store", [tensor, *offsets, value], [], {"box": box})

    def limit(self, tensor: Value, extents: Sequence[Value | None]) -> Value:
        """``tensor`` seen only below ``extents`` (None: the axis as it is): a varlen sequence's
        rows in a packed batch, whose loads pad and whose stores stop at the sequence's end."""
        if not tensor.is_tensor:
            raise TilecError(f"tc.limit needs a tensor as its first argument, got a tile {tensor.type}")
        rank = tensor.type.rank
        if len(extents) != rank:
            raise TilecError(f"tc.limit of rank-{rank} tensor {tensor.hint!r} needs {rank} extents (None for "
                             f"an axis left as it is), got {len(extents)}")
        axes, bounds = [], []
        for ax, e in enumerate(extents):
            if e is None:
                continue
            if e.shape != () or not e.dtype.is_int:
                raise TilecError(f"tc.limit extents must be integer scalars, got {e.type}")
            axes.append(ax)
            bounds.append(e)
        if not axes:
            return tensor
        return self._one("limit", [tensor, *bounds], tensor.type, {"axes": tuple(axes)}, tensor.hint)

    # -- tile constructors ------------------------------------------------------------------
    def full(self, shape: Sequence[int], value: Value) -> Value:
        shape = tuple(shape)
        for s in shape:
            if not isinstance(s, int) or s < 1:
                raise TilecError(f"tile shapes must be positive compile-time ints, got {shape}; "
                                 f"declare tile sizes tc.constexpr")
        return self._one("full", [value], TileType(shape, value.dtype), {"shape": shape})

    def arange(self, n: int) -> Value:
        if not isinstance(n, int) or n < 1:
            raise TilecError(f"tc.arange needs a positive compile-time int, got {n!r}")
        return self._one("arange", [], TileType((n,), dt.int32), {"n": n}, "idx")

    # -- elementwise ------------------------------------------------------------------------
    def cast(self, v: Value, dtype: DType) -> Value:
        self._tile(v, "tc.cast")
        if v.dtype == dtype:
            return v
        return self._one("cast", [v], TileType(v.shape, dtype), {"dtype": dtype.name})

    def broadcast(self, v: Value, shape: Sequence[int]) -> Value:
        shape = tuple(shape)
        if v.shape == shape:
            return v
        if broadcast_shapes(v.shape, shape) != shape:
            raise TilecError(f"cannot broadcast {v.type} to {shape}")
        return self._one("broadcast", [v], TileType(shape, v.dtype), {"shape": shape})

    def unary(self, op: str, v: Value) -> Value:
        assert op in UNARY_OPS, op
        self._tile(v, f"tc.{op}")
        if op in FLOAT_ONLY_UNARY and not v.dtype.is_float:
            v = self.cast(v, dt.float32)
        if op == "not" and not (v.dtype.is_int or v.dtype.kind == "bool"):
            raise TilecError(f"bitwise not needs an integer or bool tile, got {v.type}")
        return self._one("unary", [v], v.type, {"op": op})

    def binary(self, op: str, a: Value, b: Value) -> Value:
        assert op in BINARY_OPS, op
        self._tile(a, f"'{op}'")
        self._tile(b, f"'{op}'")
        shape = broadcast_shapes(a.shape, b.shape)
        if op in INT_ONLY_BINARY:
            for v in (a, b):
                if v.dtype.is_float:
                    raise TilecError(f"'{op}' needs integer operands, got {v.type}")
            dtype = a.dtype if op in ("shl", "shr") else dt.promote(a.dtype, b.dtype)
            if op in ("shl", "shr"):
                b = self.cast(b, dtype)
        elif op == "truediv":
            dtype = dt.promote(dt.promote(a.dtype, b.dtype), dt.float32) if not (a.dtype.is_float or b.dtype.is_float) \
                else dt.promote(a.dtype, b.dtype)
        else:
            dtype = dt.promote(a.dtype, b.dtype)
        a, b = self.cast(a, dtype), self.cast(b, dtype)
        out = dt.bool_ if op in COMPARE_OPS else dtype
        return self._one("binary", [a, b], TileType(shape, out), {"op": op})

    def where(self, cond: Value, a: Value, b: Value) -> Value:
        for v in (cond, a, b):
            self._tile(v, "tc.where")
        if cond.dtype != dt.bool_:
            raise TilecError(f"tc.where condition must be a comparison (bool), got {cond.type}")
        shape = broadcast_shapes(broadcast_shapes(cond.shape, a.shape), b.shape)
        dtype = dt.promote(a.dtype, b.dtype)
        a, b = self.cast(a, dtype), self.cast(b, dtype)
        return self._one("where", [cond, a, b], TileType(shape, dtype))

    # -- structure --------------------------------------------------------------------------
    def reduce(self, op: str, v: Value, axis: int, keepdims: bool = False) -> Value:
        if op not in REDUCE_OPS:
            raise TilecError(f"unknown reduction {op!r}; use one of {sorted(REDUCE_OPS)}")
        self._tile(v, f"tc.{op}")
        if not v.shape:
            raise TilecError(f"tc.{op} needs a tile, got a scalar")
        if not isinstance(axis, int) or not -len(v.shape) <= axis < len(v.shape):
            raise TilecError(f"tc.{op} axis {axis!r} is out of range for a {v.type} tile")
        axis %= len(v.shape)
        shape = tuple(1 if i == axis else s for i, s in enumerate(v.shape)) if keepdims else \
            tuple(s for i, s in enumerate(v.shape) if i != axis)
        dtype = v.dtype
        if op == "sum" and not dtype.is_float:
            dtype = dt.int32 if dtype.bits < 32 else dtype
        elif op == "sum" and dtype.bits < 32:
            dtype = dt.float32
        v = self.cast(v, dtype)
        return self._one("reduce", [v], TileType(shape, dtype), {"op": op, "axis": axis, "keepdims": keepdims})

    def dot(self, a: Value, b: Value, acc: Value | None) -> Value:
        for v in (a, b):
            self._tile(v, "tc.dot")
            if len(v.shape) != 2:
                raise TilecError(f"tc.dot takes 2-D tiles, got {v.type}")
        (m, k), (k2, n) = a.shape, b.shape
        if k != k2:
            raise TilecError(f"tc.dot shape mismatch: {a.type} @ {b.type} (inner extents {k} != {k2})")
        mixed_bytes = a.dtype.is_int and b.dtype.is_int and a.dtype.bits == b.dtype.bits == 8
        if a.dtype != b.dtype and not mixed_bytes:   # int8 x uint8 stays: int32 sums, exact
            common = dt.promote(a.dtype, b.dtype)
            a, b = self.cast(a, common), self.cast(b, common)
        out = dt.int32 if a.dtype.is_int else dt.float32
        operands = [a, b]
        if acc is not None:
            self._tile(acc, "tc.dot accumulator")
            if acc.shape != (m, n):
                raise TilecError(f"tc.dot accumulator is {acc.type} but {a.type} @ {b.type} gives ({m}, {n})")
            operands.append(self.cast(acc, out))
        return self._one("dot", operands, TileType((m, n), out), hint="acc")

    def trans(self, v: Value) -> Value:
        self._tile(v, "tc.trans")
        if len(v.shape) != 2:
            raise TilecError(f"tc.trans takes a 2-D tile, got {v.type}")
        return self._one("trans", [v], TileType(v.shape[::-1], v.dtype))

    def from_quads(self, v: Value) -> Value:
        self._tile(v, "tc.from_quads")
        if len(v.shape) != 2 or v.shape[1] % 4:
            raise TilecError(f"tc.from_quads takes a 2-D tile whose columns are a multiple of 4, got {v.type}")
        return self._one("from_quads", [v], TileType((4 * v.shape[0], v.shape[1] // 4), v.dtype))

    def expand_dims(self, v: Value, axis: int) -> Value:
        self._tile(v, "indexing with None")
        if not -len(v.shape) - 1 <= axis <= len(v.shape):
            raise TilecError(f"expand_dims axis {axis} is out of range for {v.type}")
        axis %= len(v.shape) + 1
        shape = v.shape[:axis] + (1,) + v.shape[axis:]
        return self._one("expand_dims", [v], TileType(shape, v.dtype), {"axis": axis})

    def reshape(self, v: Value, shape: Sequence[int]) -> Value:
        self._tile(v, "tc.reshape")
        shape = tuple(shape)
        if TileType(shape, v.dtype).numel != v.type.numel:
            raise TilecError(f"tc.reshape cannot turn {v.type} ({v.type.numel} elements) into {shape}")
        return v if shape == v.shape else self._one("reshape", [v], TileType(shape, v.dtype), {"shape": shape})

    def gather(self, src: Value, index: Value, axis: int) -> Value:
        self._tile(src, "tc.gather")
        self._tile(index, "tc.gather index")
        if not index.dtype.is_int:
            raise TilecError(f"tc.gather index must be integer, got {index.type}")
        if len(src.shape) != len(index.shape):
            raise TilecError(f"tc.gather needs source and index of equal rank, got {src.type} and {index.type}")
        axis %= len(src.shape)
        other = [1 if i == axis else s for i, s in enumerate(src.shape)]
        idx_other = [1 if i == axis else s for i, s in enumerate(index.shape)]
        shape = list(broadcast_shapes(other, idx_other))
        shape[axis] = index.shape[axis]
        return self._one("gather", [src, index], TileType(tuple(shape), src.dtype), {"axis": axis})

    # -- control flow -----------------------------------------------------------------------
    @contextmanager
    def region(self, block: Block) -> Iterator[Block]:
        self.blocks.append(block)
        try:
            yield block
        finally:
            self.blocks.pop()

    def for_op(self, start: Value, stop: Value, step: Value, inits: list[Value], hints: list[str]) -> tuple[Op, Block]:
        body = Block(args=[Value(TileType((), start.dtype), "i")] + [Value(v.type, h) for v, h in zip(inits, hints)])
        op = self.emit("for", [start, stop, step, *inits], [v.type for v in inits], blocks=[body])
        for r, h in zip(op.results, hints):
            r.hint = h
        return op, body

    def if_op(self, cond: Value, then: Block, other: Block, hints: list[str]) -> Op:
        types = [v.type for v in then.yields]
        op = self.emit("if", [cond], types, blocks=[then, other])
        for r, h in zip(op.results, hints):
            r.hint = h
        return op
