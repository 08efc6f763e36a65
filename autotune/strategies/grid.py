"""Exhaustive grid over the whole space, visited in random order (seeded)."""
from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution


class _Grid(optuna.samplers.GridSampler):
    def after_trial(self, study, trial, state, values):
        # Optuna's grid stops the study when the grid is used up, which only works inside
        # study.optimize; the tuner's own loop notices exhaustion by itself.
        return None


def make_sampler(distributions: dict, seed: int | None, budget: int):
    grid = {}
    for name, d in distributions.items():
        if isinstance(d, IntDistribution):
            grid[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, CategoricalDistribution):
            grid[name] = list(d.choices)
    return _Grid(grid, seed=seed)
