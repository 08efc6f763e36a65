"""Uniform random search over the feasible set, without repeats: the baseline every other
strategy must beat."""
from __future__ import annotations

from .base import Proposer


class Random(Proposer):
    def next_row(self) -> int:
        return self.random_fresh()


def make_proposer(fs, seed, budget, prior=None):
    return Random(fs, seed, budget)
