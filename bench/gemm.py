"""GEMM and GEMV against NumPy (OpenBLAS) in the same run: ratios, GFLOP/s, GB/s.

    python -m bench gemm [--sizes 1024,2048] [--json FILE]

For each size it times tilec's default config and the best of a small sweep (the figure
``tilec tune`` would find), interleaved with NumPy, median of --repeats runs.
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

import ops

from .timing import cpu_times, interleaved, machine, report_steal, write_json

GEMM_SWEEP = [{"BM": 512, "BN": 256, "BK": 256}, {"BM": 256, "BN": 256, "BK": 256},
              {"BM": 512, "BN": 256, "BK": 1024}, {"BM": 512, "BN": 512, "BK": 1024},
              {"BM": 1024, "BN": 512, "BK": 1024}, {"BM": 256, "BN": 128, "BK": 512}]
# multiply-and-sum tiles read in place (the default's form), and strips of rows as BLAS GEMVs
# reading A in place (AS_DOT; the old default was 128-row strips)
GEMV_SWEEP = [{"BM": 16, "BK": 4096, "AS_DOT": False}, {"BM": 256, "BK": 4096, "AS_DOT": False},
              {"BM": 64, "BK": 1024, "AS_DOT": False},
              {"BM": 128, "BK": 4096, "AS_DOT": True}, {"BM": 1024, "BK": 4096, "AS_DOT": True}]


def bench_gemm(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    cands = {"numpy": lambda: a @ b, "tilec default": lambda: ops.gemm(a, b)}
    for cfg in GEMM_SWEEP:
        cfg = {k: min(v, 2 * n) for k, v in cfg.items()}
        cands[f"tilec {cfg['BM']}x{cfg['BN']}x{cfg['BK']}"] = lambda cfg=cfg: ops.gemm(a, b, config=cfg)
    times = interleaved(cands, repeats=repeats)
    return _summary("gemm", f"{n}x{n}x{n} fp32", 2.0 * n ** 3, 4.0 * 3 * n * n, times)


def bench_gemv(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    cands = {"numpy": lambda: a @ x, "tilec default": lambda: ops.gemv(a, x)}
    for cfg in GEMV_SWEEP:
        if cfg["BM"] > n or cfg["BK"] > n:
            continue
        form = " dot" if cfg.get("AS_DOT") else ""
        cands[f"tilec BM={cfg['BM']} BK={cfg['BK']}{form}"] = lambda cfg=cfg: ops.gemv(a, x, config=cfg)
    times = interleaved(cands, repeats=repeats)
    return _summary("gemv", f"{n}x{n} fp32", 2.0 * n * n, 4.0 * (n * n + 2 * n), times)


def _summary(op: str, case: str, flops: float, nbytes: float, times: dict) -> dict:
    best = min((k for k in times if k.startswith("tilec") and k != "tilec default"), key=times.get)
    rows = {k: {"ms": t * 1e3, "gflops": flops / t / 1e9, "gbs": nbytes / t / 1e9,
                "vs_numpy": times["numpy"] / t} for k, t in times.items()}
    return {"op": op, "case": case, "rows": rows, "best": best,
            "default_vs_numpy": rows["tilec default"]["vs_numpy"], "best_vs_numpy": rows[best]["vs_numpy"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench gemm")
    p.add_argument("--sizes", default="1024,2048")
    p.add_argument("--gemv-sizes", default="1024,4096")
    p.add_argument("--repeats", type=int, default=15,
                   help="rounds (this VM's speed drifts by 10-15% within seconds: 5 rounds were not enough)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    before = cpu_times()
    results = [bench_gemm(int(n), args.repeats) for n in args.sizes.split(",") if n]
    results += [bench_gemv(int(n), args.repeats) for n in args.gemv_sizes.split(",") if n]
    console = Console()
    for r in results:
        t = Table(title=f"{r['op']} {r['case']} (median of {args.repeats}, same run)")
        for col in ("candidate", "ms", "GFLOP/s", "GB/s", "x NumPy"):
            t.add_column(col, justify="right" if col != "candidate" else "left")
        for name, row in r["rows"].items():
            mark = " *" if name == r["best"] else ""
            t.add_row(name + mark, f"{row['ms']:.2f}", f"{row['gflops']:.1f}", f"{row['gbs']:.1f}",
                      f"{row['vs_numpy']:.2f}")
        console.print(t)
    payload = {"machine": {**machine(), "cpu_steal": report_steal(before, console)}, "results": results}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
