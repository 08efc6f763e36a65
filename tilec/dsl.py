"""The DSL vocabulary. These functions only mean something inside a ``@tc.kernel`` body,
where the front end reads them from the AST; called from plain Python they raise.

Tiles are addressed by offsets and static extents; loads pad with zeros past the tensor's
edge and stores are masked to it, so kernels never compute edge masks by hand.
"""
from __future__ import annotations

from .errors import TilecError


class constexpr:
    """Annotation for compile-time parameters (tile sizes, flags): ``BM: tc.constexpr``."""


def _outside(name):
    def stub(*args, **kwargs):
        raise TilecError(f"tc.{name} can only be used inside a @tc.kernel or @tc.func body")
    stub.__name__ = name
    stub.__qualname__ = name
    return stub


_DOCS = {
    "program_id": "program_id(axis): index of this program instance along grid axis 0, 1 or 2.",
    "num_programs": "num_programs(axis): grid extent along an axis.",
    "load": "load(T, offsets, shape, padding=0): tile of T at offsets; None in shape indexes one element.",
    "store": "store(T, offsets, tile, shape=None): write a tile, masked to T's extents.",
    "limit": "limit(T, extents): T seen only below runtime extents (None: axis unchanged); loads pad "
             "and stores stop there.",
    "zeros": "zeros(shape, dtype=float32)",
    "full": "full(shape, value, dtype=None)",
    "arange": "arange(n): int32 tile 0..n-1 (n compile-time).",
    "dot": "dot(a, b, acc=None): a @ b in fp32 (int32 for ints), added to acc.",
    "trans": "trans(x): transpose of a 2-D tile.",
    "from_quads": "from_quads(x): the (4R, C/4) tile x (R, C) holds in k-quad order, "
                  "out[k, n] = x[k // 4, 4 n + k % 4]: weights laid out for byte dot products.",
    "where": "where(cond, a, b)",
    "cast": "cast(x, dtype)",
    "sum": "sum(x, axis, keepdims=False)",
    "max": "max(x, axis, keepdims=False)",
    "min": "min(x, axis, keepdims=False)",
    "maximum": "maximum(a, b): elementwise", "minimum": "minimum(a, b): elementwise",
    "exp": "", "exp2": "", "log": "", "log2": "", "sqrt": "", "rsqrt": "", "abs": "", "floor": "",
    "ceil": "", "sigmoid": "", "tanh": "", "erf": "", "sin": "", "cos": "",
    "gather": "gather(src, index, axis): np.take_along_axis with broadcasting (table lookups).",
    "reshape": "reshape(x, shape)", "broadcast_to": "broadcast_to(x, shape)",
    "expand_dims": "expand_dims(x, axis)",
    "cdiv": "cdiv(a, b): ceil(a / b) on scalars.",
    "range": "range(start, stop, step=1): a loop with carried values.",
    "static_range": "static_range(n): a loop unrolled at compile time (n compile-time).",
}

for _name, _doc in _DOCS.items():
    globals()[_name] = _outside(_name)
    globals()[_name].__doc__ = _doc or f"{_name}(x): elementwise."

__all__ = ["constexpr", *_DOCS]
