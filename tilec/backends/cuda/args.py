"""Kernel arguments as the generated C signature takes them: every tensor becomes (data pointer,
extents, strides in elements); scalars pass by value. Works on NumPy, CuPy and Torch arrays
without importing CuPy or Torch (attributes only)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from .renderer import Param


def array_facts(x: Any, name: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(data pointer, shape, strides in elements) of a NumPy, CuPy or Torch array."""
    lib = type(x).__module__.split(".")[0]
    if lib == "torch":
        return int(x.data_ptr()), tuple(int(s) for s in x.shape), tuple(int(s) for s in x.stride())
    if isinstance(x, np.ndarray) or lib == "cupy":
        item = x.dtype.itemsize
        strides = []
        for s in x.strides:
            if s % item:
                raise InputError(f"{name} has a byte stride {s} that is not a multiple of its element size {item}; "
                                 f"pass a copy (np.ascontiguousarray)")
            strides.append(s // item)
        ptr = int(x.ctypes.data) if isinstance(x, np.ndarray) else int(x.data.ptr)
        return ptr, tuple(int(s) for s in x.shape), tuple(strides)
    raise InputError(f"{name}: expected a NumPy, CuPy or Torch array, got {type(x).__name__}")


def kernel_arguments(params: Sequence[Param], args: Sequence[Any], names: Sequence[str]) -> list[tuple[str, Any]]:
    """(C type, value) per C parameter; pointers are plain ints."""
    facts: dict[int, tuple] = {}
    out = []
    for p in params:
        a = args[p.index]
        if p.role == "scalar":
            out.append((p.ctype, a))
            continue
        if p.index not in facts:
            if not hasattr(a, "shape"):
                raise InputError(f"{names[p.index]} must be an array, got {type(a).__name__}")
            facts[p.index] = array_facts(a, names[p.index])
        ptr, shape, strides = facts[p.index]
        if p.role == "data":
            out.append((p.ctype, ptr))
        else:
            extents = shape if p.role == "shape" else strides
            if p.axis >= len(extents):
                raise InputError(f"{names[p.index]} has rank {len(shape)} but the kernel was compiled for a higher "
                                 f"rank")
            value = extents[p.axis]
            if p.role == "shape" and value >= 2 ** 31:
                raise InputError(f"{names[p.index]} extent {value} along axis {p.axis} does not fit in int32")
            out.append((p.ctype, value))
    return out
