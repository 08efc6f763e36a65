"""Random inputs in any supported dtype (bf16 as ml_dtypes when available, else uint16 bits)."""
from __future__ import annotations

import numpy as np


def random_array(shape, dtype: str, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    if dtype == "float32":
        return x
    if dtype == "float16":
        return x.astype(np.float16)
    if dtype == "bfloat16":
        import ml_dtypes
        return x.astype(ml_dtypes.bfloat16)
    raise ValueError(f"random_array: unsupported dtype {dtype}")


def as_float64(x) -> np.ndarray:
    """Any supported array (NumPy, ml_dtypes bf16, torch CPU) as float64 NumPy."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().float().numpy()
    return np.asarray(x).astype(np.float64)
