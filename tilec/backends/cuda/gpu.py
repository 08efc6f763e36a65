"""Launch generated CUDA C on a GPU through CuPy (``cupy.RawModule``), on CuPy arrays or Torch
CUDA tensors (zero-copy: only their data pointers, extents and strides are passed)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import TilecError
from .offline import include_dirs

_NUMPY = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64, "bool": np.bool_,
          "signed char": np.int8, "unsigned char": np.uint8, "short": np.int16, "unsigned short": np.uint16,
          "unsigned int": np.uint32}


def missing() -> str | None:
    try:
        import cupy
    except ImportError:
        return "running CUDA kernels on a GPU needs CuPy (pip install tilec[cuda])"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as e:  # noqa: BLE001 - CuPy raises its own runtime errors when no driver is present
        return f"CuPy sees no CUDA device ({e})"
    return None


def device_arch(index: int = 0) -> str:
    import cupy
    return f"sm_{cupy.cuda.Device(index).compute_capability}"


def launch_values(values: Sequence[tuple[str, Any]]) -> tuple:
    """Kernel arguments for CuPy: pointers as 64-bit integers, scalars as sized NumPy scalars."""
    out = []
    for ctype, v in values:
        out.append(np.uint64(v) if ctype.endswith("*") else _NUMPY[ctype](v))
    return tuple(out)


class GpuKernel:
    def __init__(self, source: str, symbol: str, threads: int, device: int = 0, dynamic_smem: int = 0):
        why = missing()
        if why:
            raise TilecError(why)
        import cupy
        options = ("-std=c++17",) + tuple(f"-I{d}" for d in include_dirs())
        self.device = device
        with cupy.cuda.Device(device):
            self.module = cupy.RawModule(code=source, options=options)
            self.kernel = self.module.get_function(symbol)
            if dynamic_smem:  # above 48 KiB a kernel must opt in to its dynamic shared memory
                self.kernel.max_dynamic_shared_size_bytes = dynamic_smem
        self.threads = threads
        self.dynamic_smem = dynamic_smem

    def __call__(self, grid: tuple[int, int, int], values: Sequence[tuple[str, Any]], torch_args: bool) -> None:
        import cupy
        args = launch_values(values)
        with cupy.cuda.Device(self.device):
            if torch_args:  # run on the stream Torch is using, so ordering with Torch ops holds
                import torch
                with cupy.cuda.ExternalStream(torch.cuda.current_stream(self.device).cuda_stream):
                    self.kernel(grid, (self.threads, 1, 1), args, shared_mem=self.dynamic_smem)
            else:
                self.kernel(grid, (self.threads, 1, 1), args, shared_mem=self.dynamic_smem)
