"""Uniform random search: the baseline every other strategy must beat."""
from __future__ import annotations

import optuna


def make_sampler(distributions: dict, seed: int | None, budget: int):
    return optuna.samplers.RandomSampler(seed=seed)
