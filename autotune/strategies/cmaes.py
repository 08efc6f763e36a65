"""CMA-ES on the ordinal parameters (categorical ones are sampled independently at random),
its points moved onto the feasible set. Needs the ``cmaes`` package."""
from __future__ import annotations

import warnings

import optuna

from tilec.errors import TilecError

from .base import OptunaProposer


def make_sampler(distributions: dict, seed: int | None, budget: int):
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise TilecError("the cmaes strategy needs the 'cmaes' package: pip install cmaes") from None
    with warnings.catch_warnings():     # with_margin (integer-aware CMA-ES) is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=max(2, min(10, budget // 5)),
                                            warn_independent_sampling=False, with_margin=True)


def make_proposer(fs, seed, budget, prior=None):
    return OptunaProposer(fs, seed, budget, prior, sampler=make_sampler({}, seed, budget))
