"""Measure an op on the device its arrays live on.

Per config: the first call compiles and is checked against the NumPy reference (a wrong
result prunes the config: it may never win); then warm-up calls; then ``repeats`` timed
calls, each after a cache flush (writing a buffer larger than the last-level cache), and
the median is the result.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from tilec.errors import TilecError

from . import Measurement, TrialFailed

FLUSH_BYTES = 64 << 20        # twice the 32 MB L3 of the project's CPUs; more than an H100's 50 MB L2


class _HostClock:
    def __init__(self, flush_bytes: int):
        self.buffer = np.zeros(max(1, flush_bytes // 8))

    def flush(self) -> None:
        self.buffer += 1.0

    def sync(self) -> None:
        pass


class _CudaClock:
    def __init__(self, flush_bytes: int, device: str):
        import cupy
        self.cupy = cupy
        self.index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(self.index):
            self.buffer = cupy.zeros(max(1, flush_bytes // 4), dtype=cupy.float32)

    def flush(self) -> None:
        with self.cupy.cuda.Device(self.index):
            self.buffer += 1.0

    def sync(self) -> None:
        self.cupy.cuda.Device(self.index).synchronize()


def to_device(inputs: dict, device: str) -> dict:
    """The op's NumPy inputs moved to ``device`` (CuPy, else Torch, for CUDA)."""
    if device == "cpu":
        return inputs
    try:
        import cupy
        index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(index):
            return {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    except ImportError:
        raise TilecError(f"measuring on {device} needs CuPy (pip install 'tilec[cuda]')") from None


def to_host(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _widen(x: np.ndarray) -> np.ndarray:
    if x.dtype.name == "bfloat16":
        return x.astype(np.float32)
    return x.astype(np.float64) if x.dtype.kind == "f" else x


class MeasuredEvaluator:
    """``MeasuredEvaluator(op_spec, shape, dtype, backend, device)(config) -> Measurement``."""

    def __init__(self, op, shape: dict, dtype: str, backend: str, device: str = "cpu", *,
                 warmup: int = 1, repeats: int = 5, flush_bytes: int = FLUSH_BYTES, seed: int = 0,
                 check: bool = True):
        if repeats < 1 or warmup < 0:
            raise TilecError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
        self.op, self.shape, self.dtype, self.backend, self.device = op, dict(shape), dtype, backend, device
        self.warmup, self.repeats, self.check = warmup, repeats, check
        host_inputs = op.make_inputs(self.shape, dtype, np.random.default_rng(seed))
        self.reference = np.asarray(op.reference(host_inputs)) if check else None
        self.inputs = to_device(host_inputs, device)
        self.clock = _HostClock(flush_bytes) if device == "cpu" else _CudaClock(flush_bytes, device)

    def _call(self, config: dict):
        return self.op.run(self.inputs, config=dict(config), backend=self.backend)

    def __call__(self, config: dict) -> Measurement:
        t0 = time.perf_counter()
        try:
            out = self._call(config)
            self.clock.sync()
        except TilecError as e:
            raise TrialFailed(f"does not compile or launch: {e}") from None
        except Exception as e:       # a backend bug must not end the tune
            raise TrialFailed(f"crashed: {type(e).__name__}: {e}") from None
        first_s = time.perf_counter() - t0
        if self.check:
            self._check(out)
        for _ in range(self.warmup):
            self._call(config)
        times = []
        for _ in range(self.repeats):
            self.clock.flush()
            self.clock.sync()
            t0 = time.perf_counter()
            self._call(config)
            self.clock.sync()
            times.append(time.perf_counter() - t0)
        return Measurement(statistics.median(times), None, {"times_s": times, "first_call_s": first_s})

    def _check(self, out) -> None:
        got = _widen(to_host(out))
        want = self.reference
        rtol, atol = self.op.tolerance(self.dtype)
        if got.shape != want.shape:
            raise TrialFailed(f"wrong result: shape {got.shape}, expected {want.shape}")
        bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise TrialFailed(f"wrong result: {int(bad.sum())} of {bad.size} elements off, first at {idx}: "
                              f"{got[idx]!r} vs reference {want[idx]!r}")
