"""A grouped-query attention block: prefill a prompt with the FlashAttention-style forward,
then decode new tokens against the KV cache, in fp32 and from a 2-bit KIVI cache.

    python examples/attention_block.py [--prompt 512] [--heads 8] [--kv-heads 2] [--dim 64]
"""
from __future__ import annotations

import argparse

import numpy as np

import ops


def main(prompt: int, heads: int, kv_heads: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, heads, prompt, dim)).astype(np.float32)
    k = rng.standard_normal((1, kv_heads, prompt, dim)).astype(np.float32)
    v = rng.standard_normal((1, kv_heads, prompt, dim)).astype(np.float32)

    out, lse = ops.attention(q, k, v, causal=True, return_lse=True)       # prefill, never L x L scores
    print(f"prefill: out {out.shape}, log-sum-exp {lse.shape}, finite {bool(np.isfinite(out).all())}")

    # decode: each new token's K/V joins the caches, then its query attends over everything so far.
    # The fp32 cache is preallocated; the KIVI cache keeps recent tokens exact in its residual
    # window and quantizes a key group whenever the window fills.
    steps = 4
    k_cache = np.zeros((1, kv_heads, prompt + steps, dim), np.float32)
    v_cache = np.zeros_like(k_cache)
    k_cache[:, :, :prompt], v_cache[:, :, :prompt] = k, v
    # its capacity is the array's length: room for the tokens to come
    cache = ops.quantize_kv(k_cache, v_cache, np.array([prompt], np.int32), bits=2, group=32, residual=32)
    # (on these random Gaussian caches 2-bit values carry noise of about half their spread, so the
    # outputs differ by tens of percent; the decode itself matches decoding the dequantized cache to ~1e-6)
    worst = 0.0
    for step in range(steps):
        k_new, v_new, q_new = (rng.standard_normal((1, n, 1, dim)).astype(np.float32)
                               for n in (kv_heads, kv_heads, heads))
        length = prompt + step + 1
        k_cache[:, :, length - 1:length], v_cache[:, :, length - 1:length] = k_new, v_new
        ops.append_kv(cache, k_new, v_new)
        exact = ops.decode_attention(q_new, k_cache, v_cache, np.array([length], np.int32))
        approx = ops.decode_attention_quantized(q_new, cache)
        worst = max(worst, float(np.linalg.norm(approx - exact) / np.linalg.norm(exact)))
    print(f"decode {steps} tokens: fp32 cache {k_cache.nbytes + v_cache.nbytes} B, 2-bit KIVI cache "
          f"{cache.nbytes} B ({int(cache.q_len[0])} tokens quantized, {int(cache.r_len[0])} exact); "
          f"largest relative difference of the attention output {worst:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    a = p.parse_args()
    main(a.prompt, a.heads, a.kv_heads, a.dim)
