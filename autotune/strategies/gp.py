"""Gaussian-process Bayesian optimisation (Optuna's GPSampler: Matern kernel, log expected
improvement), its points moved onto the feasible set. Needs torch (optional)."""
from __future__ import annotations

import warnings

import optuna

from tilec.errors import TilecError

from .base import OptunaProposer


def make_proposer(fs, seed, budget, prior=None):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TilecError("the gp strategy needs torch: pip install torch (CPU is enough)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(3, min(10, budget // 20)))
    return OptunaProposer(fs, seed, budget, prior, sampler=sampler)
