"""The Numba CPU backend (always available)."""
from .runner import BACKEND, NumbaBackend, blas_has_avx512, blas_kernels

__all__ = ["BACKEND", "NumbaBackend", "blas_has_avx512", "blas_kernels"]
