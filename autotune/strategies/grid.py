"""Exhaustive grid over the whole space, visited in random order (seeded)."""
from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution


def make_sampler(distributions: dict, seed: int | None, budget: int):
    grid = {}
    for name, d in distributions.items():
        if isinstance(d, IntDistribution):
            grid[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, CategoricalDistribution):
            grid[name] = list(d.choices)
    return optuna.samplers.GridSampler(grid, seed=seed)
