"""Cost models: predict runtime and energy of a launch on a hardware profile.

- ``Workload`` (workload.py): what a launch does; ``workload_for`` counts it from the IR of the
  kernel an (op, shape, dtype, config) launches (``launches.py`` maps ops to their IR).
- ``kernel.KernelDesc`` (kernel.py): what a GPU kernel does inside a program (warp layout,
  split-K, dtypes, layouts, MMA shape, register tile), from a record's config or extra;
  ``cltune.py`` describes CLTune's SGEMM (the UCI data) from its index arithmetic.
- ``analytical.predict(workload, profile[, kernel])`` / ``feasibility.feasible(workload, profile)``.
- ``learned.LearnedModel``: gradient-boosted trees on analytical features + raw config.
- ``records``: training rows from tuning records, CSV files and Kernel Tuner caches.
"""
from . import records
from .analytical import Prediction, predict
from .feasibility import feasible
from .workload import Workload, workload_for

__all__ = ["Prediction", "Workload", "feasible", "predict", "records", "workload_for"]
