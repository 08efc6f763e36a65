"""Attention backward, FlashAttention-2 style: dQ, dK, dV of O = softmax(scale * Q K^T) V.

Three kernels, none of which holds an Lq x Lk matrix:
- ``attention_bwd_preprocess``: D = rowsum(dO * O) per query row (fp32);
- ``attention_bwd_dkdv``: one program owns BN key rows of one KV head and streams the query
  rows of every query head of its group (GQA sums there): it recomputes the transposed
  weights P^T = exp(scale * K Q^T - LSE) from the forward's log-sum-exp, and accumulates
  dV += P^T dO and dK += dS^T Q with dS^T = P^T * (V dO^T - D);
- ``attention_bwd_dq``: one program owns BM query rows and streams the key rows, so dQ =
  dS K is a private accumulator: no atomics, no second pass over a shared buffer;
- ``attention_bwd_per_head`` (fp32 on a CPU, where a few programs per core suffice): one
  program per query head does both, its dQ updated in place, the scores computed once.
Causal masks and sliding windows are aligned to the end as in the forward (query i sits at
key position i + Lk - Lq); a key-block program visits only the query tiles whose rows may see
its keys, a query-block program only the key tiles its rows see. Masks, windows and packed
batches (varlen) reuse the forward's tile concepts: per-row key ranges [lo, hi) from
``key_bounds``, the additive mask read as tiles by ``mask_tile`` and the host's block map
(SKIP tiles never loaded, FULL tiles not masked). A row that saw no key (LSE -inf) gets zero
gradients. 16-bit inputs keep 16-bit dot operands (the weights rounded to the inputs' type)
with fp32 accumulation.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import backend_space, check_scalar, choose_config, fits_local_memory, output_like, pick_backend
from .attention import LOG2E, key_bounds, mask_tile
from . import attn_masks
from .attn_masks import PARTIAL, SKIP, UNBOUNDED
from .attn_checks import check_qkv, next_pow2
from .spec import OpSpec
from tilec.errors import InputError
from tilec.runtime.arrays import describe


@tc.kernel
def attention_bwd_preprocess(O, DO, DELTA, BM: tc.constexpr, BD: tc.constexpr):
    pm, h, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    o = tc.load(O, (b, h, pm * BM, 0), (None, None, BM, BD)).to(tc.float32)
    do = tc.load(DO, (b, h, pm * BM, 0), (None, None, BM, BD)).to(tc.float32)
    tc.store(DELTA, (b, h, pm * BM), tc.sum(o * do, 1), (None, None, BM))


@tc.func
def visible_lse(LSE, qb, h, row0, BM, RESTRICTED):
    """The forward's LSE of BM rows in log2 units. A row that saw no key has LSE -inf; as +inf
    its scores minus LSE are -inf and its weights and gradients 0, where -inf would give NaN."""
    lse2 = tc.load(LSE, (qb, h, row0), (None, None, BM)) * LOG2E
    if RESTRICTED:
        lse2 = tc.where(lse2 == -math.inf, math.inf, lse2)
    return lse2


@tc.func
def sequence(CUQ, CUK, b, lq, SPANS):
    """Packed batches (SPANS): sequence b's first query row and key row in the packed arrays and
    its query count; otherwise batch b of (B, H, L, D) arrays starts at rows 0 and 0."""
    row_base, key_base, nrows = 0, 0, lq
    if SPANS:
        row_base = tc.load(CUQ, (b,), (None,))
        key_base = tc.load(CUK, (b,), (None,))
        nrows = tc.load(CUQ, (b + 1,), (None,)) - row_base
    return row_base, key_base, nrows


@tc.func
def query_span(n0, lq, lk, nrows, left, right, BM, BN, CAUSAL, WIN, SPANS):
    """The query rows [start, stop) (start a multiple of BM) that may see keys n0 .. n0 + BN:
    row i sits at key position i + lk - lq; causal rows see keys up to it, windows up to
    `right` after and `left` before it. Packed batches: all of the sequence's rows, the tiles
    none of them sees skipped one by one."""
    start, stop = 0, nrows
    if not SPANS:
        after = lk + BN    # how far before a key a row may sit and still see it: unbounded
        if CAUSAL:
            after = 0
        if WIN:
            after = tc.minimum(after, right)
        if CAUSAL or WIN:
            start = (tc.maximum(n0 - after - (lk - lq), 0) // BM) * BM
        if WIN:
            stop = tc.minimum(lq, n0 + BN + left - (lk - lq))
    return start, stop


@tc.func
def tile_kind(MAP, LO, HI, b, h, m, row0, n0, kn0, lq, lk, nrows, left, right, BM, BN, CAUSAL, WIN, SPANS,
              MASK):
    """Query tile m (row0 in the packed arrays) against key tile n0 (kn0 packed): SKIP, FULL or
    PARTIAL by the mask's block map, SKIP too when no real row of the tile sees these keys; and
    per row the keys it sees, [lo, hi) (everything when no causal mask, window or span)."""
    kind = PARTIAL
    if MASK:
        kind = tc.load(MAP, (b * (MASK // 2 % 2), h * (MASK // 4 % 2), m // BM * (MASK // 8), n0 // BN),
                       (None, None, None, None))
    lo = tc.zeros((BM,), tc.int32)
    hi = tc.full((BM,), lk, tc.int32)
    if CAUSAL or WIN or SPANS:
        lo, hi = key_bounds(LO, HI, row0, m, lq, lk, left, right, BM, CAUSAL, WIN, SPANS)
        valid = m + tc.arange(BM) < nrows
        if tc.min(tc.where(valid, lo, UNBOUNDED), 0) >= kn0 + BN or tc.max(tc.where(valid, hi, 0), 0) <= kn0:
            kind = SKIP
    return kind, lo, hi


@tc.func
def tile_weights_t(k, q, lse2, M, b, h, m, n0, kn0, lk, lo, hi, kind, scale_log2, BM, BN, RANGED, MASK):
    """Transposed base-2 weights P^T = exp2(scale K Q^T [+ mask] - LSE) of one (BN keys, BM rows)
    tile: entries a row does not see (out of its [lo, hi), padded keys, masked) are 0. Tiles
    every row sees whole skip the mask pass, as in the forward."""
    st = tc.dot(k, tc.trans(q)) * scale_log2 - lse2[None, :]
    keys = kn0 + tc.arange(BN)
    if RANGED:
        if kn0 < tc.max(lo, 0) or kn0 + BN > tc.min(hi, 0):
            st = tc.where((keys[:, None] >= lo[None, :]) & (keys[:, None] < hi[None, :]), st, -math.inf)
    else:
        if kn0 + BN > lk:
            st = tc.where(keys[:, None] < lk, st, -math.inf)
    if MASK:
        if kind == PARTIAL:
            st = st + tc.trans(mask_tile(M, b * (MASK // 2 % 2), h * (MASK // 4 % 2), m, n0, BM, BN, MASK // 8))
    return tc.exp2(st)


@tc.kernel
def attention_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, M, MAP, LO, HI, CUQ, CUK, scale_log2, scale, left, right,
                       BM: tc.constexpr, BN: tc.constexpr, BD: tc.constexpr, GROUP: tc.constexpr = 1,
                       CAUSAL: tc.constexpr = False, WIN: tc.constexpr = False, SPANS: tc.constexpr = False,
                       MASK: tc.constexpr = 0):
    # MASK, SPANS as in the forward's attention_kernel; packed batches (SPANS) read Q, K, V, DO,
    # LSE, DELTA packed as one batch and write DK, DV padded, as (sequences, Hkv, rows, D)
    pn, kvh, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    row_base, key_base, nrows = sequence(CUQ, CUK, b, lq, SPANS)
    qb = 0 if SPANS else b
    n0 = pn * BN
    kn0 = n0 + key_base
    k = tc.load(K, (qb, kvh, kn0, 0), (None, None, BN, BD))
    v = tc.load(V, (qb, kvh, kn0, 0), (None, None, BN, BD))
    dk = tc.zeros((BN, BD), tc.float32)
    dv = tc.zeros((BN, BD), tc.float32)
    start, stop = query_span(n0, lq, lk, nrows, left, right, BM, BN, CAUSAL, WIN, SPANS)
    for g in tc.range(0, GROUP, 1):
        h = kvh * GROUP + g
        for m in tc.range(start, stop, BM):
            # padded query rows load zeros (q, dO, LSE, D), so they add nothing
            kind, lo, hi = tile_kind(MAP, LO, HI, b, h, m, row_base + m, n0, kn0, lq, lk, nrows, left, right,
                                     BM, BN, CAUSAL, WIN, SPANS, MASK)
            if kind != SKIP:
                q = tc.load(Q, (qb, h, row_base + m, 0), (None, None, BM, BD))
                do = tc.load(DO, (qb, h, row_base + m, 0), (None, None, BM, BD))
                lse2 = visible_lse(LSE, qb, h, row_base + m, BM, MASK or WIN or SPANS)
                delta = tc.load(DELTA, (qb, h, row_base + m), (None, None, BM))
                pt = tile_weights_t(k, q, lse2, M, b, h, m, n0, kn0, lk, lo, hi, kind, scale_log2, BM, BN,
                                    CAUSAL or WIN or SPANS, MASK)
                dv = tc.dot(pt.to(Q.dtype), do, dv)
                dst = pt * (tc.dot(v, tc.trans(do)) - delta[None, :])
                dk = tc.dot(dst.to(Q.dtype), q, dk)
    tc.store(DK, (b, kvh, n0, 0), dk * scale, (None, None, BN, BD))
    tc.store(DV, (b, kvh, n0, 0), dv, (None, None, BN, BD))


@tc.kernel
def attention_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, M, MAP, LO, HI, CUQ, CUK, scale_log2, scale, left, right,
                     BM: tc.constexpr, BN: tc.constexpr, BD: tc.constexpr, GROUP: tc.constexpr = 1,
                     CAUSAL: tc.constexpr = False, WIN: tc.constexpr = False, SPANS: tc.constexpr = False,
                     MASK: tc.constexpr = 0):
    # packed batches write DQ padded, as (sequences, H, rows, D)
    pm, h, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    row_base, key_base, nrows = sequence(CUQ, CUK, b, lq, SPANS)
    qb = 0 if SPANS else b
    kvh = h // GROUP
    m0 = pm * BM
    row0 = row_base + m0
    q = tc.load(Q, (qb, h, row0, 0), (None, None, BM, BD))
    do = tc.load(DO, (qb, h, row0, 0), (None, None, BM, BD))
    lse2 = visible_lse(LSE, qb, h, row0, BM, MASK or WIN or SPANS)
    delta = tc.load(DELTA, (qb, h, row0), (None, None, BM))
    dq = tc.zeros((BM, BD), tc.float32)
    # the key tiles some row sees, as in the forward (packed keys); the block map's tiles
    # start at multiples of BN
    start, stop, inner_lo, inner_hi = 0, lk, 0, lk
    if CAUSAL or WIN or SPANS:
        lo, hi = key_bounds(LO, HI, row0, m0, lq, lk, left, right, BM, CAUSAL, WIN, SPANS)
        valid = m0 + tc.arange(BM) < nrows
        start = tc.maximum(tc.min(tc.where(valid, lo, UNBOUNDED), 0), 0)
        if MASK:
            start = start // BN * BN
        stop = tc.minimum(tc.max(tc.where(valid, hi, 0), 0), lk)
        inner_lo, inner_hi = tc.max(lo, 0), tc.min(hi, 0)
    for n in tc.range(start, stop, BN):
        kind = PARTIAL
        if MASK:
            kind = tc.load(MAP, (b * (MASK // 2 % 2), h * (MASK // 4 % 2), pm * (MASK // 8), n // BN),
                           (None, None, None, None))
        if kind != SKIP:
            k = tc.load(K, (qb, kvh, n, 0), (None, None, BN, BD))
            v = tc.load(V, (qb, kvh, n, 0), (None, None, BN, BD))
            s = tc.dot(q, tc.trans(k)) * scale_log2 - lse2[:, None]
            # padded keys must go too: exp2(0 - LSE) of a row of very negative scores overflows
            if n < inner_lo or n + BN > inner_hi:
                cols = n + tc.arange(BN)
                if CAUSAL or WIN or SPANS:
                    s = tc.where((cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None]), s, -math.inf)
                else:
                    s = tc.where(cols[None, :] < lk, s, -math.inf)
            if MASK:
                if kind == PARTIAL:
                    s = s + mask_tile(M, b * (MASK // 2 % 2), h * (MASK // 4 % 2), m0, n, BM, BN, MASK // 8)
            p = tc.exp2(s)
            ds = p * (tc.dot(do, tc.trans(v)) - delta[:, None])
            dq = tc.dot(ds.to(Q.dtype), k, dq)
    tc.store(DQ, (b, h, m0, 0), dq * scale, (None, None, BM, BD))


@tc.kernel
def attention_bwd_per_head(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, M, MAP, LO, HI, CUQ, CUK, scale_log2, scale, left,
                           right, BM: tc.constexpr, BN: tc.constexpr, BD: tc.constexpr, GROUP: tc.constexpr = 1,
                           CAUSAL: tc.constexpr = False, WIN: tc.constexpr = False, SPANS: tc.constexpr = False,
                           MASK: tc.constexpr = 0):
    """The CPU form: one program owns a whole query head, so dQ (fp32, zeroed by the caller)
    takes each step's dS K in place and the scores are computed once, not twice: five products
    per tile instead of seven. dK and dV are this head's (the caller sums a GQA group).
    Packed batches write DQ, DK, DV padded, per sequence."""
    h, b = tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    row_base, key_base, nrows = sequence(CUQ, CUK, b, lq, SPANS)
    nkeys = lk
    if SPANS:
        nkeys = tc.load(CUK, (b + 1,), (None,)) - key_base
    qb = 0 if SPANS else b
    kvh = h // GROUP
    for n0 in tc.range(0, nkeys, BN):
        kn0 = n0 + key_base
        k = tc.load(K, (qb, kvh, kn0, 0), (None, None, BN, BD))
        v = tc.load(V, (qb, kvh, kn0, 0), (None, None, BN, BD))
        dk = tc.zeros((BN, BD), tc.float32)
        dv = tc.zeros((BN, BD), tc.float32)
        start, stop = query_span(n0, lq, lk, nrows, left, right, BM, BN, CAUSAL, WIN, SPANS)
        for m in tc.range(start, stop, BM):
            kind, lo, hi = tile_kind(MAP, LO, HI, b, h, m, row_base + m, n0, kn0, lq, lk, nrows, left, right,
                                     BM, BN, CAUSAL, WIN, SPANS, MASK)
            if kind != SKIP:
                q = tc.load(Q, (qb, h, row_base + m, 0), (None, None, BM, BD))
                do = tc.load(DO, (qb, h, row_base + m, 0), (None, None, BM, BD))
                lse2 = visible_lse(LSE, qb, h, row_base + m, BM, MASK or WIN or SPANS)
                delta = tc.load(DELTA, (qb, h, row_base + m), (None, None, BM))
                # padded keys are masked too: their dS rows reach dQ
                pt = tile_weights_t(k, q, lse2, M, b, h, m, n0, kn0, lk, lo, hi, kind, scale_log2, BM, BN,
                                    CAUSAL or WIN or SPANS, MASK)
                dv = tc.dot(pt, do, dv)
                dst = pt * (tc.dot(v, tc.trans(do)) - delta[None, :])
                dk = tc.dot(dst, q, dk)
                dq = tc.load(DQ, (b, h, m, 0), (None, None, BM, BD))
                tc.store(DQ, (b, h, m, 0), tc.dot(tc.trans(dst), k) * scale + dq, (None, None, BM, BD))
        tc.store(DK, (b, h, n0, 0), dk * scale, (None, None, BN, BD))
        tc.store(DV, (b, h, n0, 0), dv, (None, None, BN, BD))


TILES = [Param("BM", (16, 32, 64, 128, 256)), Param("BN", (16, 32, 64, 128, 256)),
         Param("BD", (16, 32, 64, 128, 256)),
         Param("DQ", ("per_head", "split"), "fp32 on a CPU: one program per query head (five products per "
               "tile) or the key-block and query-block kernels (seven; more programs)")]

# a step holds Q, dO (BM x BD), K, V (BN x BD), two accumulators and two score-sized tiles (fp32)
_fits = fits_local_memory(lambda cfg: 4 * (4 * cfg["BM"] * cfg["BD"] + 4 * cfg["BN"] * cfg["BD"]
                                           + 2 * cfg["BM"] * cfg["BN"]), ("BM", "BN", "BD"))

GPU_TILES = [Param("BM", (16, 32, 64, 128)), Param("BN", (16, 32, 64, 128)), TILES[2]]   # split only


def space(backend: str = "numba"):
    return backend_space(TILES if backend == "numba" else GPU_TILES, [_fits], backend)


def default_config(shape: dict, backend: str = "numba") -> dict:
    """One config serves the three kernels (BM query rows, BN key rows per step).
    Numba: 128 x 128 tiles (BLAS products on tiles that stay in L2), fewer when short.
    GPUs: the backward keeps twice the forward's tiles live (Q, dO, K, V, dK, dV): fp16 at
    head size 64 for sm_80 (Triton), 64 x 64 spilled 9.5 KB in the causal dK/dV kernel at 4 or
    8 warps; 64 x 32 at 8 warps takes 102 / 176 registers (dK/dV, dQ), no spills."""
    d = shape["D"]
    bd = next_pow2(d)
    if backend == "numba":
        def tile(n):
            return 128 if n >= 128 else max(16, next_pow2(n))
        return {"BM": tile(shape["Lq"]), "BN": tile(shape["Lk"]), "BD": d if d in (16, 32, 64, 128, 256) else bd,
                "DQ": "per_head", "dot": "blas"}
    cfg = {"BM": 64 if bd <= 64 else 32 if bd == 128 else 16, "BN": 32 if bd <= 128 else 16, "BD": bd}
    if backend == "triton":
        cfg.update(num_warps=8 if bd <= 128 else 4, num_stages=2)
        if bd <= 64 and (shape.get("mask") or shape.get("window") or shape.get("spans")):
            # per-row key ranges and mask tiles: at 8 warps sm_90's ptxas caps a thread at 128
            # registers and the masked, windowed causal dK/dV spilled; 4 warps do not
            cfg["num_warps"] = 4
    return cfg


def _check_like(name: str, x: Any, shape: tuple, dtype) -> None:
    info = describe(x, name)
    if tuple(info.shape) != tuple(shape):
        raise InputError(f"{name} must have shape {tuple(shape)}, got {tuple(info.shape)}")
    if info.dtype != dtype:
        raise InputError(f"{name} must be {dtype.name}, got {info.dtype.name}")


def attention_backward(q: Any, k: Any, v: Any, o: Any, lse: Any, do: Any, *, causal: bool = False,
                       mask: Any = None, window: Any = None, scale: float | None = None, dlse: Any = None,
                       backend: str | None = None, config: dict | None = None) -> tuple[Any, Any, Any]:
    """Gradients (dq, dk, dv) of ``attention(q, k, v, causal=, mask=, window=, scale=)`` given
    its output ``o``, its log-sum-exp ``lse`` (``return_lse=True``) and the output's gradient ``do``.

    Shapes as the forward's: q, o, do (B, H, Lq, D); k, v (B, Hkv, Lk, D); lse (B, H, Lq) fp32.
    dq, dk, dv come back like q, k, v (dk, dv summed over the query heads of each KV group).
    ``mask`` and ``window`` as in ``ops.attention`` (the mask gets no gradient); tiles the mask
    or window hides are skipped, and rows that saw no key (LSE -inf) get zero gradients.
    ``dlse`` (B, H, Lq) fp32, optional, is the gradient of ``lse``: since dLSE/dS = P it joins
    as dS = P * (dP - (D - dlse)), one subtraction on the per-row D.
    """
    info = check_qkv(q, k, v, causal)
    bsz, heads, lq, d = info["q"].shape
    kv_heads, lk = info["k"].shape[1], info["k"].shape[2]
    dtype = info["q"].dtype
    _check_like("o", o, (bsz, heads, lq, d), dtype)
    _check_like("do", do, (bsz, heads, lq, d), dtype)
    _check_like("lse", lse, (bsz, heads, lq), tc.float32)
    if dlse is not None:
        _check_like("dlse", dlse, (bsz, heads, lq), tc.float32)
    win = attn_masks.window_bounds(window)
    add = None if mask is None else attn_masks.additive_mask(mask, bsz, heads, lq, lk)
    be = pick_backend({"q": q, "k": k, "v": v, "o": o, "lse": lse, "do": do}, backend)
    shape = {"B": bsz, "H": heads, "Hkv": kv_heads, "Lq": lq, "Lk": lk, "D": d}
    cfg = _config(shape, dtype, be, info["q"].device, config,
                  {"causal": bool(causal), "mask": add is not None, "window": win is not None})
    dq = output_like(q, (bsz, heads, lq, d), dtype)
    dk = output_like(q, (bsz, kv_heads, lk, d), dtype)
    dv = output_like(q, (bsz, kv_heads, lk, d), dtype)
    scale = 1.0 / math.sqrt(d) if scale is None else check_scalar("scale", scale)
    if not (bsz and heads and lk):
        _zero(dq)   # no key: the forward's output is zeros whatever q is
        return dq, dk, dv
    if lq == 0:
        # no query reads a key: zero gradients for k and v
        _zero(dk), _zero(dv)
        return dq, dk, dv
    delta = output_like(q, (bsz, heads, lq), tc.float32)
    _backward(q, k, v, o, lse, do, dlse, delta, dq, dk, dv, scale, add, None, win, bool(causal), cfg, be,
              heads // kv_heads, bsz, lq, lk)
    return dq, dk, dv


def _config(shape: dict, dtype, be: str, device, config: dict | None, form: dict) -> dict:
    """The tuned or default config; ``form`` (causal, mask, window, spans) picks the default."""
    cfg = choose_config("attention_backward", shape, dtype.name, be, device, config, space(be),
                        default_config({**shape, **form}, be))
    if cfg["BD"] < shape["D"]:
        raise tc.ConfigError(f"attention_backward config BD={cfg['BD']} is smaller than head_dim {shape['D']}")
    return cfg


def _backward(q, k, v, o, lse, do, dlse, delta, dq, dk, dv, scale, add, spans, win, causal, cfg, be, group, nseq,
              rows, keys) -> None:
    """The preprocess and the gradient kernels. (B, H, L, D) arrays, or with ``spans`` (lo, hi,
    cu_q, cu_k) packed (1, H, total, D) inputs and outputs padded to (nseq, H, rows|keys, D).
    ``add`` an additive mask from attn_masks, ``win`` (left, right) or None; unused tensor
    slots get ``delta``."""
    heads, kv_heads, lq = q.shape[1], k.shape[1], q.shape[2]
    launch = {n: cfg[n] for n in cfg if n != "DQ"}
    options = {n: cfg[n] for n in launch if n not in ("BM", "BN", "BD")}
    attention_bwd_preprocess[(cdiv_host(lq, cfg["BM"]), heads, q.shape[0])](o, do, delta, backend=be, BM=cfg["BM"],
                                                                           BD=cfg["BD"], **options)
    if dlse is not None:
        delta -= dlse
    m = bmap = lo = hi = cu_q = cu_k = delta
    flags = {"GROUP": group, "CAUSAL": causal, "WIN": win is not None, "SPANS": spans is not None}
    if add is not None:
        m = attn_masks.like(q, add)
        bmap = attn_masks.like(q, attn_masks.block_map(add, cfg["BM"], cfg["BN"]))
        flags["MASK"] = 1 + 2 * (add.shape[0] > 1) + 4 * (add.shape[1] > 1) + 8 * (add.shape[2] > 1)
    if spans is not None:
        lo, hi, cu_q, cu_k = (attn_masks.like(q, a) for a in spans)
    left, right = win or (0, 0)
    tables = (m, bmap, lo, hi, cu_q, cu_k, scale * LOG2E, scale, left, right)
    bsz = nseq
    if cfg.get("DQ") == "per_head" and describe(q, "q").dtype == tc.float32:
        _zero(dq)
        # dK and dV per query head, summed over each KV group after
        dkh, dvh = (dk, dv) if group == 1 else (output_like(q, (bsz, heads) + tuple(dk.shape[2:]), describe(q, "q").dtype)
                                                 for _ in range(2))
        attention_bwd_per_head[(1, heads, bsz)](q, k, v, do, lse, delta, dq, dkh, dvh, *tables, backend=be,
                                                **flags, **launch)
        if group > 1:
            dk[...] = dkh.reshape(bsz, kv_heads, group, *dk.shape[2:]).sum(2)
            dv[...] = dvh.reshape(bsz, kv_heads, group, *dk.shape[2:]).sum(2)
        return
    attention_bwd_dkdv[(cdiv_host(keys, cfg["BN"]), kv_heads, bsz)](
        q, k, v, do, lse, delta, dk, dv, *tables, backend=be, **flags, **launch)
    attention_bwd_dq[(cdiv_host(rows, cfg["BM"]), heads, bsz)](
        q, k, v, do, lse, delta, dq, *tables, backend=be, **flags, **launch)


def attention_varlen_backward(q: Any, k: Any, v: Any, o: Any, lse: Any, do: Any, cu_seqlens_q: Any,
                              cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int, *, causal: bool = False,
                              window: Any = None, scale: float | None = None, dlse: Any = None,
                              backend: str | None = None, config: dict | None = None) -> tuple[Any, Any, Any]:
    """Gradients (dq, dk, dv) of ``ops.attention_varlen`` on packed batches, given its output
    ``o`` (total_q, H, D), its log-sum-exp ``lse`` (H, total_q) fp32 (``return_lse=True``) and
    ``do``; ``dlse`` (H, total_q) the LSE's gradient, if any. Each sequence's programs visit only
    its own tiles; the kernels write padded per sequence and the rows are packed back."""
    from .attention_varlen import _heads_view, _permute, check_varlen
    iq, kv_heads, total_k, cu_q, cu_k = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    total_q, heads, d = iq.shape
    dtype = iq.dtype
    _check_like("o", o, (total_q, heads, d), dtype)
    _check_like("do", do, (total_q, heads, d), dtype)
    _check_like("lse", lse, (heads, total_q), tc.float32)
    if dlse is not None:
        _check_like("dlse", dlse, (heads, total_q), tc.float32)
    win = attn_masks.window_bounds(window)
    be = pick_backend({"q": q, "k": k, "v": v, "o": o, "lse": lse, "do": do}, backend)
    lens_q, lens_k = np.diff(cu_q), np.diff(cu_k)
    nseq, rows, keys = lens_q.size, int(lens_q.max(initial=0)), int(lens_k.max(initial=0))
    shape = {"B": nseq, "H": heads, "Hkv": kv_heads, "Lq": max(1, rows), "Lk": max(1, keys), "D": d}
    cfg = _config(shape, dtype, be, iq.device, config, {"causal": bool(causal), "spans": True})
    scale = 1.0 / math.sqrt(d) if scale is None else check_scalar("scale", scale)
    dq = output_like(q, (total_q, heads, d), dtype)
    dk = output_like(q, (total_k, kv_heads, d), dtype)
    dv = output_like(q, (total_k, kv_heads, d), dtype)
    if not (heads and total_q and total_k):
        for x in (dq, dk, dv):
            _zero(x)
        return dq, dk, dv
    pdq = output_like(q, (nseq, rows, heads, d), dtype)
    pdk, pdv = (output_like(q, (nseq, keys, kv_heads, d), dtype) for _ in range(2))
    delta = output_like(q, (heads, total_q), tc.float32)
    lo, hi = attn_masks.varlen_spans(cu_q, cu_k, bool(causal), win)
    _backward(_heads_view(q), _heads_view(k), _heads_view(v), _heads_view(o), lse[None], _heads_view(do),
              None if dlse is None else dlse[None], delta[None], _permute(pdq, (0, 2, 1, 3)),
              _permute(pdk, (0, 2, 1, 3)), _permute(pdv, (0, 2, 1, 3)), scale, None,
              (lo, hi, cu_q.astype(np.int32), cu_k.astype(np.int32)), None, False, cfg, be, heads // kv_heads,
              nseq, rows, keys)
    for out, padded, cu, lens, length in ((dq, pdq, cu_q, lens_q, rows), (dk, pdk, cu_k, lens_k, keys),
                                          (dv, pdv, cu_k, lens_k, keys)):
        seq = np.repeat(np.arange(nseq), lens)
        index = attn_masks.like(q, seq * length + np.arange(int(cu[-1])) - cu[:-1][seq])
        out[...] = padded.reshape((nseq * length,) + tuple(out.shape[1:]))[index]
    return dq, dk, dv


def _zero(x: Any) -> None:
    x[...] = 0


def reference(inputs: dict):
    """(dq, dk, dv) in float64 by the materialized formulas (test sizes only); the weights P
    are the float64 forward reference's with V = I, so masks and windows count as there."""
    from .attention import reference as forward
    q, k, v, do = (np.asarray(inputs[n], np.float64) for n in ("q", "k", "v", "do"))
    group = q.shape[1] // k.shape[1]
    kr, vr = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    eye = np.broadcast_to(np.eye(k.shape[2]), k.shape[:2] + (k.shape[2],) * 2)
    p = forward({**inputs, "q": q, "k": k, "v": eye})
    o = p @ vr
    dv = np.einsum("bhqk,bhqd->bhkd", p, do)
    ds = p * (np.einsum("bhqd,bhkd->bhqk", do, vr) - (do * o).sum(-1)[..., None])
    dq = np.einsum("bhqk,bhkd->bhqd", ds, kr) * scale
    dk = np.einsum("bhqk,bhqd->bhkd", ds, q) * scale
    b, hkv = k.shape[:2]
    fold = lambda x: x.reshape(b, hkv, group, *x.shape[2:]).sum(2)  # noqa: E731
    return dq, fold(dk), fold(dv)


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    from .attention import attention, make_inputs as forward_inputs
    inputs = forward_inputs(shape, dtype, rng)
    o, lse = attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs["causal"], return_lse=True)
    return {**inputs, "o": o, "lse": lse, "do": random_array(o.shape, dtype, rng)}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return attention_backward(*(inputs[n] for n in ("q", "k", "v", "o", "lse", "do")),
                              causal=inputs.get("causal", False), scale=inputs.get("scale"),
                              backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict, kernel: str = "dkdv"):
    """(kernel, IR, grid) of one gradient kernel for one config: ``kernel`` "dkdv" (the
    backward's biggest, the default) or "dq". Optional shape keys as the forward's launch_ir:
    ``causal``, ``mask`` (the MASK code), ``window`` and ``spans`` (packed batches)."""
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    dd = dtypes.lookup(dtype)
    t4, t3 = TensorType(4, dd), TensorType(3, dtypes.float32)
    mask, spans = int(shape.get("mask") or 0), bool(shape.get("spans"))
    i32 = TensorType(1, dtypes.int32)
    types = {"Q": t4, "K": t4, "V": t4, "DO": t4, "LSE": t3, "DELTA": t3, "DK": t4, "DV": t4, "DQ": t4,
             "M": TensorType(4, dtypes.float32) if mask else t3, "MAP": TensorType(4, dtypes.int32) if mask else t3,
             "LO": i32 if spans else t3, "HI": i32 if spans else t3, "CUQ": i32 if spans else t3,
             "CUK": i32 if spans else t3, "scale_log2": TileType((), dtypes.float32),
             "scale": TileType((), dtypes.float32), "left": TileType((), dtypes.int32),
             "right": TileType((), dtypes.int32)}
    k = {"dkdv": attention_bwd_dkdv, "dq": attention_bwd_dq}[kernel]
    constexprs, _ = k.split_config({n: config[n] for n in config if n != "DQ"})
    constexprs = {"GROUP": shape["H"] // shape.get("Hkv", shape["H"]), "CAUSAL": bool(shape.get("causal")),
                  "WIN": bool(shape.get("window")), "SPANS": spans, "MASK": mask, **constexprs}
    fn = k.ir({n: types[n] for n in k.runtime_names}, constexprs)
    if kernel == "dq":
        return k, fn, (cdiv_host(shape["Lq"], config["BM"]), shape["H"], shape["B"])
    return k, fn, (cdiv_host(shape["Lk"], config["BN"]), shape.get("Hkv", shape["H"]), shape["B"])


def _flops(s: dict) -> float:
    """Five products of Lq x Lk x D per head (two recompute the scores and dP); causal about half."""
    full = 10.0 * s["B"] * s["H"] * s["Lq"] * s["Lk"] * s["D"]
    return full / 2 if s.get("causal") else full


SPEC = OpSpec(
    name="attention_backward", doc=__doc__.strip().splitlines()[0],
    kernels={"preprocess": attention_bwd_preprocess, "dkdv": attention_bwd_dkdv, "dq": attention_bwd_dq,
             "per_head": attention_bwd_per_head},
    shape_names=("B", "H", "Hkv", "Lq", "Lk", "D"), space=space, default_config=default_config,
    make_inputs=make_inputs, run=run, reference=reference, flops=_flops,
    bytes=lambda s, dtype: float(4 if dtype == "float32" else 2)
    * (4 * s["B"] * s["H"] * s["Lq"] * s["D"] + 4 * s["B"] * s["Hkv"] * s["Lk"] * s["D"]),
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (1e-3, 1e-3) if dtype == "float32" else (5e-2, 5e-2),
    extra={"fixed_by_shape": ("BD",),
           "test_shapes": [{"B": 1, "H": 2, "Hkv": 1, "Lq": 17, "Lk": 33, "D": 16}],
           "compile_shape": {"B": 1, "H": 8, "Hkv": 8, "Lq": 1024, "Lk": 1024, "D": 64}},
)
