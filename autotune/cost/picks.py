"""Choose configs with the analytical model alone: every feasible config of a space, ranked by
predicted runtime on a profile. This is how the tuner prunes, and how a target without a
device to measure on still gets sensible tiles."""
from __future__ import annotations

import itertools

from .analytical import Prediction, predict
from .workload import workload_for

# Tile space for GPU GEMM (Triton-like: tile sizes, warps, pipeline stages).
GPU_GEMM_SPACE = {"BM": (16, 32, 64, 128, 256), "BN": (16, 32, 64, 128, 256), "BK": (16, 32, 64, 128),
                  "num_warps": (2, 4, 8), "num_stages": (2, 3, 4, 5)}


def rank(op: str, shape: dict, dtype: str, space: dict, profile, top: int = 5) -> list[tuple[dict, Prediction]]:
    """The ``top`` feasible configs by predicted runtime (ties: less energy, then smaller tiles)."""
    names = list(space)
    scored = []
    for values in itertools.product(*(space[n] for n in names)):
        cfg = dict(zip(names, values))
        w = workload_for(op, shape, dtype, cfg)
        pred = predict(w, profile)
        if pred.feasible:
            # equal predictions: the config that asks less of the hardware wins
            scored.append(((pred.runtime_s, pred.energy_j, w.tile_bytes_local, w.registers_per_thread or 0), cfg, pred))
    scored.sort(key=lambda s: s[0])
    return [(cfg, pred) for _, cfg, pred in scored[:top]]
