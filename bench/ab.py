"""Same-run A/B of tilec's kernels against another commit: each round starts one process per
side (their order alternating), each process times every case after a warm call, and the
verdict per case is the median over rounds of the new/base time ratio.

    python -m bench ab --base REV [--rounds 7] [--cases gemm_512 ...] [--json FILE]

The base commit is checked out into a temporary git worktree (removed afterwards); both sides
use the same interpreter and packages, so only tilec's own code differs. Cases call the ops
with explicit arguments whose meaning has not changed between versions (e.g. ``symmetric=True``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .timing import cpu_times, machine, report_steal, write_json

ROOT = Path(__file__).resolve().parents[1]

# Runs in each side's process: prints {case: seconds} (min over repeats, after one warm call).
PROBE = r"""
import json, sys, time
import numpy as np
import ops
rng = np.random.default_rng(0)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
cases = {}
def case(name):
    def add(make):
        cases[name] = make
        return make
    return add
@case("gemm_512")
def _():
    a, b = f32(512, 512), f32(512, 512); return lambda: ops.gemm(a, b)
@case("gemm_1024")
def _():
    a, b = f32(1024, 1024), f32(1024, 1024); return lambda: ops.gemm(a, b)
@case("gemv_4096")
def _():
    a, x = f32(4096, 4096), f32(4096); return lambda: ops.gemv(a, x)
@case("int4_m1_4096")
def _():
    w, x = f32(4096, 4096) * 0.02, f32(1, 4096)
    q = ops.quantize(w, 4, 128, symmetric=True); return lambda: ops.quant_gemm(x, q)
@case("int4_m8_4096")
def _():
    w, x = f32(4096, 4096) * 0.02, f32(8, 4096)
    q = ops.quantize(w, 4, 128, symmetric=True); return lambda: ops.quant_gemm(x, q)
@case("lut3_m1_4096")
def _():
    w, x = f32(4096, 4096) * 0.02, f32(1, 4096)
    q = ops.bcq_quantize(w, 3, 128, "greedy"); return lambda: ops.lut_gemm(x, q)
@case("attention_1024")
def _():
    q, k, v = (f32(1, 8, 1024, 64) for _ in range(3)); return lambda: ops.attention(q, k, v)
@case("attention_causal_1024")
def _():
    q, k, v = (f32(1, 8, 1024, 64) for _ in range(3)); return lambda: ops.attention(q, k, v, causal=True)
@case("decode_4096")
def _():
    k, v, q = f32(1, 8, 4096, 128), f32(1, 8, 4096, 128), f32(1, 32, 1, 128)
    lens = np.full(1, 4096, np.int32); return lambda: ops.decode_attention(q, k, v, lens)
@case("kivi2_decode_4096")
def _():
    k, v, q = f32(1, 8, 4096, 128), f32(1, 8, 4096, 128), f32(1, 32, 1, 128)
    lens = np.full(1, 4096, np.int32)
    cache = ops.quantize_kv(k, v, lens, bits=2, group=32, residual=32)
    return lambda: ops.decode_attention_quantized(q, cache)
out = {}
for name in sys.argv[1].split(","):
    fn = cases[name]()
    fn()
    best, spent = float("inf"), 0.0
    while spent < 0.3 or best == float("inf"):
        t = time.perf_counter(); fn(); dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    out[name] = best
print(json.dumps(out))
"""

CASES = ["gemm_512", "gemm_1024", "gemv_4096", "int4_m1_4096", "int4_m8_4096", "lut3_m1_4096",
         "attention_1024", "attention_causal_1024", "decode_4096", "kivi2_decode_4096"]


def _side(path: Path, cases: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", PROBE, ",".join(cases)], cwd=path, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{path}: the probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ab", description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare against (e.g. main~5)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", a.base], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    base_dir = Path(tempfile.mkdtemp(prefix="tilec-ab-")) / "base"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base_dir), rev], cwd=ROOT, check=True)
    try:
        sides = {"base": base_dir, "new": ROOT}
        for path in sides.values():          # compile both sides before any timing
            _side(path, a.cases)
        ratios: dict[str, list[float]] = {c: [] for c in a.cases}
        times: dict[str, dict[str, list[float]]] = {s: {c: [] for c in a.cases} for s in sides}
        before = cpu_times()
        for r in range(a.rounds):
            order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
            got = {s: _side(sides[s], a.cases) for s in order}
            for c in a.cases:
                ratios[c].append(got["new"][c] / got["base"][c])
                for s in sides:
                    times[s][c].append(got[s][c])
        rows = []
        for c in a.cases:
            ratio = statistics.median(ratios[c])
            rows.append({"case": c, "base_ms": 1e3 * statistics.median(times["base"][c]),
                         "new_ms": 1e3 * statistics.median(times["new"][c]), "new_over_base": ratio,
                         "slower_than_3pct": ratio > 1.03})
            print(f"{c:24s} base {rows[-1]['base_ms']:9.3f} ms  new {rows[-1]['new_ms']:9.3f} ms  "
                  f"new/base {ratio:.3f}{'  SLOWER' if ratio > 1.03 else ''}", flush=True)
        result = {"conditions": {**machine(), "cpu_steal": report_steal(before), "load_avg": os.getloadavg(), "base": rev, "rounds": a.rounds},
                  "cases": rows}
        if a.json:
            write_json(a.json, result)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, check=False)
    return 0
