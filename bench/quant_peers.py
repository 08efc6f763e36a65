"""Quantized layers against the kernels a CPU user would pick, timed interleaved in one run with
caches flushed between calls (medians): tilec int4 / int8 (exact fp32 activations, and
``act_quant="int8"``: integer dot products on int8-quantized activations, the ``_q8`` rows) /
3-bit LUT-GEMM against torch's
``_weight_int4pack_mm_for_cpu`` (bf16 activations, its fast path) and ``_weight_int8pack_mm``,
the weight-stream time (4-bit bytes / this machine's measured read bandwidth), and at large M
tilec's own fp32 GEMM on the dequantized weight.

    python -m bench.quant_peers --json bench/results/quant_peers.json [--sizes 4096 8192]
        [--rows 1 8] [--large 4096] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import ops

from .timing import cpu_times, interleaved_samples, machine, report_steal, write_json


def torch_int4(w: np.ndarray, group: int):
    """torch's CPU int4 weight and its matmul (asymmetric codes, bf16 scales and zeros)."""
    import torch
    k, n = w.shape
    wt = torch.from_numpy(w.T.copy())                                     # (N, K)
    g = wt.reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    codes = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = lo + 8 * scale                                                 # torch: w = (q - 8) * s + z
    sz = torch.stack([scale.t(), zero.t()], -1).to(torch.bfloat16).contiguous()   # (K/G, N, 2)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, sz)


def torch_int8(w: np.ndarray):
    import torch
    wt = torch.from_numpy(w.T.copy())
    scale = wt.abs().amax(1) / 127
    q = (wt / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scale.to(x.dtype))


def decode_case(k: int, m: int, repeats: int, bandwidth: float, rng) -> dict:
    import torch
    w = (rng.standard_normal((k, k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    xb, xf = torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(x)
    q4, q8 = ops.quantize(w, 4, 128), ops.quantize(w, 8, 128)
    bw = ops.bcq_quantize(w, 3, 128, "greedy")
    t4, t8 = torch_int4(w, 128), torch_int8(w)
    fns = {"tilec_int4": lambda: ops.quant_gemm(x, q4), "tilec_int8": lambda: ops.quant_gemm(x, q8),
           "tilec_int4_q8": lambda: ops.quant_gemm(x, q4, act_quant="int8"),
           "tilec_int8_q8": lambda: ops.quant_gemm(x, q8, act_quant="int8"),
           "tilec_lut3": lambda: ops.lut_gemm(x, bw), "torch_int4_bf16": lambda: t4(xb),
           "torch_int8_fp32": lambda: t8(xf), "numpy_fp32": lambda: x @ w}
    from ops.quant_q8 import act_quant_bound
    for name, qw in (("tilec_int4", q4), ("tilec_int8", q8), ("tilec_lut3", bw), ("tilec_int4_q8", q4),
                     ("tilec_int8_q8", q8)):   # right before fast
        ref = x.astype(np.float64) @ qw.dequantize()
        diff = np.abs(fns[name]() - ref)
        if name.endswith("_q8"):     # held to the documented activation-rounding bound instead
            bad = (diff > act_quant_bound(x, qw) * (1 + 1e-4) + 1e-5 * np.abs(ref).max()).any()
            err = diff.max() / max(np.abs(ref).max(), 1e-30) if bad else 0.0
        else:
            err = diff.max() / max(np.abs(ref).max(), 1e-30)
        if err > 1e-3:
            raise SystemExit(f"{name} K=N={k} M={m}: relative error {err:.2e}")
    med = {n: float(np.median(v)) for n, v in interleaved_samples(fns, repeats, flush=True).items()}
    stream = k * k / 2 / bandwidth
    return {"K": k, "N": k, "M": m,
            "int4_q8_vs_torch_int4": med["torch_int4_bf16"] / med["tilec_int4_q8"],
            "int4_q8_vs_stream": med["tilec_int4_q8"] / stream,
            "int8_q8_vs_torch_int8": med["torch_int8_fp32"] / med["tilec_int8_q8"],
            "lut3_vs_tilec_int4_q8": med["tilec_int4_q8"] / med["tilec_lut3"],
            "int4_weight_stream_s": stream,
            "int4_vs_stream": med["tilec_int4"] / stream,
            "int4_vs_torch_int4": med["torch_int4_bf16"] / med["tilec_int4"],
            "int8_vs_torch_int8": med["torch_int8_fp32"] / med["tilec_int8"],
            "lut3_vs_tilec_int4": med["tilec_int4"] / med["tilec_lut3"], "median_s": med}


def large_case(m: int, k: int, repeats: int, rng) -> dict:
    w = (rng.standard_normal((k, k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    q4, q8 = ops.quantize(w, 4, 128), ops.quantize(w, 8, 128)
    bw = ops.bcq_quantize(w, 3, 128, "greedy")
    wd = q4.dequantize()
    fns = {"tilec_fp32_gemm": lambda: ops.gemm(x, wd), "tilec_int4": lambda: ops.quant_gemm(x, q4),
           "tilec_int8": lambda: ops.quant_gemm(x, q8), "tilec_lut3": lambda: ops.lut_gemm(x, bw)}
    med = {n: float(np.median(v)) for n, v in interleaved_samples(fns, repeats, flush=True).items()}
    return {"K": k, "N": k, "M": m, "median_s": med,
            **{f"{n[6:]}_vs_fp32_gemm": med["tilec_fp32_gemm"] / med[n] for n in ("tilec_int4", "tilec_int8", "tilec_lut3")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--large", type=int, nargs="*", default=[4096], help="M of the large-M cases (K=N=4096)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    before = cpu_times()
    from hw_profiles.hostdetect import measure
    bandwidth = measure()["stream_read_bytes_per_s"]
    print(f"read bandwidth (tilec profiles calibrate's probe): {bandwidth / 1e9:.1f} GB/s", flush=True)
    decode, large = [], []
    for k in args.sizes:
        for m in args.rows:
            c = decode_case(k, m, args.repeats, bandwidth, rng)
            decode.append(c)
            t = c["median_s"]
            print(f"K=N={k} M={m}: int4 {t['tilec_int4'] * 1e3:.2f} ms ({c['int4_vs_stream']:.1f}x stream "
                  f"{c['int4_weight_stream_s'] * 1e3:.2f} ms, {c['int4_vs_torch_int4']:.2f}x torch int4 "
                  f"{t['torch_int4_bf16'] * 1e3:.2f}); int8 {t['tilec_int8'] * 1e3:.2f} ms "
                  f"({c['int8_vs_torch_int8']:.2f}x torch {t['torch_int8_fp32'] * 1e3:.2f}); lut3 "
                  f"{t['tilec_lut3'] * 1e3:.2f} ms ({c['lut3_vs_tilec_int4']:.2f}x int4)", flush=True)
            print(f"  int8 activations: int4 {t['tilec_int4_q8'] * 1e3:.2f} ms ({c['int4_q8_vs_stream']:.1f}x stream, "
                  f"{c['int4_q8_vs_torch_int4']:.2f}x torch int4); int8 {t['tilec_int8_q8'] * 1e3:.2f} ms "
                  f"({c['int8_q8_vs_torch_int8']:.2f}x torch int8)", flush=True)
    for m in args.large:
        c = large_case(m, 4096, max(3, args.repeats // 2), rng)
        large.append(c)
        print(f"M={m} K=N=4096: fp32 GEMM {c['median_s']['tilec_fp32_gemm']:.3f} s; int4 "
              f"{c['int4_vs_fp32_gemm']:.2f}x, int8 {c['int8_vs_fp32_gemm']:.2f}x, lut3 "
              f"{c['lut3_vs_fp32_gemm']:.2f}x of it", flush=True)
    write_json(args.json, {"machine": {**machine(), "load_average": os.getloadavg(),
                                       "read_GBps": bandwidth / 1e9, "cpu_steal": report_steal(before)},
                           "decode": decode, "large": large})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
