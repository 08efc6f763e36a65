"""The tile IR: typed, shaped SSA values in nested blocks.

A function body is a ``Block``: a list of ``Op``s; ``for`` and ``if`` ops own child blocks
whose ``yields`` flow back as the op's results. Every value has a static tile shape (``()``
for scalars) and a dtype; tensor parameters have a rank and a dtype but a runtime shape.
The op kinds are listed in ``KINDS`` with their meaning; backends render each kind.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

from .dtypes import DType

# kind -> what it computes (the whole vocabulary of the IR)
KINDS = {
    "const": "a scalar literal (attrs: value)",
    "program_id": "index of this program along a grid axis (attrs: axis)",
    "num_programs": "grid size along an axis (attrs: axis)",
    "dim": "runtime extent of a tensor parameter (attrs: axis)",
    "load": "tile read from a tensor at scalar offsets, zero-padded outside (attrs: box, padding)",
    "store": "tile write to a tensor at scalar offsets, masked to the tensor (attrs: box)",
    "limit": "the tensor cut to runtime extents (a view): loads past them read padding, stores "
             "past them are dropped (operands: tensor, one bound per axis in attrs axes)",
    "full": "tile of one scalar operand (attrs: shape)",
    "arange": "0..n-1 as an int32 tile (attrs: n)",
    "unary": "elementwise function (attrs: op)",
    "binary": "elementwise arithmetic/compare/bitwise with broadcasting (attrs: op)",
    "where": "elementwise select",
    "cast": "elementwise conversion (attrs: dtype)",
    "reduce": "reduction along one axis (attrs: op, axis, keepdims)",
    "dot": "matrix product of 2-D tiles, accumulated in fp32 onto an optional accumulator",
    "trans": "transpose of a 2-D tile",
    "from_quads": "the (4R, C/4) tile held in k-quad order in an (R, C) tile: out[k, n] = "
                  "src[k // 4, 4 n + k % 4] (the operand order of byte dot-product instructions)",
    "expand_dims": "insert a unit axis (attrs: axis)",
    "broadcast": "broadcast to a shape (attrs: shape)",
    "reshape": "same elements, new static shape (attrs: shape)",
    "gather": "take_along_axis with broadcasting: out[..i..] = src[..index[..i..]..] (attrs: axis)",
    "for": "counted loop; block args (iv, *carried); yields the next carried values",
    "if": "branch on a scalar; both blocks yield the results",
}

UNARY_OPS = {"neg", "not", "exp", "exp2", "log", "log2", "sqrt", "rsqrt", "abs", "floor", "ceil",
             "sigmoid", "tanh", "erf", "sin", "cos"}
BINARY_OPS = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "max", "min",
              "and", "or", "xor", "shl", "shr",
              "lt", "le", "gt", "ge", "eq", "ne"}
COMPARE_OPS = {"lt", "le", "gt", "ge", "eq", "ne"}
REDUCE_OPS = {"sum", "max", "min"}
ELEMENTWISE = {"full", "arange", "unary", "binary", "where", "cast", "expand_dims", "broadcast", "const"}


def root(v: "Value") -> "Value":
    """The tensor parameter a tensor value views (through ``limit``), or ``v`` itself."""
    while v.producer is not None and v.producer.kind == "limit":
        v = v.producer.operands[0]
    return v


@dataclass(frozen=True)
class TileType:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def __str__(self) -> str:
        if not self.shape:
            return self.dtype.short
        return f"{self.dtype.short}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class TensorType:
    """A kernel's array parameter: rank and dtype known, extents at run time."""
    rank: int
    dtype: DType

    @property
    def shape(self) -> None:
        """No static shape (its extents are runtime values): passes that walk every op's result
        see a tensor (``limit``) as neither a scalar nor a tile."""
        return None

    def __str__(self) -> str:
        return f"tensor<{self.dtype.short}, rank {self.rank}>"


_ids = itertools.count()


@dataclass(eq=False)
class Value:
    type: TileType | TensorType
    hint: str = ""                  # a name from the source, for readable output
    producer: "Op | None" = None
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.type, TensorType)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape  # type: ignore[union-attr]

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"%{self.hint or 'v'}{self.id}"


@dataclass(eq=False)
class Block:
    args: list[Value] = field(default_factory=list)
    ops: list["Op"] = field(default_factory=list)
    yields: list[Value] = field(default_factory=list)


@dataclass(eq=False)
class Op:
    kind: str
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    loc: str = ""                   # "file:line" of the source statement

    @property
    def result(self) -> Value:
        return self.results[0]


@dataclass(eq=False)
class Function:
    name: str
    params: list[Value]
    body: Block
    constexprs: dict[str, Any]
    grid_rank: int = 1
    source_file: str = ""

    def walk(self) -> Iterator[Op]:
        yield from walk(self.body)


def walk(block: Block) -> Iterator[Op]:
    """Every op, pre-order, descending into child blocks."""
    for op in block.ops:
        yield op
        for child in op.blocks:
            yield from walk(child)


def const_value(v: Value) -> Any:
    """The literal of a value made by a ``const`` op, else None."""
    p = v.producer
    return p.attrs["value"] if p is not None and p.kind == "const" else None


def uses(fn: Function) -> dict[int, int]:
    """How many times each value id is read (operands and yields)."""
    count: dict[int, int] = {}

    def visit(block: Block) -> None:
        for op in block.ops:
            for v in op.operands:
                count[v.id] = count.get(v.id, 0) + 1
            for child in op.blocks:
                visit(child)
        for v in block.yields:
            count[v.id] = count.get(v.id, 0) + 1

    visit(fn.body)
    return count
