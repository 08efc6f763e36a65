"""Numba microbenchmarks for host calibration (compiled on first use, a few seconds)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

LANES = 128                          # fp32 values kept in registers per thread: 8 AVX-512 vectors
FMA_FLOPS_PER_ITER = 2 * LANES       # one multiply-add per lane per iteration


@njit(parallel=True, fastmath=True, cache=True)
def fma_loop(n, out, a=np.float32(0.999999), b=np.float32(1e-7)):
    """Independent FMA chains, enough of them to hide FMA latency; one program per core.
    ``a`` and ``b`` are arguments, not constants: with constants, the code Numba loads from its
    cache ran 200k iterations in 29 us (3.4 TFLOP/s on 2 vCPUs) where a fresh compile took
    ~0.25 ms (~420 GFLOP/s), so calibrations reported impossible peaks."""
    for t in prange(out.shape[0]):
        x = np.empty(LANES, np.float32)
        for j in range(LANES):
            x[j] = np.float32(j) * np.float32(1e-3) + np.float32(t)
        for _ in range(n):
            for j in range(LANES):
                x[j] = x[j] * a + b
        s = np.float32(0)
        for j in range(LANES):
            s += x[j]
        out[t] = s                   # the result is kept so the loop cannot be dropped


@njit(parallel=True, cache=True)
def triad(a, b, c, s):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


@njit(parallel=True, fastmath=True, cache=True)
def read_sum(a):
    s = np.float32(0)
    for i in prange(a.size):
        s += a[i]
    return s
