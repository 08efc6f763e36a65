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
from .workload import Workload, from_description, workload_for


def profile_for(device: str):
    try:
        return hw_profiles.load(device)
    except TilecError as e:
        raise TilecError(f"records from device {device!r} need a hardware profile: {e}") from None


_recorded: dict[str, object] = {}


def profile_of(rec: Record):
    """The profile a record is analysed with: for a host record that carries the figures of the
    machine that measured it (``Record.host``, from its file's sidecar), that machine's;
    otherwise its device's (``host``: this machine)."""
    if rec.device != "host" or rec.host is None:
        return profile_for(rec.device)
    import json

    from hw_profiles import hostdetect
    key = json.dumps(rec.host, sort_keys=True)
    if key not in _recorded:
        _recorded[key] = hostdetect.recorded_profile(rec.host.get("calibration"), rec.host.get("machine"),
                                                     f"<host: figures of {rec.source or 'the records'}>",
                                                     rec.host.get("measured_on"))
    return _recorded[key]


def analyse(rec: Record) -> tuple[Workload, Prediction]:
    prof = profile_of(rec)
    from .resources import apply
    from .kernel import describe
    w = from_description(rec.op, rec.shape, rec.dtype, rec.config, rec.workload) if rec.workload is not None \
        else workload_for(rec.op, rec.shape, rec.dtype, rec.config, rec.extra.get("backend"))
    w = apply(w, rec.extra)   # measured beats estimated
    return w, predict(w, prof, describe(rec.op, rec.shape, rec.dtype, rec.config, rec.extra))


def row(rec: Record, w: Workload, pred: Prediction) -> dict:
    """Named raw features (numbers or strings; strings become categories in the model)."""
    prof = profile_of(rec)
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
