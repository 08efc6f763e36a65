"""Cost models: predict runtime and energy of a launch on a hardware profile.

- ``Workload`` (workload.py): what a launch does; ``workload_for`` counts it from the IR of the
  kernel an (op, shape, dtype, config) launches (``launches.py`` maps ops to their IR).
- ``analytical.predict(workload, profile)`` / ``feasibility.feasible(workload, profile)``.
- ``learned.LearnedModel``: gradient-boosted trees on analytical features + raw config.
- ``records``: training rows from tuning records, CSV files and Kernel Tuner caches.
"""
from . import records
from .analytical import Prediction, predict
from .feasibility import feasible
from .workload import Workload, workload_for

__all__ = ["Prediction", "Workload", "feasible", "predict", "records", "workload_for"]
