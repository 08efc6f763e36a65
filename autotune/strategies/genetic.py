"""A steady-state genetic algorithm on the feasible set, in the manner of Kernel Tuner's:
a population of the best configs evaluated so far, parents drawn with rank weights, uniform
crossover, mutation by a step along an ordinal parameter (another value for a categorical
one), and each child moved to the nearest feasible config not evaluated yet. With a prior
(other devices' records, a cost model), the first population is the prior's best and each
proposal is the child the prior likes best among a few bred."""
from __future__ import annotations

import numpy as np

from .base import Proposer

POPULATION = 20
BROOD = 6               # children bred per proposal when a prior can choose among them
EXPLORE = 0.05          # share of proposals drawn at random (keeps the population diverse)


class Genetic(Proposer):
    def __init__(self, fs, seed, budget, prior=None):
        super().__init__(fs, seed, budget, prior)
        self.population = max(4, min(POPULATION, len(fs) // 4, budget // 3 or 4))
        self.width = np.array([len(c) for c in fs.choices])

    def next_row(self) -> int:
        elite = self.evaluated()[: self.population]
        if int(self.done.sum()) < self.population or len(elite) < 2:
            return int(self.by_prior(np.flatnonzero(~self.done))[0])
        if self.rng.random() < EXPLORE:
            return self.random_fresh()
        brood = [self.child(elite) for _ in range(BROOD if self.prior is not None else 1)]
        rows = np.array([r for r in brood if r is not None], dtype=np.int64)
        if len(rows) == 0:
            return self.random_fresh()
        return int(self.by_prior(rows)[0])

    def child(self, elite: np.ndarray) -> int | None:
        weights = 1.0 / np.arange(1, len(elite) + 1)
        a, b = self.rng.choice(elite, size=2, replace=False, p=weights / weights.sum())
        genes = np.where(self.rng.random(len(self.width)) < 0.5, self.fs.index[a], self.fs.index[b]).astype(float)
        rate = max(1.0 / len(self.width), 0.1)
        for j in np.flatnonzero((self.rng.random(len(self.width)) < rate) & (self.width > 1)):
            if self.fs.ordinal[j]:
                genes[j] = np.clip(genes[j] + self.rng.choice((-2, -1, 1, 2), p=(0.15, 0.35, 0.35, 0.15)),
                                   0, self.width[j] - 1)
            else:
                genes[j] = self.rng.integers(self.width[j])
        return self.fs.nearest(genes, ~self.done, self.rng)


def make_proposer(fs, seed, budget, prior=None):
    return Genetic(fs, seed, budget, prior)
