"""Timing helpers shared by the benchmarks: warm-up, repeats, median, optional cache flush."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

_FLUSH = None


def flush_caches() -> None:
    """Touch twice the last-level cache (at least 64 MB) so the next run reads its operands from
    DRAM: a 64 MB weight matrix would otherwise stay in a 260 MB L3 and look faster than memory."""
    global _FLUSH
    if _FLUSH is None:
        from hw_profiles.hostdetect import caches
        last_level = max(caches().values(), default=32 * 2**20)
        _FLUSH = np.ones(max(64 * 2**20, 2 * last_level) // 4, np.float32)
    _FLUSH += 1.0


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, flush: bool = False) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if flush:
            flush_caches()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_samples(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        flush: bool = False, block: int = 3, settle: float = 0.15) -> dict[str, list[float]]:
    """Seconds of runs of each candidate: ``repeats`` rounds, ``block - 1`` samples per candidate
    and round. Rounds interleave the candidates, in an order rotated each round, so drifts in
    machine speed fall on every candidate alike.

    Each candidate's turn first runs it back to back for ``settle`` seconds without keeping the
    times: whatever the previous candidate left behind must be gone first. OpenBLAS's workers
    busy-wait about 2**28 cycles (~0.13 s here) after each call, so on two cores a kernel that
    runs right after a NumPy matmul loses a core: the same 1024^3 GEMM took 22-25 ms within
    60 ms of a NumPy call and 13-15 ms after 120 ms. Never sleep instead: an idle core here takes
    milliseconds to come back (a 2.8 ms kernel measured 5.9 ms after 100 ms of sleep)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            fns[name]()  # at least one run is dropped, however long it takes
            while time.perf_counter() - start < settle:
                fns[name]()
            for _ in range(max(block - 1, 1)):
                if flush:
                    flush_caches()
                t = time.perf_counter()
                fns[name]()
                samples[name].append(time.perf_counter() - t)
    return samples


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                flush: bool = False) -> dict[str, float]:
    """Median seconds of each candidate (see interleaved_samples)."""
    return {k: statistics.median(v) for k, v in interleaved_samples(fns, repeats, warmup, flush).items()}


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1))


def machine() -> dict:
    import os
    import platform

    import numba
    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                        for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:
        pass
    return info


def cpu_times() -> list[int] | None:
    """The host's aggregate CPU time counters (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_since(before: list[int] | None, after: list[int] | None = None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests since ``before`` (field 8 of
    /proc/stat). On a shared VM it swung from 0 to 12-31% within minutes, and with it the
    ratios of a multi-threaded kernel to NumPy (0.85x -> 0.5x for one GEMM), so every run
    records it."""
    after = after if after is not None else cpu_times()
    if before is None or after is None or len(after) < 8:
        return None
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta[:8])
    return delta[7] / total if total > 0 else 0.0


def report_steal(before: list[int] | None, console=None) -> float | None:
    steal = steal_since(before)
    if steal is not None and steal > 0.03:
        msg = f"warning: the hypervisor took {steal:.0%} of this VM's CPU time during the run; ratios are unreliable"
        (console.print if console else print)(msg)
    return steal
