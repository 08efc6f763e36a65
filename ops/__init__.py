"""The op library. Each op module holds its DSL kernel(s), grid, tunable space, NumPy
reference and flops/bytes formulas; ``REGISTRY`` lists them for the tuner, benchmarks and CLI."""
from __future__ import annotations

from . import gemm as _gemm_mod
from . import gemv as _gemv_mod
from .gemm import gemm
from .gemv import gemv
from .spec import OpSpec

REGISTRY: dict[str, OpSpec] = {
    "gemm": _gemm_mod.SPEC,
    "gemv": _gemv_mod.SPEC,
}

__all__ = ["gemm", "gemv", "REGISTRY", "OpSpec"]
