"""Attention forward, FlashAttention-2 style: O = softmax(scale * Q K^T [+ causal mask]) V.

Q is (batch, heads, Lq, D); K and V are (batch, kv_heads, Lk, D) with heads a multiple of
kv_heads (grouped-query attention: query head h reads KV head h // (heads // kv_heads)).
One program owns BM query rows of one head: it keeps its Q tile, streams K/V in BN-row tiles
with an online softmax (running row max m and row sum l, rescaling the accumulator only by
exp2(m_old - m_new)), and divides by l once at the end, so the Lq x Lk score matrix never
exists. Scores are pre-scaled by scale * log2(e) so the exponentials are exp2. Causal masking
is aligned to the end: query i sees key j when j <= i + (Lk - Lq); a causal program stops at
its last visible key tile.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import (backend_space, check_scalar, choose_config, fits_local_memory, output_like, pick_backend,
                      torch_op)
from .attn_checks import check_qkv, head_tile, next_pow2
from . import attn_masks
from .attn_masks import PARTIAL, SKIP, UNBOUNDED
from .spec import OpSpec

LOG2E = 1.4426950408889634
NEG_BIG = -1.0e30  # running-max start: finite, so exp2(m_old - m_new) is never inf - inf


@tc.func
def online_softmax(m_i, l_i, s):
    """One step of the streaming softmax over a block of base-2 scores ``s`` (rows x keys): the
    new running max, the block's weights, the factor that rescales what came before, the new sum."""
    m_new = tc.maximum(m_i, tc.max(s, 1))
    p = tc.exp2(s - m_new[:, None])
    alpha = tc.exp2(m_i - m_new)
    return m_new, p, alpha, l_i * alpha + tc.sum(p, 1)


@tc.func
def key_bounds(LO, HI, row0, m0, lq, lk, left, right, BM, CAUSAL, WIN, SPANS):
    """Per query row of the block, the half-open range [lo, hi) of keys it sees: all of them,
    or (SPANS) the packed batch's ranges from row ``row0`` on, cut by the causal mask and the
    window with positions aligned to the end (row i is at key position i + lk - lq)."""
    pos = m0 + tc.arange(BM) + (lk - lq)
    if SPANS:
        lo = tc.load(LO, (row0,), (BM,))
        hi = tc.load(HI, (row0,), (BM,))
    else:
        lo = tc.zeros((BM,), tc.int32)
        hi = tc.full((BM,), lk, tc.int32)
    if CAUSAL:
        hi = tc.minimum(hi, pos + 1)
    if WIN:
        lo = tc.maximum(lo, pos - left)
        hi = tc.minimum(hi, pos + right + 1)
    return lo, hi


@tc.kernel
def attention_kernel(Q, K, V, O, LSE, M, MAP, LO, HI, CU, scale_log2, left, right, BM: tc.constexpr,
                     BN: tc.constexpr, BD: tc.constexpr, GROUP: tc.constexpr = 1, CAUSAL: tc.constexpr = False,
                     HAS_LSE: tc.constexpr = False, WIN: tc.constexpr = False, SPANS: tc.constexpr = False,
                     MASK: tc.constexpr = 0):
    # MASK: 0 = none, else 1 + 2 (one per batch) + 4 (per head) + 8 (per query row); a mask
    # dimension without its bit has extent 1 and is read at 0.
    # SPANS (packed batches): Q, K, V, O are one (1, H, total, D) batch, LSE (1, H, total);
    # program b serves sequence b, whose query rows are CU[b] .. CU[b + 1]. Its stores stop at
    # the sequence's end (tc.limit: the next sequence's rows belong to another program). With
    # SPANS or a window, K / V tiles stop at the block's last visible key, so BLAS multiplies
    # no keys past it.
    pm, h, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    kvh = h // GROUP
    m0 = pm * BM
    row0, nrows, qb = m0, lq, b
    if SPANS:
        first, end = tc.load(CU, (b,), (None,)), tc.load(CU, (b + 1,), (None,))
        row0, nrows, qb = m0 + first, end - first, 0
        O = tc.limit(O, (None, None, end, None))
        if HAS_LSE:
            LSE = tc.limit(LSE, (None, None, end))
    # 16-bit inputs keep 16-bit dot operands (q as loaded, the weights p below; fp32
    # accumulation), as FlashAttention does: fp32 operands would cost GPUs their tensor cores.
    # Their scale goes on the fp32 scores (a scaled q rounded to bf16 moved the LSE by 1e-3).
    q = tc.load(Q, (qb, h, row0, 0), (None, None, BM, BD))
    if Q.dtype == tc.float32:
        q = q * scale_log2
    m_i = tc.full((BM,), NEG_BIG, tc.float32)
    l_i = tc.zeros((BM,), tc.float32)
    acc = tc.zeros((BM, BD), tc.float32)
    # visit only the key tiles some row of the block sees; tiles inside every row's range
    # skip the pass that masks the scores (rows past the end constrain neither). Without
    # ranges every row sees all keys: no per-row bounds are held (registers on GPUs).
    start, stop, inner_lo, inner_hi = 0, lk, 0, lk
    if SPANS or CAUSAL or WIN:
        lo, hi = key_bounds(LO, HI, row0, m0, lq, lk, left, right, BM, CAUSAL, WIN, SPANS)
        valid = m0 + tc.arange(BM) < nrows
        start = tc.maximum(tc.min(tc.where(valid, lo, UNBOUNDED), 0), 0)
        if MASK:
            start = start // BN * BN        # the block map's tiles
        stop = tc.minimum(tc.max(tc.where(valid, hi, 0), 0), lk)
        inner_lo, inner_hi = tc.max(tc.where(valid, lo, 0), 0), tc.min(tc.where(valid, hi, UNBOUNDED), 0)
        if SPANS or WIN:
            K = tc.limit(K, (None, None, stop, None))
            V = tc.limit(V, (None, None, stop, None))
    for n in tc.range(start, stop, BN):
        kind = PARTIAL
        if MASK:
            # the host's block map: a fully masked tile is skipped, an unmasked one not read
            kind = tc.load(MAP, (b * (MASK // 2 % 2), h * (MASK // 4 % 2), pm * (MASK // 8), n // BN),
                           (None, None, None, None))
        if kind != SKIP:
            k = tc.load(K, (qb, kvh, n, 0), (None, None, BN, BD))
            s = tc.dot(q, tc.trans(k))
            if Q.dtype != tc.float32:
                s = s * scale_log2
            if n < inner_lo or n + BN > inner_hi:
                cols = n + tc.arange(BN)
                if SPANS or CAUSAL or WIN:
                    s = tc.where((cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None]), s, -math.inf)
                else:
                    s = tc.where(cols[None, :] < lk, s, -math.inf)
            if MASK:
                if kind == PARTIAL:
                    s = s + mask_tile(M, b * (MASK // 2 % 2), h * (MASK // 4 % 2), m0, n, BM, BN, MASK // 8)
            m_new, p, alpha, l_i = online_softmax(m_i, l_i, s)
            v = tc.load(V, (qb, kvh, n, 0), (None, None, BN, BD))
            acc = tc.dot(p.to(V.dtype), v, acc * alpha[:, None])
            m_i = m_new
    # a row that saw no key has l = 0 and acc = 0: its output is 0 and its LSE -inf
    tc.store(O, (qb, h, row0, 0), acc / tc.maximum(l_i, 1e-30)[:, None], (None, None, BM, BD))
    if HAS_LSE:
        # natural-log log-sum-exp of the scaled scores, per query row
        tc.store(LSE, (qb, h, row0), (m_i + tc.log2(l_i)) / LOG2E, (None, None, BM))


@tc.func
def mask_tile(M, mb, mh, m0, n, BM, BN, ROWS):
    """The additive mask's (BM, BN) tile (log2 units); a mask shared by all rows is one row."""
    if ROWS:
        t = tc.load(M, (mb, mh, m0, n), (None, None, BM, BN))
    else:
        t = tc.load(M, (mb, mh, 0, n), (None, None, None, BN))[None, :]
    return t


TILES = [Param("BM", (16, 32, 64, 128, 256, 512)), Param("BN", (16, 32, 64, 128, 256, 512)),
         Param("BD", (16, 32, 64, 128, 256))]


# Q, K, V, score and accumulator tiles must fit the target's fast local memory (fp32)
_fits = fits_local_memory(lambda cfg: 4 * (2 * cfg["BM"] * cfg["BD"] + 2 * cfg["BN"] * cfg["BD"] + cfg["BM"] * cfg["BN"]), ("BM", "BN", "BD"))


# GPUs hold a program's scores (BM, BN) and its Q / accumulator (BM, BD) in registers; a
# 256 x 512 score tile is what a CPU's L2 takes, not a thread block.
GPU_TILES = [Param("BM", (16, 32, 64, 128)), Param("BN", (16, 32, 64, 128)), TILES[2]]


def space(backend: str = "numba"):
    return backend_space(TILES if backend == "numba" else GPU_TILES, [_fits], backend)


def default_config(shape: dict, backend: str = "numba") -> dict:
    """Numba: head_dim exactly (no padded lanes) and 256 x 256 tiles. Since the BLAS products
    read K/V in place and add into the accumulator, bigger tiles win: at d 64, B=1 H=8 on a
    2-core Zen 4 (one thread, CPU time, same runs) 256 x 128 took 0.89-0.90x the time of
    128 x 64 at seq 1024-4096 full and 0.95x causal. 256 x 256 against 256 x 128 (two threads,
    two interleaved sweeps on 2026-12-03, seq 1024-4096, full and causal): 0.945-1.031x the
    time, 0.98x on average; its scores and weights (2 x 256 KB) take half the 1 MB L2, and
    256 x 512 was no faster (0.92-0.99x full, 1.04-1.21x causal). Without the mask, 512 query
    rows take 0.93x the time of 256 x 256 again (512 x 256 against 256 x 128, interleaved,
    seq 1024/2048/4096: 0.925/0.933/0.921x; 256 x 256 0.983/0.977/0.970x): each K/V tile BLAS
    packs serves twice the rows. Causal, the coarser diagonal and fewer, unequal programs cost
    more than that (seq 2048: 1.084x, 4096: 0.989x). Measured at d 64 only, so d <= 64 only.
    A sliding window (shape["window"] true) takes at most 64 x 64: a row block visits the
    keys its band touches, and smaller tiles waste less at the band's two edges.
    GPUs: 64 x 64 up to head size 64,
    smaller tiles above (Triton, fp32, compiled for sm_80: 64 x 64 x 64 at 4 warps used 255
    registers and spilled; at 8 warps, and 32 x 32 x 128 or 16 x 32 x 256 at 8 warps, nothing
    spills and the shared memory fits sm_89's 99 KB)."""
    d = shape["D"]
    if backend == "numba":
        lq = shape["Lq"]
        bm = 256 if lq >= 256 else 128 if lq >= 128 else max(16, next_pow2(lq))
        if lq >= 1024 and d <= 64 and not shape.get("causal") and not shape.get("window"):
            bm = 512
        bn = 256 if shape["Lk"] >= 256 else 128 if shape["Lk"] >= 128 else 64
        if shape.get("window"):
            bm, bn = min(bm, 64), min(bn, 64)
        return {"BM": bm, "BN": bn, "BD": head_tile(d, backend), "dot": "blas"}
    bd = head_tile(d, backend)
    cfg = {"BM": 64 if bd <= 64 else 32 if bd == 128 else 16, "BN": 64 if bd <= 64 else 32, "BD": bd}
    if backend == "triton":
        cfg.update(num_warps=8, num_stages=3 if bd <= 128 else 2)
    return cfg


def attention(q: Any, k: Any, v: Any, *, causal: bool = False, mask: Any = None, window: Any = None,
              scale: float | None = None, return_lse: bool = False, backend: str | None = None,
              config: dict | None = None) -> Any:
    """softmax(scale * q @ k^T + mask) @ v per (batch, head), fp32 accumulation.

    q: (B, H, Lq, D); k, v: (B, Hkv, Lk, D) with H % Hkv == 0, D in 8..256. ``causal`` aligns
    the mask to the end (query i sees keys j <= i + Lk - Lq) and needs Lq <= Lk.
    ``mask``: bool (True = attend) or additive float, broadcastable to (B, H, Lq, Lk), e.g.
    (B, 1, 1, Lk) key padding or (Lq, Lk); additive values <= -1e30 count as masked. Tiles it
    masks entirely are skipped. ``window=(left, right)``: query i sees keys i + Lk - Lq - left
    .. i + Lk - Lq + right (None or -1: unbounded), combinable with ``causal``.
    A row that sees no key (fully masked, Lk = 0) gives zeros and LSE -inf, as FlashAttention.
    Returns an array like q, and with ``return_lse`` also the (B, H, Lq) fp32 log-sum-exp.
    """
    traced = torch_op("attention_lse" if return_lse else "attention", (q, k, v), backend, config)
    if traced is not None:
        return traced(q, k, v, causal, scale, mask, None if window is None else list(window))
    info = check_qkv(q, k, v, causal)
    bsz, heads, lq, d = info["q"].shape
    kv_heads, lk = info["k"].shape[1], info["k"].shape[2]
    win = attn_masks.window_bounds(window)
    add = None if mask is None else attn_masks.additive_mask(mask, bsz, heads, lq, lk)
    be = pick_backend({"q": q, "k": k, "v": v}, backend)
    shape = {"B": bsz, "H": heads, "Hkv": kv_heads, "Lq": lq, "Lk": lk, "D": d}
    cfg = choose_config("attention", shape, info["q"].dtype.name, be, info["q"].device, config, space(be),
                        default_config({**shape, "causal": bool(causal), "window": narrow_window(win, lk)}, be))
    if cfg["BD"] < d:
        raise tc.ConfigError(f"attention config BD={cfg['BD']} is smaller than head_dim {d}")
    out = output_like(q, (bsz, heads, lq, d), info["q"].dtype)
    lse = output_like(q, (bsz, heads, lq), tc.float32) if return_lse else None
    scale = 1.0 / math.sqrt(d) if scale is None else check_scalar("scale", scale)
    if lq and bsz and heads:
        if lk == 0:
            out[...] = 0
            if return_lse:
                lse[...] = -math.inf
        else:
            launch(q, k, v, out, lse, scale, add, None, win, bool(causal), cfg, be, heads // kv_heads,
                   (cdiv_host(lq, cfg["BM"]), heads, bsz))
    return (out, lse) if return_lse else out


def narrow_window(win: tuple | None, lk: int) -> bool:
    """Whether a window leaves each row under half of the keys (tile choice)."""
    return win is not None and win[0] + win[1] < lk // 2


def launch(q, k, v, out, lse, scale, add, spans, win, causal, cfg, be, group, grid) -> None:
    """One attention_kernel launch; ``add`` an additive mask from attn_masks, ``spans`` (lo, hi)
    per packed query row and the query offsets, ``win`` (left, right) or None. Unused tensor
    slots get ``out``."""
    mask_args = {}
    m = bm = lo = hi = cu = out
    if add is not None:
        m = attn_masks.like(q, add)
        bm = attn_masks.like(q, attn_masks.block_map(add, cfg["BM"], cfg["BN"]))
        mask_args = {"MASK": 1 + 2 * (add.shape[0] > 1) + 4 * (add.shape[1] > 1) + 8 * (add.shape[2] > 1)}
    if spans is not None:
        lo, hi, cu = (attn_masks.like(q, a) for a in spans)
    left, right = win or (0, 0)
    attention_kernel[grid](q, k, v, out, out if lse is None else lse, m, bm, lo, hi, cu, scale * LOG2E, left, right,
                           backend=be, GROUP=group, CAUSAL=causal, HAS_LSE=lse is not None,
                           WIN=win is not None, SPANS=spans is not None, **mask_args, **cfg)


def reference(inputs: dict, return_lse: bool = False):
    """Materialized softmax in float64 (the scores are Lq x Lk: test sizes only), with the
    optional ``mask`` (bool or additive, values <= -1e30 masked) and ``window`` applied to the
    scores; rows that see no key give zeros and LSE -inf."""
    q, k, v = (np.asarray(inputs[n], np.float64) for n in ("q", "k", "v"))
    group = q.shape[1] // max(k.shape[1], 1)
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    d = q.shape[-1]
    scale = inputs.get("scale") or 1.0 / math.sqrt(d)
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    lq, lk = q.shape[2], k.shape[2]
    pos, cols = np.arange(lq)[:, None] + (lk - lq), np.arange(lk)[None, :]
    visible = np.ones((lq, lk), bool)
    if inputs.get("causal"):
        visible &= cols <= pos
    win = attn_masks.window_bounds(inputs.get("window"))
    if win is not None:
        visible &= (cols >= pos - win[0]) & (cols <= pos + win[1])
    s = np.where(visible, s, -np.inf)
    mask = inputs.get("mask")
    if mask is not None:
        mask = attn_masks.to_host(mask, "mask")
        if mask.dtype == np.bool_:
            s = np.where(mask, s, -np.inf)
        else:
            s = s + np.where(mask <= attn_masks.MASKED_AT, -np.inf, mask.astype(np.float64))
    m = s.max(-1, keepdims=True, initial=-np.inf)
    seen = np.isfinite(m)
    p = np.exp(s - np.where(seen, m, 0))
    l = p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", np.where(seen, p / np.where(seen, l, 1), 0), v)
    if return_lse:
        return out, np.where(seen, m + np.log(np.where(seen, l, 1)), -np.inf)[..., 0]
    return out


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    b, h, hkv, lq, lk, d = (shape[n] for n in ("B", "H", "Hkv", "Lq", "Lk", "D"))
    return {"q": random_array((b, h, lq, d), dtype, rng), "k": random_array((b, hkv, lk, d), dtype, rng),
            "v": random_array((b, hkv, lk, d), dtype, rng), "causal": shape.get("causal", False)}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                     scale=inputs.get("scale"), backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    """(kernel, IR, grid) for one config, without data: for `tilec show` and the cost models.
    Optional shape keys: ``mask`` (the kernel's MASK code, e.g. 3 for a (B, 1, 1, Lk) key
    padding mask), ``window`` and ``spans`` (packed batches) as booleans."""
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    dd = dtypes.lookup(dtype)
    mask, spans = int(shape.get("mask") or 0), bool(shape.get("spans"))
    types = {"Q": TensorType(4, dd), "K": TensorType(4, dd), "V": TensorType(4, dd), "O": TensorType(4, dd),
             "LSE": TensorType(4, dd), "M": TensorType(4, dtypes.float32 if mask else dd),
             "MAP": TensorType(4, dtypes.int32 if mask else dd),
             "LO": TensorType(1, dtypes.int32) if spans else TensorType(4, dd),
             "HI": TensorType(1, dtypes.int32) if spans else TensorType(4, dd),
             "CU": TensorType(1, dtypes.int32) if spans else TensorType(4, dd),
             "scale_log2": TileType((), dtypes.float32),
             "left": TileType((), dtypes.int32), "right": TileType((), dtypes.int32)}
    constexprs, _ = attention_kernel.split_config(config)
    constexprs = {"GROUP": shape["H"] // shape.get("Hkv", shape["H"]), "CAUSAL": bool(shape.get("causal")),
                  "MASK": mask, "WIN": bool(shape.get("window")), "SPANS": spans, **constexprs}
    fn = attention_kernel.ir(types, constexprs)
    return attention_kernel, fn, (cdiv_host(shape["Lq"], config["BM"]), shape["H"], shape["B"])


def _flops(s: dict) -> float:
    """Two products of Lq x Lk x D per head; causal (Lq = Lk) does about half."""
    full = 4.0 * s["B"] * s["H"] * s["Lq"] * s["Lk"] * s["D"]
    return full / 2 if s.get("causal") else full


SPEC = OpSpec(
    name="attention", doc=__doc__.strip().splitlines()[0], kernels={"attention": attention_kernel},
    shape_names=("B", "H", "Hkv", "Lq", "Lk", "D"), space=space, default_config=default_config,
    make_inputs=make_inputs, run=run, reference=reference, flops=_flops,
    bytes=lambda s, dtype: float(4 if dtype == "float32" else 2)
    * (2 * s["B"] * s["H"] * s["Lq"] * s["D"] + 2 * s["B"] * s["Hkv"] * s["Lk"] * s["D"]),
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (2e-4, 2e-4) if dtype == "float32" else (2e-2, 2e-2),
    extra={"fixed_by_shape": ("BD",),   # the head size, padded
           "test_shapes": [{"B": 1, "H": 2, "Hkv": 1, "Lq": 17, "Lk": 33, "D": 16},
                           {"B": 2, "H": 2, "Hkv": 2, "Lq": 1, "Lk": 7, "D": 32}],
           "compile_shape": {"B": 1, "H": 8, "Hkv": 8, "Lq": 1024, "Lk": 1024, "D": 64}},
)
