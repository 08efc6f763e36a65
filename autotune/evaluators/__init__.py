"""Evaluators: ``evaluator(config) -> Measurement``, raising ``TrialFailed(reason)`` when the
config cannot be run or gives a wrong result. measured (the device the arrays live on),
modeled (a cost model on a hardware profile), replay (a recorded search space)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tilec.errors import TilecError


class TrialFailed(TilecError):
    """A config that compiled wrong, ran wrong or cannot run: the trial is pruned with this reason."""


@dataclass
class Measurement:
    runtime_s: float
    energy_j: float | None = None
    info: dict = field(default_factory=dict)

    def objective(self, name: str) -> float:
        if name == "time":
            return self.runtime_s
        if name == "energy":
            if self.energy_j is None:
                raise TrialFailed("this evaluator reports no energy; tune for time instead")
            return self.energy_j
        raise TilecError(f"objective {name!r} is not 'time' or 'energy'")


Evaluator = Callable[[dict], Measurement]
