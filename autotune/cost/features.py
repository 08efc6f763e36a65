"""One feature row per record: the analytical model's view of the launch (roofline terms,
occupancy, waves...), the target's figures, and the raw config and shape. The learned model
predicts runtime relative to the roofline bound, so a shape it has not seen starts from a
physically sensible scale instead of the nearest training value."""
from __future__ import annotations

import math

import hw_profiles
from tilec.errors import TilecError

from .analytical import Prediction, predict
from .records import Record
from .workload import Workload, workload_for


def profile_for(device: str):
    try:
        return hw_profiles.load(device)
    except TilecError as e:
        raise TilecError(f"records from device {device!r} need a hardware profile: {e}") from None


def analyse(rec: Record) -> tuple[Workload, Prediction]:
    prof = profile_for(rec.device)
    w = workload_for(rec.op, rec.shape, rec.dtype, rec.config)
    return w, predict(w, prof)


def row(rec: Record, w: Workload, pred: Prediction) -> dict:
    """Named raw features (numbers or strings; strings become categories in the model)."""
    prof = profile_for(rec.device)
    f = {f"a.{k}": float(v) for k, v in pred.features.items()}
    for k in [k for k in f if k.startswith("a.t_") or k == "a.t_roofline"]:
        f[k] = math.log10(max(f[k], 1e-12))      # times on a log scale
    f.update({
        "op": rec.op, "dtype": rec.dtype, "bound": pred.bound,
        "hw.log_peak": math.log10(prof.peak(w.peak_key) or min(prof.peak_flops.values())),
        "hw.log_dram_bw": math.log10(prof.dram.bandwidth_bytes_per_s),
        "hw.compute_units": float(prof.compute_units),
        "hw.log_local_memory": math.log10(prof.local_memory_bytes),
    })
    for k, v in rec.shape.items():
        f[f"shape.{k}"] = math.log2(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else str(v)
    for k, v in rec.config.items():
        f[f"cfg.{k}"] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    return f
