"""The CUDA C backend (CuPy RawModule on a GPU; NVRTC/nvcc offline; g++ emulation on the CPU)."""
from .backend import BACKEND, CudaBackend
from .limits import limits_for
from .offline import CompileReport
from .renderer import render
from .resources import estimate_resources

__all__ = ["BACKEND", "CompileReport", "CudaBackend", "estimate_resources", "limits_for", "render"]
