"""Cost models: predict runtime and energy of a launch on a hardware profile.

- ``Workload`` (workload.py): what a launch does, independent of the IR; ``workload_for`` builds
  one for a known op family from (shape, dtype, config).
- ``analytical.predict(workload, profile)`` / ``feasibility.feasible(workload, profile)``.
- ``learned.LearnedModel``: gradient-boosted trees on analytical features + raw config.
- ``records``: training rows from tuning records, CSV files and Kernel Tuner caches.
"""
from . import records  # registers the workloads of the record sources' kernels
from .analytical import Prediction, predict
from .feasibility import feasible
from .workload import Workload, register, workload_for

__all__ = ["Prediction", "Workload", "feasible", "predict", "records", "register", "workload_for"]
