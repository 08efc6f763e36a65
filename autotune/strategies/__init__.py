"""Search strategies: each module's ``make_proposer(feasible_set, seed, budget, prior)``
returns a proposer (``base.Proposer``) that draws only feasible configs not yet evaluated.

Names: portfolio (default: a prior's top configs, then a prior-guided genetic algorithm),
genetic, tpe, gp (Optuna's Gaussian process, needs torch), cmaes, random, grid.
"""
from __future__ import annotations

import importlib

from tilec.errors import TilecError

NAMES = ("portfolio", "genetic", "tpe", "gp", "random", "grid", "cmaes")
DEFAULT = "portfolio"


def get(name: str):
    """The strategy's ``make_proposer``."""
    if name not in NAMES:
        raise TilecError(f"unknown search strategy {name!r}; choose one of {list(NAMES)}")
    return importlib.import_module(f"autotune.strategies.{name}").make_proposer
