"""Arrays from NumPy, CuPy and Torch: what they are, where they live, and zero-copy views
for a backend.

Detection is by protocol, so neither CuPy nor Torch is imported unless the caller's arrays
come from them: ``__cuda_array_interface__`` and DLPack for device arrays,
``__array_interface__`` for host ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import InputError, TilecError


@dataclass(frozen=True)
class ArrayInfo:
    library: str          # "numpy" | "cupy" | "torch"
    device: str           # "cpu" | "cuda:N"
    dtype: DType
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


_TORCH_DTYPES: dict = {}          # torch dtype -> DType, filled as met


def _torch_dtype(t, what: str = "array") -> DType:
    d = _TORCH_DTYPES.get(t.dtype)
    if d is None:
        name = str(t.dtype).replace("torch.", "")
        try:
            d = _TORCH_DTYPES[t.dtype] = dt.lookup(name)
        except Exception:
            raise InputError(f"{what}: unsupported torch dtype {t.dtype}") from None
    return d


def library_of(x: Any, name: str | None = None) -> str:
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return "torch"
    if mod == "cupy":
        return "cupy"
    if isinstance(x, np.ndarray):
        return "numpy"
    raise InputError(f"{name + ': ' if name else ''}expected a NumPy, CuPy or Torch array, got {type(x).__name__}")


def describe(x: Any, name: str = "array") -> ArrayInfo:
    lib = library_of(x, name) if not isinstance(x, np.ndarray) else "numpy"
    if lib == "numpy":
        return ArrayInfo("numpy", "cpu", _numpy_dtype(x.dtype, name), tuple(x.shape))
    if lib == "torch":
        dev = "cpu" if x.device.type == "cpu" else f"{x.device.type}:{x.device.index or 0}"
        return ArrayInfo("torch", dev, _torch_dtype(x, name), tuple(x.shape))
    return ArrayInfo("cupy", f"cuda:{x.device.id}", _numpy_dtype(x.dtype, name), tuple(x.shape))


def _numpy_dtype(dtype, name: str) -> DType:
    try:
        return dt.from_numpy(dtype)
    except TilecError as e:
        raise InputError(f"{name}: {e.message}") from None


def host_view(x: Any, name: str = "array") -> np.ndarray:
    """A zero-copy NumPy view of a host array; 16-bit floats come back as uint16 bits."""
    if type(x) is np.ndarray:
        d = dt.from_numpy(x.dtype)  # rejects dtypes tilec does not take (a dict lookup, unlike dtype.name)
        if not (d.is_float and d.bits == 16):
            return x
    if type(x).__module__ == "torch" and x.device.type == "cpu":   # the common torch case, without describe
        d = _torch_dtype(x, name)
        if not (d.is_float and d.bits == 16):
            return x.detach().numpy()
    info = describe(x, name)
    if info.device != "cpu":
        raise InputError(f"{name} lives on {info.device}, but this backend runs on the CPU; "
                         f"move it to the host or pick a GPU backend")
    if info.library == "torch":
        t = x.detach()
        if info.dtype.bits == 16 and info.dtype.is_float:
            import torch
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy()
    if info.dtype.name in ("bfloat16", "float16"):
        return x.view(np.uint16)
    return x


def empty_like_library(ref: Any, shape: tuple[int, ...], dtype: DType) -> Any:
    """An uninitialized array of the same library and device as ``ref``."""
    if type(ref) is np.ndarray and not (dtype.is_float and dtype.bits == 16):
        return np.empty(shape, dtype.numpy)
    lib = library_of(ref)
    if lib == "numpy":
        return np.empty(shape, _numpy_storage(dtype))
    if lib == "torch":
        import torch
        return torch.empty(shape, dtype=getattr(torch, dtype.name), device=ref.device)
    import cupy
    with cupy.cuda.Device(ref.device.id):
        return cupy.empty(shape, _numpy_storage(dtype))


def _numpy_storage(dtype: DType) -> np.dtype:
    if dtype.name == "bfloat16":
        try:
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            raise InputError("bfloat16 NumPy arrays need the ml_dtypes package (pip install tilec[bf16])") from None
    return dtype.numpy


def check_same_device(named: dict[str, Any]) -> str:
    """All arrays on one device and from one library; returns the device."""
    infos = {k: describe(v, k) for k, v in named.items() if v is not None}
    devices = {(i.library, i.device) for i in infos.values()}
    if len(devices) > 1:
        desc = ", ".join(f"{k} is a {i.library} array on {i.device}" for k, i in infos.items())
        raise InputError(f"arrays must share one library and device: {desc}")
    return next(iter(infos.values())).device
