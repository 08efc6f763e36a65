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
    """Touch 64 MB so the next run starts with cold caches (L3 here is 32 MB)."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = np.ones(16 * 1024 * 1024, np.float32)
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


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                flush: bool = False) -> dict[str, float]:
    """Median seconds of each candidate, runs interleaved so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if flush:
                flush_caches()
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


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
