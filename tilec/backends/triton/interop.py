"""Arrays as the generated kernels take them: a pointer object plus extents and element
strides (flattened into the kernel's ``A, A_shape0.., A_stride0..`` arguments).

Triton reads two things from a pointer argument: ``data_ptr()`` and ``dtype`` (whose text
names the element type). Torch tensors have both; NumPy and CuPy arrays get a tiny wrapper,
so neither torch nor CuPy is needed unless the caller's arrays come from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ...runtime.arrays import describe

INT32_MAX = 2**31 - 1


class Pointer:
    """``data_ptr()`` + ``dtype`` over a NumPy or CuPy array (kept alive by this object)."""

    def __init__(self, array: Any, address: int, dtype: str):
        self.array = array
        self.address = address
        self.dtype = dtype          # e.g. "float32", "bfloat16": Triton maps the text to its type

    def data_ptr(self) -> int:
        return self.address

    def __repr__(self) -> str:
        return f"Pointer({self.dtype} @ {self.address:#x})"


@dataclass
class TensorArg:
    pointer: Any                    # a torch tensor or a Pointer
    shape: tuple[int, ...]
    strides: tuple[int, ...]        # in elements
    device: str                     # "cpu" or "cuda:N"

    def flat(self) -> list:
        return [self.pointer, *self.shape, *self.strides]


def tensor_arg(x: Any, name: str) -> TensorArg:
    info = describe(x, name)
    if info.library == "torch":
        strides = tuple(x.stride())
        pointer = x.detach()
    else:
        itemsize = x.dtype.itemsize
        if any(s % itemsize for s in x.strides):
            raise InputError(f"{name} has strides {x.strides} that are not whole elements of {itemsize} bytes")
        strides = tuple(s // itemsize for s in x.strides)
        address = x.ctypes.data if info.library == "numpy" else x.data.ptr
        pointer = Pointer(x, address, info.dtype.name)
    shape = tuple(int(s) for s in x.shape)
    reach = sum((s - 1) * abs(st) for s, st in zip(shape, strides) if s > 0)
    if reach > INT32_MAX or any(s > INT32_MAX for s in shape):
        raise InputError(f"{name} spans {reach + 1} elements; the triton backend addresses tensors with 32-bit "
                         f"offsets (at most {INT32_MAX + 1} elements apart)")
    return TensorArg(pointer, shape, strides, info.device)
