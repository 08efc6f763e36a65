"""Measure an op on the device its arrays live on.

Per config: the first call compiles and is checked against the NumPy reference (a wrong
result prunes the config: it may never win); then warm-up calls; then ``repeats`` timed
calls, each after a cache flush (writing a buffer larger than the last-level cache), and
the median is the result.

With a ``baseline`` config every timed call of a candidate is paired with one of the
baseline, and the result is the median of the candidate/baseline ratios times the
baseline's time in the first evaluation. On a shared VM the machine's speed drifts by
10-15% within seconds, and 24 GEMM configs measured one after another were ranked by when
they ran as much as by what they were; the ratios cancel the drift.
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
                 check: bool = True, baseline: dict | None = None):
        if repeats < 1 or warmup < 0:
            raise TilecError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
        self.op, self.shape, self.dtype, self.backend, self.device = op, dict(shape), dtype, backend, device
        self.warmup, self.repeats, self.check = warmup, repeats, check
        host_inputs = op.make_inputs(self.shape, dtype, np.random.default_rng(seed))
        self.reference = np.asarray(op.reference(host_inputs)) if check else None
        self.inputs = to_device(host_inputs, device)
        self.clock = _HostClock(flush_bytes) if device == "cpu" else _CudaClock(flush_bytes, device)
        self.baseline = dict(baseline) if baseline else None
        self.baseline_s: float | None = None      # the baseline's time in the first evaluation

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
        if self.baseline is not None:
            return self._paired(config, first_s)
        times = [self._timed(config) for _ in range(self.repeats)]
        return Measurement(statistics.median(times), None, {"times_s": times, "first_call_s": first_s})

    def _timed(self, config: dict) -> float:
        self.clock.flush()
        self.clock.sync()
        t0 = time.perf_counter()
        self._call(config)
        self.clock.sync()
        return time.perf_counter() - t0

    def _paired(self, config: dict, first_s: float) -> Measurement:
        """Candidate and baseline timed alternately; their ratios, scaled to the baseline's
        first time, are the candidate's drift-free times."""
        if self.baseline_s is None:
            try:
                self._call(self.baseline)         # compile and warm the baseline once
            except Exception as e:
                raise TilecError(f"the baseline config {self.baseline} does not run: {e}") from None
        raw, base = [], []
        for _ in range(self.repeats):
            raw.append(self._timed(config))
            base.append(self._timed(self.baseline))
        if self.baseline_s is None:
            self.baseline_s = statistics.median(base)
        times = [self.baseline_s * c / b for c, b in zip(raw, base)]
        return Measurement(statistics.median(times), None, {"times_s": times, "raw_times_s": raw,
                                                            "baseline_times_s": base, "first_call_s": first_s})

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
