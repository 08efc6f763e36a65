"""Exhaustive: every feasible config once, in a seeded random order."""
from __future__ import annotations

from .base import Proposer


class Grid(Proposer):
    def __init__(self, fs, seed, budget, prior=None):
        super().__init__(fs, seed, budget)
        self.order = list(self.rng.permutation(len(fs)))

    def next_row(self) -> int:
        while self.done[self.order[-1]]:
            self.order.pop()
        return int(self.order.pop())


def make_proposer(fs, seed, budget, prior=None):
    return Grid(fs, seed, budget)
