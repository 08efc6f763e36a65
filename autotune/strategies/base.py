"""What every strategy is to the tuner: a proposer of feasible configs not evaluated yet.

A proposer holds the feasible set (``feasible.FeasibleSet``), what the study knows (value per
row, NaN = failed) and, optionally, a prior (a score per row, lower = more promising, e.g.
other devices' records of the same kernel, see ``transfer.py``). ``propose(known)`` first
takes in what the study learned since the last call (this process's evaluations, another
tuner's, or a killed run's), then returns the next config: the seeds in order, then the
strategy's own choice. Every proposal is feasible and new, so every proposal costs exactly
one evaluation.
"""
from __future__ import annotations

import warnings

import numpy as np
import optuna

from ..encoding import _categorical_value, _is_ordinal, distributions
from ..feasible import FeasibleSet


class Proposer:
    def __init__(self, fs: FeasibleSet, seed: int | None, budget: int, prior: np.ndarray | None = None):
        self.fs, self.budget = fs, budget
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        n = len(fs)
        self.done = np.zeros(n, dtype=bool)
        self.value = np.full(n, np.nan)
        self.prior = prior
        self.first: list[int] = []

    # -- what the tuner calls -------------------------------------------------------------
    def add_seeds(self, configs: list[dict]) -> None:
        for cfg in configs:
            row = self.fs.find(cfg)
            if row is not None and row not in self.first:
                self.first.append(row)

    def propose(self, known: dict[str, float | None]) -> dict | None:
        """The next config to evaluate, or None when every feasible config has been."""
        self.sync(known)
        while self.first:
            row = self.first.pop(0)
            if not self.done[row]:
                return self.fs.configs[row]
        if self.done.all():
            return None
        row = self.next_row()
        return self.fs.configs[row]

    def sync(self, known: dict[str, float | None]) -> None:
        if len(known) == int(self.done.sum()):
            return
        for cid, v in known.items():
            row = self.fs.position.get(cid)
            if row is not None and not self.done[row]:
                self.done[row] = True
                self.value[row] = np.nan if v is None else v
                self.observed(row, v)

    # -- what a strategy implements -------------------------------------------------------
    def next_row(self) -> int:
        raise NotImplementedError

    def observed(self, row: int, value: float | None) -> None:
        """Hook: ``row`` was evaluated (value None = failed)."""

    # -- helpers --------------------------------------------------------------------------
    def random_fresh(self) -> int:
        return int(self.rng.choice(np.flatnonzero(~self.done)))

    def by_prior(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` ordered by the prior (random order among equals and without a prior)."""
        rows = self.rng.permutation(rows)
        if self.prior is None:
            return rows
        return rows[np.argsort(self.prior[rows], kind="stable")]

    def evaluated(self) -> np.ndarray:
        """Rows evaluated without failure, best first."""
        ok = np.flatnonzero(self.done & ~np.isnan(self.value))
        return ok[np.argsort(self.value[ok], kind="stable")]


class OptunaProposer(Proposer):
    """An Optuna sampler made to propose feasible configs: it samples on the Cartesian space
    (a private in-memory study), its point is moved to the nearest feasible config not yet
    evaluated, and the value measured there is told to the sampler's trial (the sampler
    learns where its points lead; a feasible point not yet evaluated is kept as it is)."""

    def __init__(self, fs, seed, budget, prior=None, *, sampler: optuna.samplers.BaseSampler):
        super().__init__(fs, seed, budget, prior)
        self.dists = distributions(fs.space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study = optuna.create_study(sampler=sampler, direction="minimize")
        self.pending: dict[int, optuna.trial.Trial] = {}
        self._codes = [[_categorical_value(c) for c in choices] for choices in fs.choices]

    def next_row(self) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.dists)
        idx = [trial.params[p.name] if _is_ordinal(p) else codes.index(trial.params[p.name])
               for p, codes in zip(self.fs.space.params, self._codes)]
        row = self.fs.nearest(idx, ~self.done, self.rng)
        old = self.pending.pop(row, None)
        if old is not None:                  # proposed before and not yet told: drop that trial
            self.study.tell(old, state=optuna.trial.TrialState.FAIL)
        self.pending[row] = trial
        return row

    def observed(self, row: int, value: float | None) -> None:
        trial = self.pending.pop(row, None)
        if trial is not None:
            if value is None:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, value)
            return
        if value is None:                    # learned from the study (a resumed run): add it
            return
        params = {p.name: (int(i) if _is_ordinal(p) else codes[int(i)])
                  for p, codes, i in zip(self.fs.space.params, self._codes, self.fs.index[row])}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self.dists, value=value))


class Proposed(optuna.samplers.BaseSampler):
    """The study's sampler: it hands Optuna the proposer's config (``next``, encoded), so
    the strategies choose and the study only records."""

    def __init__(self):
        self.next: dict = {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.next[param_name]


def prior_rows(fs: FeasibleSet, prior: dict[str, float] | None) -> np.ndarray | None:
    """A prior given per config id as a score per feasible row (configs it does not score
    get its median: neither favoured nor avoided)."""
    if not prior:
        return None
    scores = np.array([prior.get(cid, np.nan) for cid in fs.ids], dtype=float)
    if np.isnan(scores).all():
        return None
    return np.where(np.isnan(scores), np.nanmedian(scores), scores)
