"""Evaluate configs with a cost model instead of a device (for targets not present here).

The model is any callable ``config -> (runtime_s, energy_j)`` or an object with
``runtime_s``/``energy_j`` (and optionally ``feasible``/``reasons``) attributes; it raises
or says infeasible for configs it rejects. ``from_cost_model`` wires in
``autotune.cost.analytical`` and ``hw_profiles`` when they are installed.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tilec.errors import TilecError

from . import Measurement, TrialFailed


class ModeledEvaluator:
    def __init__(self, model: Callable[[dict], Any], name: str = "model"):
        self.model, self.name = model, name
        self._last: tuple[str, Any] | None = None

    def _predict(self, config: dict):
        key = repr(sorted(config.items()))
        if self._last is None or self._last[0] != key:
            self._last = (key, self.model(dict(config)))
        return self._last[1]

    def constraint(self, config: dict, profile: Any = None) -> str | None:
        """A space constraint: the model's own infeasibility verdict (e.g. shared memory or
        registers), so such configs are skipped as infeasible instead of spending budget."""
        try:
            out = self._predict(config)
        except Exception:
            return None                  # let the evaluation report the error
        if getattr(out, "feasible", True) is False:
            return "; ".join(getattr(out, "reasons", ()) or ()) or f"infeasible for {self.name}"
        return None

    def __call__(self, config: dict) -> Measurement:
        try:
            out = self._predict(config)
        except TrialFailed:
            raise
        except Exception as e:
            raise TrialFailed(f"{self.name} rejects it: {type(e).__name__}: {e}") from None
        if hasattr(out, "runtime_s"):
            if getattr(out, "feasible", True) is False:
                reasons = "; ".join(getattr(out, "reasons", ()) or ()) or "infeasible"
                raise TrialFailed(f"{self.name}: {reasons}")
            runtime, energy = out.runtime_s, getattr(out, "energy_j", None)
        else:
            try:
                runtime, energy = out
            except (TypeError, ValueError):
                raise TrialFailed(f"{self.name} returned {out!r}, not (runtime_s, energy_j)") from None
        if runtime is None or not math.isfinite(runtime) or runtime <= 0:
            raise TrialFailed(f"{self.name} predicts an unusable runtime {runtime!r}")
        return Measurement(float(runtime), None if energy is None else float(energy), {"modeled": self.name})


def from_cost_model(op, shape: dict, dtype: str, profile) -> ModeledEvaluator:
    """The analytical cost model on a hardware profile, for ``op`` (an OpSpec or name) at ``shape``."""
    try:
        import hw_profiles
        from autotune.cost.analytical import predict
        from autotune.cost.workload import workload_for
    except ImportError as e:
        raise TilecError(f"modeled tuning needs the cost models and hardware profiles ({e.name} is missing)") from None
    profile = hw_profiles.load(profile)        # a name, a .toml path or a Profile
    name = op if isinstance(op, str) else op.name

    def model(config: dict):
        return predict(workload_for(name, shape, dtype, config), profile)

    return ModeledEvaluator(model, f"analytical model on {profile.name}")
