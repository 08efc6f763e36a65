"""How many evaluations a strategy needs on a recorded space to get within ``within`` of the
recorded optimum: the measure used to compare strategies without hardware. Every proposal
is a feasible config not evaluated before, so it counts as one evaluation."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from .evaluators.replay import RecordedSpace
from .feasible import FeasibleSet
from .tuner import tune


@dataclass
class Efficiency:
    strategy: str
    needed: list[int]            # per seed; cap + 1 when the target was not reached
    cap: int
    curves: list[list[float]] = field(default_factory=list)   # per seed: best so far / optimum
    seeds: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(statistics.median(self.needed))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.needed, q))

    @property
    def reached(self) -> int:
        return sum(n <= self.cap for n in self.needed)

    @property
    def share(self) -> float:
        return self.reached / len(self.needed) if self.needed else 0.0

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "median": self.median, "p25": self.percentile(25),
                "p75": self.percentile(75), "needed": self.needed, "cap": self.cap, "reached": self.reached,
                "share_reached": self.share, "seeds": self.seeds}


BASELINE = "random"     # the uninformed baseline: it never takes transfer


def run_to_target(recorded: RecordedSpace, strategy: str, seed: int, within: float = 0.10, cap: int = 1000,
                  transfer=None, feasible: FeasibleSet | None = None) -> tuple[int, list[float]]:
    """(evaluations needed, cap + 1 if not reached; best-so-far / optimum after each one)."""
    optimum = recorded.optimum() * recorded.unit_s
    target_s = (1.0 + within) * optimum
    seeds, prior = ((), None)
    if transfer is not None and strategy != BASELINE:
        seeds, prior = transfer.seeds(), transfer.prior()
    space = feasible.space if feasible is not None else recorded.space()
    res = tune(space, recorded.evaluator(), n_evals=cap, study_name=f"replay-{strategy}-{seed}",
               storage="memory", strategy=strategy, seed=seed, stop_at=target_s, max_asks=50 * cap,
               seeds=seeds, prior=prior, feasible=feasible)
    curve, best = [], float("inf")
    for h in res.history:
        if h["value"] is not None:
            best = min(best, h["value"])
        curve.append(best / optimum)
    needed = res.evaluations if res.best_value is not None and res.best_value <= target_s else cap + 1
    return needed, curve


def evaluations_to_target(recorded: RecordedSpace, strategy: str, seed: int, within: float = 0.10,
                          cap: int = 1000, transfer=None) -> int:
    return run_to_target(recorded, strategy, seed, within, cap, transfer)[0]


def compare(recorded: RecordedSpace, strategies: list[str], seeds: int = 20, within: float = 0.10,
            cap: int = 1000, progress=None, transfer=None, first_seed: int = 0) -> list[Efficiency]:
    """Each strategy from seeds ``first_seed``...; ``transfer`` (transfer.Transfer) gives every
    strategy but the random baseline its seeds and prior."""
    feasible = FeasibleSet(recorded.space())
    out = []
    for name in strategies:
        eff = Efficiency(name, [], cap)
        for s in range(first_seed, first_seed + seeds):
            needed, curve = run_to_target(recorded, name, s, within, cap, transfer, feasible)
            eff.needed.append(needed)
            eff.curves.append(curve)
            eff.seeds.append(s)
            if progress:
                progress(name, s, needed)
        out.append(eff)
    return out
