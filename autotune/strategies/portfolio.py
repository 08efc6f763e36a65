"""The default: the prior's top configs first (other devices' best, a cost model's ranking;
the tuner's seeds come before even these), then the genetic algorithm guided by the same
prior. Without a prior it is the genetic algorithm from the seeds."""
from __future__ import annotations

import numpy as np

from .genetic import Genetic

TOP = 10                # configs taken straight from the prior's ranking


class Portfolio(Genetic):
    def __init__(self, fs, seed, budget, prior=None):
        super().__init__(fs, seed, budget, prior)
        if prior is not None:
            k = max(1, min(TOP, budget // 4))
            self.first.extend(int(r) for r in np.argsort(prior, kind="stable")[:k])

    def add_seeds(self, configs):
        top, self.first = self.first, []
        super().add_seeds(configs)
        self.first += [r for r in top if r not in self.first]


def make_proposer(fs, seed, budget, prior=None):
    return Portfolio(fs, seed, budget, prior)
