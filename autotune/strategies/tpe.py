"""Tree-structured Parzen estimator (the default)."""
from __future__ import annotations

import optuna


def make_sampler(distributions: dict, seed: int | None, budget: int):
    # Few random start-up trials: tuning budgets are small (tens of configs), the cost
    # model's seeds cover the first guesses, and on the recorded spaces we replay three was
    # as good as ten for large budgets and clearly better for small ones. Multivariate TPE
    # models tile sizes jointly (BM and BN interact).
    startup = max(3, min(10, budget // 20))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
