"""The feasible set of a space: every config its constraints (the op's, the profile's resource
limits, a recorded space's membership) accept, enumerated once before any sampling, so a
strategy draws only points that can run and no evaluation is spent on a rejected one.

Configs are rows of an index matrix (one column per parameter: the index of the value among
the parameter's choices, sorted for numbers), which is what the strategies search over.
A space whose Cartesian product is too large to enumerate is represented by a random pool
of feasible configs (rejection-sampled); the search is then over the pool.
"""
from __future__ import annotations

import itertools
import math
import random

import numpy as np

from tilec.errors import TilecError
from tilec.space import Space

from .encoding import _is_ordinal, _ordered, config_id

ENUMERATE_LIMIT = 200_000       # Cartesian points checked one by one
POOL = 20_000                   # feasible configs kept when the product is larger


class FeasibleSet:
    def __init__(self, space: Space, profile=None, seed: int | None = 0):
        self.space = space
        self.choices = [_ordered(p) for p in space.params]
        self.ordinal = np.array([_is_ordinal(p) for p in space.params], dtype=bool)
        cartesian = math.prod(len(c) for c in self.choices)
        rows: list[tuple] = []
        if cartesian <= ENUMERATE_LIMIT:
            for idx in itertools.product(*(range(len(c)) for c in self.choices)):
                if not space.reasons(self._config(idx), profile):
                    rows.append(idx)
            self.complete = True
        else:
            rng, seen = random.Random(seed), set()
            for _ in range(20 * POOL):
                idx = tuple(rng.randrange(len(c)) for c in self.choices)
                if idx not in seen and not space.reasons(self._config(idx), profile):
                    rows.append(idx)
                    if len(rows) >= POOL:
                        break
                seen.add(idx)
            self.complete = False
        if not rows:
            raise TilecError("no config of the space is feasible (every point breaks a constraint)")
        self.index = np.array(rows, dtype=np.int64).reshape(len(rows), len(self.choices))
        self.configs = [self._config(r) for r in rows]
        self.ids = [config_id(c) for c in self.configs]
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        span = np.array([max(len(c) - 1, 1) for c in self.choices], dtype=float)
        self._scale = np.where(self.ordinal, 1.0 / span, 1.0)

    def __len__(self) -> int:
        return len(self.configs)

    def _config(self, idx) -> dict:
        return {p.name: c[i] for p, c, i in zip(self.space.params, self.choices, idx)}

    def find(self, config: dict) -> int | None:
        """Row of ``config`` (None when it is not feasible or not in the pool)."""
        return self.position.get(config_id({n: config.get(n) for n in self.space.names}))

    def distance(self, idx) -> np.ndarray:
        """Distance of every feasible row to index vector ``idx``: ordinal steps scaled to
        [0, 1] per parameter, 1 for a different categorical value."""
        d = np.abs(self.index - np.asarray(idx, dtype=float))
        d = np.where(self.ordinal, d, (d > 0).astype(float))
        return (d * self._scale).sum(axis=1)

    def nearest(self, idx, allowed: np.ndarray, rng: np.random.Generator) -> int | None:
        """The allowed row closest to ``idx`` (ties broken at random); None if none is allowed."""
        if not allowed.any():
            return None
        d = np.where(allowed, self.distance(idx), np.inf)
        best = np.flatnonzero(d == d.min())
        return int(rng.choice(best))
