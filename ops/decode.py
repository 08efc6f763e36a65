"""Decoding attention: a few new query tokens against a KV cache with a length per sequence.

q is (B, H, T, D) with T small (1 for plain decoding, a few for speculative steps); the caches
are (B, Hkv, capacity, D) and ``lengths[b]`` (int32) says how many cached tokens sequence b
has, the T new ones included (they are the last T). Query t sees cached tokens
j <= lengths[b] - T + t.

One program serves one KV head and all GROUP = H / Hkv query heads that share it (their
GROUP * T query rows form one tile, so each K/V tile is read once per group). When
B * Hkv programs cannot fill the machine, the cache is split along its length (split-K,
"flash decoding"): each split writes its partial output and log-sum-exp, and a small combine
kernel merges them with weights exp2(lse_s - max lse).
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import (backend_space, check_rank, check_scalar, choose_config, fits_local_memory, output_like,
                      pick_backend, torch_op)
from .attention import online_softmax
from .attn_checks import check_head_dim, check_kv_pair, head_tile, next_pow2
from .spec import OpSpec

LOG2E = 1.4426950408889634
NEG_BIG = -1.0e30


@tc.kernel
def decode_kernel(Q, K, V, Lens, O, OP, LP, scale_log2, chunk, GROUP: tc.constexpr, BT: tc.constexpr,
                  BN: tc.constexpr, BD: tc.constexpr, SPLIT: tc.constexpr = False):
    sid, g, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    length = tc.load(Lens, (b,), (None,))
    t_new = Q.shape[2]
    # 16-bit inputs keep 16-bit dot operands and scale the fp32 scores, as in ops/attention.py
    q = tc.reshape(tc.load(Q, (b, g * GROUP, 0, 0), (None, GROUP, BT, BD)), (GROUP * BT, BD))
    if Q.dtype == tc.float32:
        q = q * scale_log2
    start = sid * chunk
    stop = tc.minimum(length, start + chunk)
    # query row r is token t = r % BT of its head; it sees keys j <= length - T + t
    last = (length - t_new) + tc.arange(GROUP * BT) % BT
    m_i = tc.full((GROUP * BT,), NEG_BIG, tc.float32)
    l_i = tc.zeros((GROUP * BT,), tc.float32)
    acc = tc.zeros((GROUP * BT, BD), tc.float32)
    for n in tc.range(start, stop, BN):
        k = tc.load(K, (b, g, n, 0), (None, None, BN, BD))
        s = tc.dot(q, tc.trans(k))
        if Q.dtype != tc.float32:
            s = s * scale_log2
        cols = n + tc.arange(BN)
        s = tc.where((cols[None, :] <= last[:, None]) & (cols[None, :] < stop), s, -math.inf)
        m_new, p, alpha, l_i = online_softmax(m_i, l_i, s)
        v = tc.load(V, (b, g, n, 0), (None, None, BN, BD))
        acc = tc.dot(p.to(V.dtype), v, acc * alpha[:, None])
        m_i = m_new
    finish(O, OP, LP, acc, m_i, l_i, b, g, sid, GROUP, BT, BD, SPLIT)


@tc.func
def finish(O, OP, LP, acc, m_i, l_i, b, g, sid, GROUP, BT, BD, SPLIT):
    """Write the normalized output, or (split-K) this split's output and log2-sum-exp.
    A split may hold no key a row can see: l = 0 there, so its output is 0 and its lse -inf."""
    out = acc / tc.maximum(l_i, 1e-30)[:, None]
    if SPLIT:
        tc.store(OP, (b, g * GROUP, sid, 0, 0), tc.reshape(out, (GROUP, BT, BD)), (None, GROUP, None, BT, BD))
        tc.store(LP, (b, g * GROUP, sid, 0), tc.reshape(m_i + tc.log2(l_i), (GROUP, BT)), (None, GROUP, None, BT))
    else:
        tc.store(O, (b, g * GROUP, 0, 0), tc.reshape(out, (GROUP, BT, BD)), (None, GROUP, BT, BD))


@tc.kernel
def combine_kernel(OP, LP, O, NS: tc.constexpr, BT: tc.constexpr, BD: tc.constexpr):
    """Merge NS split results of one (batch, head): weights 2**(lse_s - max lse)."""
    h, b = tc.program_id(0), tc.program_id(1)
    lse = tc.load(LP, (b, h, 0, 0), (None, None, NS, BT), padding=-math.inf)
    top = tc.max(lse, 0)
    w = tc.exp2(lse - top[None, :])
    parts = tc.load(OP, (b, h, 0, 0, 0), (None, None, NS, BT, BD))
    out = tc.sum(parts * w[:, :, None], 0) / tc.sum(w, 0)[:, None]
    tc.store(O, (b, h, 0, 0), out, (None, None, BT, BD))


TILES = [Param("BN", (16, 32, 64, 128, 256, 512, 1024)), Param("BD", (16, 32, 64, 128, 256)),
         Param("NS", (1, 2, 4, 8, 16, 32, 64))]


# K/V tiles, up to 16 query rows and their scores must fit the target's fast local memory (fp32)
_fits = fits_local_memory(lambda cfg: 4 * (2 * cfg["BN"] * cfg["BD"] + 2 * 16 * cfg["BD"] + 16 * cfg["BN"]), ("BN", "BD"))


# GPUs: a key tile of 1024 x 128 fp32 is 512 KB, several times a thread block's shared memory.
GPU_TILES = [Param("BN", (16, 32, 64, 128)), TILES[1], TILES[2]]


def space(backend: str = "numba"):
    return backend_space(TILES if backend == "numba" else GPU_TILES, [_fits], backend)


def target_programs(backend: str) -> int:
    """Programs that keep the device busy: a few per CPU thread, two waves of GPU SMs."""
    if backend == "numba":
        return 4 * (os.cpu_count() or 2)
    return 264


def default_config(shape: dict, backend: str = "numba") -> dict:
    """Split the cache only when batch x kv heads cannot fill the device and the cache is long.
    GPUs: key tiles of at most 16 KB in fp32 (64 x 128 spilled under Triton for sm_80; 32 x 128
    did not, at 96 registers and 74 KB of pipelined shared memory)."""
    d = shape["D"]
    bn = 256 if backend == "numba" else max(16, min(64, 4096 // next_pow2(d)))
    programs = shape["B"] * shape["Hkv"]
    ns = 1
    while ns < 64 and programs * ns < target_programs(backend) and shape["L"] >= 2 * ns * bn * 2:
        ns *= 2
    cfg = {"BN": bn, "BD": head_tile(d, backend), "NS": ns}
    if backend == "numba":
        cfg["dot"] = "blas"
    elif backend == "triton":
        cfg.update(num_warps=4, num_stages=3)   # Triton's own defaults, said so the cost model sees them
    return cfg


def check_lengths(lengths: Any, batch: int, capacity: int, t_new: int) -> None:
    info = check_rank("lengths", lengths, 1, ("int32",))
    if info.shape != (batch,):
        raise tc.InputError(f"lengths must have shape ({batch},), got {info.shape}")
    if info.device == "cpu":
        host = np.asarray(lengths)
        if host.size and (host.min() < t_new or host.max() > capacity):
            raise tc.InputError(f"lengths must lie in [{t_new}, {capacity}] (the {t_new} new tokens are already "
                                f"in a cache of capacity {capacity}), got {host.min()}..{host.max()}")


def decode_attention(q: Any, k_cache: Any, v_cache: Any, lengths: Any, *, scale: float | None = None,
                     backend: str | None = None, config: dict | None = None) -> Any:
    """Attention of T new tokens per sequence over the first lengths[b] cached tokens.

    q: (B, H, T, D); k_cache, v_cache: (B, Hkv, capacity, D); lengths: (B,) int32 with
    T <= lengths[b] <= capacity. Returns (B, H, T, D) like q.
    """
    traced = torch_op("decode_attention", (q, k_cache, v_cache), backend, config)
    if traced is not None:
        return traced(q, k_cache, v_cache, lengths, scale)
    iq = check_rank("q", q, 4)
    bsz, heads, t_new, d = iq.shape
    check_head_dim(d)
    if t_new < 1:
        raise tc.InputError("q needs at least one new token (axis 2)")
    ik, _ = check_kv_pair(k_cache, v_cache, bsz, heads, d, iq.dtype, ("k_cache", "v_cache"))
    kv_heads, capacity = ik.shape[1], ik.shape[2]
    check_lengths(lengths, bsz, capacity, t_new)
    be = pick_backend({"q": q, "k_cache": k_cache, "v_cache": v_cache, "lengths": lengths}, backend)
    shape = {"B": bsz, "H": heads, "Hkv": kv_heads, "T": t_new, "L": capacity, "D": d}
    cfg = choose_config("decode_attention", shape, iq.dtype.name, be, iq.device, config, space(be),
                        default_config(shape, be))
    out = output_like(q, (bsz, heads, t_new, d), iq.dtype)
    if bsz == 0:
        return out
    scale = 1.0 / math.sqrt(d) if scale is None else check_scalar("scale", scale)
    launch_decode(decode_kernel, (q, k_cache, v_cache, lengths), out, scale * LOG2E, capacity, shape, cfg, be)
    return out


def launch_decode(kernel, inputs: tuple, out: Any, scale_log2: float, capacity: int, shape: dict, cfg: dict,
                  be: str, **constexprs) -> None:
    """Run a decode kernel (plain or quantized) with or without split-K, then combine."""
    if cfg["BD"] < shape["D"]:
        raise tc.ConfigError(f"decode config BD={cfg['BD']} is smaller than head_dim {shape['D']}")
    bsz, heads, kv_heads, t_new = shape["B"], shape["H"], shape["Hkv"], shape["T"]
    group, bt = heads // kv_heads, t_new
    tiles = {k: v for k, v in cfg.items() if k != "NS"}
    ns = max(1, min(cfg["NS"], cdiv_host(capacity, cfg["BN"])))
    chunk = cdiv_host(cdiv_host(max(capacity, 1), ns), cfg["BN"]) * cfg["BN"]
    if ns == 1:
        kernel[(1, kv_heads, bsz)](*inputs, out, out, out, scale_log2, chunk, backend=be, GROUP=group, BT=bt,
                                   SPLIT=False, **tiles, **constexprs)
        return
    part = output_like(out, (bsz, heads, ns, bt, shape["D"]), tc.float32)
    lse = output_like(out, (bsz, heads, ns, bt), tc.float32)
    kernel[(ns, kv_heads, bsz)](*inputs, out, part, lse, scale_log2, chunk, backend=be, GROUP=group, BT=bt,
                                SPLIT=True, **tiles, **constexprs)
    extra = {"dot": cfg["dot"]} if "dot" in cfg else {}
    combine_kernel[(heads, bsz)](part, lse, out, backend=be, NS=ns, BT=bt, BD=cfg["BD"], **extra)


def reference(inputs: dict) -> np.ndarray:
    """Per sequence: softmax over its first lengths[b] keys, causal among the new tokens."""
    q = np.asarray(inputs["q"], np.float64)
    k, v = np.asarray(inputs["k_cache"], np.float64), np.asarray(inputs["v_cache"], np.float64)
    lengths = np.asarray(inputs["lengths"])
    group = q.shape[1] // k.shape[1]
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    t_new = q.shape[2]
    out = np.zeros(q.shape)
    for b in range(q.shape[0]):
        n = int(lengths[b])
        kb, vb = np.repeat(k[b, :, :n], group, axis=0), np.repeat(v[b, :, :n], group, axis=0)
        s = np.einsum("htd,hkd->htk", q[b], kb) * scale
        visible = np.arange(n)[None, :] <= (n - t_new + np.arange(t_new))[:, None]
        s = np.where(visible[None], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[b] = np.einsum("htk,hkd->htd", p / p.sum(-1, keepdims=True), vb)
    return out


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    b, h, hkv, t, cap, d = (shape[n] for n in ("B", "H", "Hkv", "T", "L", "D"))
    lengths = rng.integers(max(t, cap // 2), cap + 1, size=b).astype(np.int32)
    return {"q": random_array((b, h, t, d), dtype, rng), "k_cache": random_array((b, hkv, cap, d), dtype, rng),
            "v_cache": random_array((b, hkv, cap, d), dtype, rng), "lengths": lengths}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return decode_attention(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["lengths"],
                            scale=inputs.get("scale"), backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    dd = dtypes.lookup(dtype)
    split = config.get("NS", 1) > 1
    types = {"Q": TensorType(4, dd), "K": TensorType(4, dd), "V": TensorType(4, dd),
             "Lens": TensorType(1, dtypes.int32), "O": TensorType(4, dd),
             "OP": TensorType(5 if split else 4, dtypes.float32 if split else dd),
             "LP": TensorType(4, dtypes.float32 if split else dd),
             "scale_log2": TileType((), dtypes.float32), "chunk": TileType((), dtypes.int64)}
    constexprs, _ = decode_kernel.split_config({k: v for k, v in config.items() if k != "NS"})
    constexprs = {"GROUP": shape["H"] // shape["Hkv"], "BT": shape["T"], "SPLIT": split, **constexprs}
    fn = decode_kernel.ir(types, constexprs)
    return decode_kernel, fn, (config.get("NS", 1), shape["Hkv"], shape["B"])


SPEC = OpSpec(
    name="decode_attention", doc=__doc__.strip().splitlines()[0],
    kernels={"decode": decode_kernel, "combine": combine_kernel},
    shape_names=("B", "H", "Hkv", "T", "L", "D"), space=space, default_config=default_config,
    make_inputs=make_inputs, run=run, reference=reference,
    flops=lambda s: 4.0 * s["B"] * s["H"] * s["T"] * s["L"] * s["D"],
    bytes=lambda s, dtype: float(4 if dtype == "float32" else 2)
    * (2 * s["B"] * s["Hkv"] * s["L"] * s["D"] + 2 * s["B"] * s["H"] * s["T"] * s["D"]),
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (2e-4, 2e-4) if dtype == "float32" else (2e-2, 2e-2),
    extra={"fixed_by_shape": ("BD",),   # the head size, padded
           "test_shapes": [{"B": 2, "H": 4, "Hkv": 2, "T": 1, "L": 33, "D": 16},
                           {"B": 1, "H": 2, "Hkv": 2, "T": 2, "L": 70, "D": 32}],
           "compile_shape": {"B": 1, "H": 32, "Hkv": 8, "T": 1, "L": 16384, "D": 128}},
)
