"""How many evaluations a strategy needs on a recorded space to get within ``within`` of the
recorded optimum: the measure used to compare strategies without hardware."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from .evaluators.replay import RecordedSpace
from .tuner import tune


@dataclass
class Efficiency:
    strategy: str
    needed: list[int]            # per seed; cap + 1 when the target was not reached
    cap: int

    @property
    def median(self) -> float:
        return float(statistics.median(self.needed))

    @property
    def reached(self) -> int:
        return sum(n <= self.cap for n in self.needed)

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "median": self.median, "needed": self.needed, "cap": self.cap,
                "reached": self.reached}


def evaluations_to_target(recorded: RecordedSpace, strategy: str, seed: int, within: float = 0.10,
                          cap: int = 1000) -> int:
    target_s = (1.0 + within) * recorded.optimum() * recorded.unit_s
    space = recorded.space()
    res = tune(space, recorded.evaluator(), n_evals=cap, study_name=f"replay-{strategy}-{seed}", storage="memory",
               strategy=strategy, seed=seed, stop_at=target_s, max_asks=50 * cap)
    return res.evaluations if res.best_value is not None and res.best_value <= target_s else cap + 1


def compare(recorded: RecordedSpace, strategies: list[str], seeds: int = 20, within: float = 0.10,
            cap: int = 1000, progress=None) -> list[Efficiency]:
    out = []
    for name in strategies:
        needed = []
        for s in range(seeds):
            needed.append(evaluations_to_target(recorded, name, s, within, cap))
            if progress:
                progress(name, s, needed[-1])
        out.append(Efficiency(name, needed, cap))
    return out
