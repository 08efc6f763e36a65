"""Autotuning: search spaces, strategies, evaluators, the tuning database and cost models.

    from autotune import lookup, tune
    lookup("gemm", {"M": 1024, "N": 1024, "K": 1024}, "float32", "numba", "cpu")  # -> dict | None

``lookup`` is what op calls use; it imports neither Optuna nor the tuner.
"""
from __future__ import annotations

from tilec.tuning.database import lookup


def __getattr__(name: str):
    # The tuner pulls in Optuna; load it only when asked for.
    if name in ("tune", "TuneResult"):
        from . import tuner
        return getattr(tuner, name)
    if name == "tune_op":
        from . import run
        return run.tune_op
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")


__all__ = ["TuneResult", "lookup", "tune", "tune_op"]
