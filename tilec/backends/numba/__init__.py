"""The Numba CPU backend (always available)."""
from .runner import BACKEND, NumbaBackend

__all__ = ["BACKEND", "NumbaBackend"]
