"""Search strategies: each module turns (distributions, seed, budget) into an Optuna sampler.

``get(name)`` returns the module's ``make_sampler``; names: tpe (default), random, grid, cmaes.
"""
from __future__ import annotations

import importlib

from tilec.errors import TilecError

NAMES = ("tpe", "random", "grid", "cmaes")
DEFAULT = "tpe"


def get(name: str):
    if name not in NAMES:
        raise TilecError(f"unknown search strategy {name!r}; choose one of {list(NAMES)}")
    return importlib.import_module(f"autotune.strategies.{name}").make_sampler
