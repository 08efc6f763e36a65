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

    # one new token: append its K/V to the cache and attend over everything so far
    lengths = np.array([prompt + 1], np.int32)
    k_cache = np.concatenate([k, rng.standard_normal((1, kv_heads, 1, dim)).astype(np.float32)], axis=2)
    v_cache = np.concatenate([v, rng.standard_normal((1, kv_heads, 1, dim)).astype(np.float32)], axis=2)
    q_new = rng.standard_normal((1, heads, 1, dim)).astype(np.float32)
    exact = ops.decode_attention(q_new, k_cache, v_cache, lengths)

    cache = ops.quantize_kv(k_cache, v_cache, lengths, bits=2, group=32, residual=32)
    approx = ops.decode_attention_quantized(q_new, cache)
    err = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    print(f"decode: fp32 cache {k_cache.nbytes + v_cache.nbytes} B vs 2-bit KIVI cache; "
          f"relative difference of the attention output {err:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    a = p.parse_args()
    main(a.prompt, a.heads, a.kv_heads, a.dim)
