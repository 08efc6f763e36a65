"""Power with physical bounds: power = idle + dynamic, dynamic a fraction in [0, 1] of the
profile's headroom (TDP - idle), so every prediction lies in [idle, TDP] by construction,
and energy = power x runtime.

- Analytical: the fraction is the bounding resource's utilisation (the roofline time over
  the runtime) times r max(v_floor, r)^2, r = clock / nominal clock (switching power goes
  with f V^2; under DVFS the voltage follows the clock down to a floor), clamped to [0, 1].
  Uncalibrated, the floor is 0 (a cube law) and a fully used resource draws the whole headroom.
- Calibrated (``DVFSPower``): the same law with three constants fitted to a device's measured
  runs: the voltage floor, the activity (the headroom share a fully used resource draws) and
  the active floor (what a busy GPU draws above idle at any clock: leakage at load, memory,
  uncore); few enough to calibrate from a ten-clock sweep.
- Learned (``PowerModel``): gradient-boosted trees predict logit((P - idle) / (TDP - idle))
  from the config, the clock and the run's runtime (measured, or a runtime model's); the
  sigmoid maps any output back into the bounds. Power rises with the clock (a monotone
  constraint), as physics says.
"""
from __future__ import annotations

import json
import math

import numpy as np

from tilec.errors import TilecError

from .records import Record

EDGE = 1e-3                              # fractions are kept inside (EDGE, 1 - EDGE) before the logit


def bounded(idle_w: float, tdp_w: float, fraction) -> np.ndarray:
    """idle + (TDP - idle) x fraction, the fraction clamped to [0, 1]."""
    if not (0 <= idle_w < tdp_w):
        raise TilecError(f"power bounds need 0 <= idle < TDP, got idle {idle_w} W and TDP {tdp_w} W")
    return idle_w + (tdp_w - idle_w) * np.clip(np.nan_to_num(np.asarray(fraction, float), nan=0.0), 0.0, 1.0)


def utilisation(t_bound_s: float, runtime_s: float) -> float:
    """The bounding resource's busy share: its roofline time over the runtime, in [0, 1]."""
    return min(max(t_bound_s / runtime_s, 0.0), 1.0) if runtime_s > 0 else 0.0


def dvfs_scale(clock_hz: float | None, nominal_hz: float, v_floor: float = 0.0) -> float:
    """f V^2 relative to the nominal clock, the voltage following the clock down to ``v_floor``."""
    if not clock_hz or not nominal_hz:
        return 1.0
    r = clock_hz / nominal_hz
    return r * max(v_floor, r) ** 2


def analytical_fraction(t_bound_s: float, runtime_s: float, clock_hz: float | None, nominal_hz: float) -> float:
    """Utilisation of the bounding resource, scaled by the clock's cube (no voltage floor)."""
    return min(utilisation(t_bound_s, runtime_s) * dvfs_scale(clock_hz, nominal_hz), 1.0)


def analytical_power(w, p, runtime_s: float, clock_hz: float | None = None) -> float:
    """Bounded power of workload ``w`` on profile ``p`` running for ``runtime_s``."""
    from .analytical import predict
    t_bound = predict(w, p).features.get("t_roofline", 0.0)
    return float(bounded(p.idle_power_w, p.tdp_w, analytical_fraction(t_bound, runtime_s, clock_hz, p.clock_hz)))


def _features(rec: Record, runtime_s: float) -> dict:
    f = {f"cfg.{k}": float(v) for k, v in rec.config.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)}
    f["clock_mhz"] = (rec.clock_hz or 0.0) / 1e6
    f["log_runtime"] = math.log(runtime_s)
    return f


class PowerModel:
    """Learned bounded power for one device (``idle_w`` and ``tdp_w`` its profile's)."""

    def __init__(self, idle_w: float, tdp_w: float, columns: list[str], booster=None):
        bounded(idle_w, tdp_w, 0.0)          # checks the bounds
        self.idle_w, self.tdp_w, self.columns, self.booster = idle_w, tdp_w, columns, booster

    def _matrix(self, records: list[Record], runtimes) -> np.ndarray:
        rows = [_features(r, t) for r, t in zip(records, runtimes)]
        return np.array([[row.get(c, np.nan) for c in self.columns] for row in rows], dtype=float)

    @classmethod
    def fit(cls, records: list[Record], idle_w: float, tdp_w: float, seed: int = 0, rounds: int = 300) -> PowerModel:
        import lightgbm as lgb
        rows = [r for r in records if r.power_w]
        if len(rows) < 8:
            raise TilecError(f"a power model needs at least 8 records with measured power, got {len(rows)}")
        columns = sorted({k for r in rows for k in _features(r, r.runtime_s)})
        model = cls(idle_w, tdp_w, columns)
        X = model._matrix(rows, [r.runtime_s for r in rows])
        frac = np.clip((np.array([r.power_w for r in rows]) - idle_w) / (tdp_w - idle_w), EDGE, 1 - EDGE)
        y = np.log(frac / (1 - frac))
        params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 5,
                  "lambda_l2": 1.0, "seed": seed, "deterministic": True, "num_threads": 1, "verbosity": -1,
                  "monotone_constraints": [1 if c == "clock_mhz" else 0 for c in columns]}
        model.booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)
        return model

    def power(self, records: list[Record], runtimes=None) -> np.ndarray:
        """Watts, always within [idle, TDP]; ``runtimes`` default to the records' own."""
        runtimes = [r.runtime_s for r in records] if runtimes is None else list(runtimes)
        if not records:
            return np.zeros(0)
        z = self.booster.predict(self._matrix(records, runtimes))
        return bounded(self.idle_w, self.tdp_w, 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))

    def energy(self, records: list[Record], runtimes=None) -> np.ndarray:
        runtimes = np.array([r.runtime_s for r in records] if runtimes is None else list(runtimes), dtype=float)
        return self.power(records, runtimes) * runtimes

    def to_json(self) -> str:
        return json.dumps({"format": "tilec-power-model/1", "idle_w": self.idle_w, "tdp_w": self.tdp_w,
                           "columns": self.columns, "model": self.booster.model_to_string()})

    @classmethod
    def from_json(cls, text: str) -> PowerModel:
        import lightgbm as lgb
        try:
            doc = json.loads(text)
            if doc.get("format") != "tilec-power-model/1":
                raise KeyError("format")
            return cls(doc["idle_w"], doc["tdp_w"], list(doc["columns"]), lgb.Booster(model_str=doc["model"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TilecError(f"not a tilec power model: {e}") from None


class DVFSPower:
    """Calibrated physical power for one device: fraction = base + activity x utilisation x
    r max(v_floor, r)^2, the three constants fitted by least squares to measured runs."""

    V_FLOORS = np.linspace(0.0, 1.0, 101)

    def __init__(self, profile, activity: float = 1.0, v_floor: float = 0.0, base: float = 0.0):
        bounded(profile.idle_power_w, profile.tdp_w, 0.0)   # checks the bounds
        self.profile, self.activity, self.v_floor, self.base = profile, activity, v_floor, base

    def _parts(self, records: list[Record], runtimes=None) -> tuple[np.ndarray, np.ndarray]:
        """Each run's utilisation and its clock ratio r."""
        from .features import analyse
        from .analytical import predict
        runtimes = [r.runtime_s for r in records] if runtimes is None else list(runtimes)
        p = self.profile
        util = np.array([utilisation(predict(analyse(r)[0], p).features.get("t_roofline", 0.0), t)
                         for r, t in zip(records, runtimes)])
        ratio = np.array([(r.clock_hz or p.clock_hz) / p.clock_hz for r in records])
        return util, ratio

    @classmethod
    def fit(cls, records: list[Record], profile) -> DVFSPower:
        rows = [r for r in records if r.power_w]
        if len(rows) < 2:
            raise TilecError(f"calibrating power needs at least 2 runs with measured power, got {len(rows)}")
        model = cls(profile)
        util, ratio = model._parts(rows)
        y = (np.array([r.power_w for r in rows]) - profile.idle_power_w) / (profile.tdp_w - profile.idle_power_w)
        best = (np.inf, 1.0, 0.0, 0.0)
        for v in cls.V_FLOORS:
            x = util * ratio * np.maximum(v, ratio) ** 2
            for base, k in _nonnegative_line(x, y):
                sse = float(((base + k * x - y) ** 2).sum())
                if sse < best[0] - 1e-12:
                    best = (sse, k, float(v), base)
        model.activity, model.v_floor, model.base = best[1:]
        return model

    def power(self, records: list[Record], runtimes=None) -> np.ndarray:
        """Watts, always within [idle, TDP]."""
        if not records:
            return np.zeros(0)
        util, ratio = self._parts(records, runtimes)
        frac = self.base + self.activity * util * ratio * np.maximum(self.v_floor, ratio) ** 2
        return bounded(self.profile.idle_power_w, self.profile.tdp_w, frac)


def _nonnegative_line(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """Candidates (base, slope) >= 0 for y ~ base + slope x: the free least-squares line where
    both come out non-negative, else the best line through the origin and the best constant."""
    out = [(0.0, max(float(x @ y / (x @ x)), 0.0) if x @ x > 0 else 0.0), (max(float(y.mean()), 0.0), 0.0)]
    if len(x) > 1 and np.ptp(x) > 0:
        k, b = np.polyfit(x, y, 1)
        if k >= 0 and b >= 0:
            out.append((float(b), float(k)))
    return out


def holdout(records: list[Record], groups: list, idle_w: float, tdp_w: float, folds: int = 5,
            seed: int = 0, points: bool = False, fit=None) -> dict:
    """Power R^2 and energy MAPE (energy = predicted power x the run's runtime) with whole
    groups (configs, clocks) held out: ``folds`` folds, or one per group when fewer.
    ``points``: also the measured and predicted power of every row (for plots). ``fit``: the
    model to train on each fold's rows (default the learned ``PowerModel``)."""
    fit = fit or (lambda train: PowerModel.fit(train, idle_w, tdp_w, seed))
    from .evaluate import mape, r2
    keep = [i for i, r in enumerate(records) if r.power_w and r.energy_j]
    uniq = sorted({groups[i] for i in keep}, key=repr)
    np.random.default_rng(seed).shuffle(uniq)
    parts = [uniq[k::folds] for k in range(folds)] if len(uniq) > folds else [[u] for u in uniq]
    pred = np.full(len(records), np.nan)
    for part in parts:
        held = set(part)
        train = [records[i] for i in keep if groups[i] not in held]
        test = [i for i in keep if groups[i] in held]
        pred[test] = fit(train).power([records[i] for i in test])
    y = np.array([records[i].power_w for i in keep])
    p = pred[keep]
    e = np.array([records[i].energy_j for i in keep])
    t = np.array([records[i].runtime_s for i in keep])
    out = {"rows": len(keep), "folds": len(parts), "power_r2": r2(y, p), "energy_mape": mape(e, p * t),
           "power_min_w": float(p.min()), "power_max_w": float(p.max())}
    if points:
        out["measured_w"], out["predicted_w"] = y.tolist(), p.tolist()
    return out


def plot_power(results: dict[str, dict], idle_w: float, tdp_w: float, path: str) -> bool:
    """Predicted against measured power, one panel per hold-out (``holdout(..., points=True)``
    results by name), with the [idle, TDP] bounds; False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        y, p = np.array(res["measured_w"]), np.array(res["predicted_w"])
        ax.scatter(y, p, s=3, alpha=0.4)
        lo, hi = min(y.min(), p.min(), idle_w), max(y.max(), p.max())
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6)
        for b in (idle_w, tdp_w):
            ax.axhline(b, color="grey", lw=0.5, ls="--")
        ax.set_xlabel("measured power (W)")
        ax.set_ylabel("predicted power (W)")
        ax.set_title(f"{name}: R²={res['power_r2']:.3f}  energy MAPE={res['energy_mape'] * 100:.1f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
