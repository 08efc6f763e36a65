"""Decode through an MLP block whose weights are int4 (up-projection) and 3-bit LUT-GEMM
(down-projection), token by token, and compare with the float block.

    python examples/quantized_mlp.py [--hidden 1024] [--tokens 16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import ops


def main(hidden: int, tokens: int) -> None:
    rng = np.random.default_rng(0)
    w_up = (rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden)).astype(np.float32)
    w_down = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(4 * hidden)).astype(np.float32)
    up = ops.quantize(w_up, bits=4, group_size=128)                                   # (K, N) layout
    down = ops.bcq_quantize(w_down, bits=3, group_size=128, method="alternating")
    print(f"weights: fp32 {(w_up.nbytes + w_down.nbytes) / 2**20:.1f} MiB -> "
          f"int4 + 3-bit BCQ {(up.nbytes + down.nbytes) / 2**20:.1f} MiB")

    def block(x, up_op, down_op):
        h = up_op(x)
        h = h * (1 / (1 + np.exp(-h)))             # SiLU
        return down_op(h)

    x = rng.standard_normal(hidden).astype(np.float32)
    quantized = lambda v: block(v, lambda a: ops.quant_gemm(a, up), lambda a: ops.lut_gemm(a, down))  # noqa: E731
    floating = lambda v: block(v, lambda a: a @ w_up, lambda a: a @ w_down)  # noqa: E731
    quantized(x)  # compile once
    for name, fn in (("tilec int4 + LUT-GEMM", quantized), ("NumPy fp32", floating)):
        v, t = x.copy(), time.perf_counter()
        for _ in range(tokens):
            v = fn(v) / np.float32(np.sqrt(hidden))  # keep fp32 (NumPy 2 promotes with float64 scalars)
        print(f"{name:22s} {(time.perf_counter() - t) / tokens * 1e3:7.2f} ms/token")
    err = np.linalg.norm(quantized(x) - floating(x)) / np.linalg.norm(floating(x))
    print(f"relative difference of one block's output: {err:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=16)
    a = p.parse_args()
    main(a.hidden, a.tokens)
