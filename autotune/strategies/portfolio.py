"""The default: the budget split between a ranking and a sampler. First the tuner's seeds
(other devices' best configs, the cost model's picks), then the prior's top configs (other
devices' records, see transfer.py), then a sampler that starts from everything measured so
far: the genetic algorithm, guided by the prior when there is one. (Measured on the recorded
GPU spaces without transfer, TPE needed more evaluations than random search on pnpoly,
where the genetic algorithm needed fewer on every file; with a prior it also beat TPE
after the top configs: bench/replay_strategies.py.)"""
from __future__ import annotations

import importlib

import numpy as np

from .base import Proposer

TOP = 10                # configs taken straight from the prior's ranking
WITH_PRIOR = WITHOUT_PRIOR = "genetic"


class Portfolio(Proposer):
    def __init__(self, fs, seed, budget, prior=None, after: str | None = None):
        super().__init__(fs, seed, budget, prior)
        after = after or (WITH_PRIOR if prior is not None else WITHOUT_PRIOR)
        self.inner = importlib.import_module(f"autotune.strategies.{after}").make_proposer(fs, seed, budget, prior)
        self.top: list[int] = []
        if prior is not None:
            self.top = [int(r) for r in np.argsort(prior, kind="stable")[: max(1, min(TOP, budget // 4))]]

    def propose(self, known):
        self.sync(known)
        for queue in (self.first, self.top):
            while queue:
                row = queue.pop(0)
                if not self.done[row]:
                    return self.fs.configs[row]
        return self.inner.propose(known)


def make_proposer(fs, seed, budget, prior=None):
    return Portfolio(fs, seed, budget, prior)
