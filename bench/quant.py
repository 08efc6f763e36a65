"""Quantized GEMV/GEMM on this CPU (Numba backend): int4 quant_gemm and 3-bit LUT-GEMM against
(a) dequantize-then-NumPy-matmul and (b) NumPy fp32 on the unquantized weights, all timed
interleaved in one run (medians of repeats), plus achieved bandwidth as a fraction of this
machine's measured streaming bandwidth, and the reconstruction error of BCQ greedy vs
alternating vs round-to-nearest integers at equal bits.

    python -m bench.quant --json results/quant.json [--sizes 4096 8192] [--rows 1 8] [--repeats 7]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile

import numpy as np

quant_mod = importlib.import_module("ops.quant")
lut_mod = importlib.import_module("ops.lut_gemm")
from ops.bcq import bcq_quantize, relative_error  # noqa: E402
from ops.quant_format import quantize  # noqa: E402

from .timing import cpu_times, interleaved_samples, machine, report_steal  # noqa: E402


def interleaved(fns: dict, repeats: int) -> dict:
    """Median and min seconds per function (timed as bench.timing.interleaved_samples)."""
    return {k: {"median_s": float(np.median(v)), "min_s": float(min(v))}
            for k, v in interleaved_samples(fns, repeats, flush=True).items()}


def bench_case(k: int, m: int, repeats: int, bandwidth: float, rng) -> dict:
    w = (rng.standard_normal((k, k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    qw = quantize(w, 4, 128, True)
    bw = bcq_quantize(w, 3, 128, "greedy")
    shape = {"M": m, "N": k, "K": k, "group_size": 128}
    fns = {
        "int4_quant_gemm": lambda: quant_mod.quant_gemm(x, qw),
        "int4_dequant_numpy": lambda: x @ qw.dequantize(),
        "lut3_lut_gemm": lambda: lut_mod.lut_gemm(x, bw),
        "lut3_dequant_numpy": lambda: x @ bw.dequantize(),
        "numpy_fp32": lambda: x @ w,
    }
    # correctness first: a fast wrong kernel is not a result
    for name, got, ref in (("int4", fns["int4_quant_gemm"](), x.astype(np.float64) @ qw.dequantize()),
                           ("lut3", fns["lut3_lut_gemm"](), x.astype(np.float64) @ bw.dequantize())):
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
        if err > 1e-3:
            raise SystemExit(f"{name} K=N={k} M={m}: relative error {err:.2e}")
    t = interleaved(fns, repeats)
    med = {n: v["median_s"] for n, v in t.items()}
    int4_bytes = quant_mod.SPEC.bytes({**shape, "bits": 4}, "float32")
    lut_bytes = lut_mod.SPEC.bytes({**shape, "bits": 3}, "float32")
    return {
        "K": k, "N": k, "M": m, "times": t,
        "int4_vs_dequant": med["int4_dequant_numpy"] / med["int4_quant_gemm"],
        "int4_vs_fp32": med["numpy_fp32"] / med["int4_quant_gemm"],
        "lut3_vs_dequant": med["lut3_dequant_numpy"] / med["lut3_lut_gemm"],
        "lut3_vs_fp32": med["numpy_fp32"] / med["lut3_lut_gemm"],
        "int4_bandwidth_fraction": int4_bytes / med["int4_quant_gemm"] / bandwidth,
        "lut3_bandwidth_fraction": lut_bytes / med["lut3_lut_gemm"] / bandwidth,
        "fp32_bandwidth_fraction": 4.0 * k * k / med["numpy_fp32"] / bandwidth,
    }


def quality(rng, k: int = 1024, n: int = 512, group: int = 128) -> list[dict]:
    """Relative Frobenius error ||W - W_q|| / ||W|| at equal bits (Gaussian and heavy-tailed W)."""
    rows = []
    weights = {"gaussian": rng.standard_normal((k, n)),
               "student_t3": rng.standard_t(3, (k, n))}
    for wname, w in weights.items():
        w = w.astype(np.float32)
        for bits in (2, 3, 4):
            row = {"weights": wname, "bits": bits, "group": group}
            for method in ("greedy", "alternating", "uniform"):
                row[method] = relative_error(w, bcq_quantize(w, bits, group, method).dequantize())
            if bits == 4:
                row["int4_rtn_symmetric"] = relative_error(w, quantize(w, 4, group, True).dequantize())
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    before = cpu_times()
    from hw_profiles.hostdetect import measure
    bandwidth = measure()["stream_read_bytes_per_s"]   # the probe `tilec profiles calibrate` uses
    print(f"streaming read bandwidth (tilec profiles calibrate's probe): {bandwidth / 1e9:.1f} GB/s")
    cases = []
    head = (f"{'K=N':>6} {'M':>3} | {'int4 ms':>8} {'vs deq':>7} {'vs fp32':>7} {'BW%':>5} | "
            f"{'lut3 ms':>8} {'vs deq':>7} {'vs fp32':>7} {'BW%':>5} | {'fp32 ms':>8} {'BW%':>5}")
    print(head)
    print("-" * len(head))
    for k in args.sizes:
        for m in args.rows:
            c = bench_case(k, m, args.repeats, bandwidth, rng)
            cases.append(c)
            t = c["times"]
            print(f"{k:>6} {m:>3} | {t['int4_quant_gemm']['median_s'] * 1e3:8.2f} {c['int4_vs_dequant']:7.2f} "
                  f"{c['int4_vs_fp32']:7.2f} {100 * c['int4_bandwidth_fraction']:5.1f} | "
                  f"{t['lut3_lut_gemm']['median_s'] * 1e3:8.2f} {c['lut3_vs_dequant']:7.2f} "
                  f"{c['lut3_vs_fp32']:7.2f} {100 * c['lut3_bandwidth_fraction']:5.1f} | "
                  f"{t['numpy_fp32']['median_s'] * 1e3:8.2f} {100 * c['fp32_bandwidth_fraction']:5.1f}", flush=True)
    rows = [] if args.skip_quality else quality(rng)
    if rows:
        print("\nreconstruction error ||W - Wq|| / ||W||, group 128 (uniform = round-to-nearest ints in BCQ form)")
        print(f"{'weights':>11} {'bits':>4} {'greedy':>8} {'altern.':>8} {'uniform':>8}")
        for r in rows:
            print(f"{r['weights']:>11} {r['bits']:>4} {r['greedy']:8.4f} {r['alternating']:8.4f} {r['uniform']:8.4f}")
    result = {"machine": {**machine(), "load_average": os.getloadavg(), "streaming_GBps": bandwidth / 1e9,
                          "cpu_steal": report_steal(before)},
              "cases": cases, "quality": rows}
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)  # atomic
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
