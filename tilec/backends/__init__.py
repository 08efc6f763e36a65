"""Backends: each renders tile IR to source text and runs what it compiles.

``get(name)`` imports a backend on first use, so optional GPU packages are only needed by the
backend that uses them.
"""
from __future__ import annotations

import importlib
import os

from ..errors import TilecError
from .base import Backend

_MODULES = {"numba": "tilec.backends.numba", "triton": "tilec.backends.triton", "cuda": "tilec.backends.cuda"}
_INSTANCES: dict[str, Backend] = {}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Backend:
    if name not in _MODULES:
        raise TilecError(f"unknown backend {name!r}; choose one of {names()}")
    if name not in _INSTANCES:
        try:
            module = importlib.import_module(_MODULES[name])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("tilec"):
                raise TilecError(f"the {name} backend is not part of this tilec build yet") from None
            raise
        _INSTANCES[name] = module.BACKEND
    return _INSTANCES[name]


def default_for(device: str) -> str:
    """``$TILEC_BACKEND`` if set, else numba for host data and triton (else cuda) for GPU data."""
    env = os.environ.get("TILEC_BACKEND")
    if env:
        return env
    if device == "cpu":
        return "numba"
    for name in ("triton", "cuda"):
        try:
            if get(name).missing() is None:
                return name
        except TilecError:
            continue
    return "triton"
