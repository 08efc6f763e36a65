"""Tree-structured Parzen estimator (Optuna's), its points moved onto the feasible set."""
from __future__ import annotations

import optuna

from .base import OptunaProposer


def make_sampler(distributions: dict, seed: int | None, budget: int):
    # Few random start-up trials: tuning budgets are small (tens of configs), the cost
    # model's seeds cover the first guesses, and on the recorded spaces we replay three was
    # as good as ten for large budgets and clearly better for small ones. Multivariate TPE
    # models tile sizes jointly (BM and BN interact).
    startup = max(3, min(10, budget // 20))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def make_proposer(fs, seed, budget, prior=None):
    return OptunaProposer(fs, seed, budget, prior, sampler=make_sampler({}, seed, budget))
