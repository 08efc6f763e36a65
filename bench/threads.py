"""Threads beside torch: a tilec GEMM right after a torch matmul, and the other way round,
small sizes, interleaved, each setting in a fresh process (OpenMP reads its settings once).

    python -m bench threads [--json FILE]

Two OpenMP users in one process (torch's ATen/MKL and Numba's pool) share the cores: a pool
whose threads still spin for the last op's next region takes the cores from the next op's
threads. The rows compare tilec's setting (see tilec/runtime/threads.py), with tilec imported
before or after torch, and OpenMP's active wait, each against the same op alone (after a 2 ms
pause).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .timing import write_json

_PROBE = r"""
import json, os, time
import numpy as np
if os.environ.get("BENCH_ORDER") == "tilec_first":
    import ops, torch
else:
    import torch, ops

def median(x):
    x = sorted(x)
    return x[len(x) // 2]

rows = {}
for size in (64, 256):
    rng = np.random.default_rng(0)
    a = rng.random((size, size), np.float32)
    t = torch.from_numpy(rng.random((256, 256), np.float32))
    for _ in range(5):
        ops.gemm(a, a); t @ t
    after, alone, torch_after, torch_alone = [], [], [], []
    for _ in range(150):
        t @ t
        s = time.perf_counter(); ops.gemm(a, a); after.append(time.perf_counter() - s)
        s = time.perf_counter(); t @ t; torch_after.append(time.perf_counter() - s)
        time.sleep(0.002)
        s = time.perf_counter(); ops.gemm(a, a); alone.append(time.perf_counter() - s)
        time.sleep(0.002)
        s = time.perf_counter(); t @ t; torch_alone.append(time.perf_counter() - s)
    rows[f"gemm{size}"] = {"after_torch_us": median(after) * 1e6, "p90_after_torch_us": sorted(after)[134] * 1e6,
                           "alone_us": median(alone) * 1e6,
                           "torch256_after_tilec_us": median(torch_after) * 1e6, "torch256_alone_us": median(torch_alone) * 1e6}
import numba
try:
    layer = numba.threading_layer()
except ValueError:
    layer = None
print(json.dumps({"rows": rows, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "numba_layer": layer,
                  "torch_threads": torch.get_num_threads()}))
"""

SETTINGS = {
    "tilec_first": {"BENCH_ORDER": "tilec_first"},   # import ops, then torch: tilec's policy for both pools
    "torch_first": {},                               # import torch, then ops: torch's pool keeps OpenMP's default
    "omp_active": {"OMP_WAIT_POLICY": "ACTIVE"},     # both pools spin between regions
}


def _probe(extra: dict) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "BENCH_ORDER")}
    env.update(extra, PYTHONPATH=str(root), TILEC_QUIET="1")
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure() -> dict:
    return {name: _probe(extra) for name, extra in SETTINGS.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench threads")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = measure()
    for name, r in result.items():
        for case, row in r["rows"].items():
            print(f"{name:10s} {case}: tilec after a torch matmul {row['after_torch_us']:.0f} us "
                  f"(p90 {row['p90_after_torch_us']:.0f}), alone {row['alone_us']:.0f} us; torch 256^3 after "
                  f"tilec {row['torch256_after_tilec_us']:.0f} us, alone {row['torch256_alone_us']:.0f} us")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
