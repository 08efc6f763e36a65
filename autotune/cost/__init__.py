"""Cost models: predict runtime and energy of a launch on a hardware profile.

- ``Workload`` (workload.py): what a launch does, independent of the IR; ``workload_for`` builds
  one for a known op family from (shape, dtype, config).
- ``kernel.KernelDesc`` (kernel.py): what a GPU kernel does inside a program (warp layout,
  split-K, dtypes, layouts, MMA shape, register tile), from a record's config or extra;
  ``cltune.py`` describes CLTune's SGEMM (the UCI data) from its index arithmetic.
- ``analytical.predict(workload, profile[, kernel])`` / ``feasibility.feasible(workload, profile)``.
- ``learned.LearnedModel``: gradient-boosted trees on analytical features + raw config.
- ``records``: training rows from tuning records, CSV files and Kernel Tuner caches.
"""
from . import records  # registers the workloads of the record sources' kernels
from .analytical import Prediction, predict
from .feasibility import feasible
from .workload import Workload, register, workload_for

__all__ = ["Prediction", "Workload", "feasible", "predict", "records", "register", "workload_for"]
