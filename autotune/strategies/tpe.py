"""Tree-structured Parzen estimator (the default)."""
from __future__ import annotations

import optuna


def make_sampler(distributions: dict, seed: int | None, budget: int):
    # Few random start-up trials: tuning budgets are small, and seeds from the cost model
    # already cover the first guesses. Multivariate TPE models tile sizes jointly (BM and BN
    # interact).
    startup = max(3, min(10, budget // 5))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
