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
Causal masks are aligned to the end as in the forward (query i sees key j <= i + Lk - Lq);
a causal program visits only the tiles on or below its diagonal. 16-bit inputs keep 16-bit
dot operands (the weights rounded to the inputs' type) with fp32 accumulation.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import backend_space, choose_config, fits_local_memory, output_like, pick_backend
from .attention import LOG2E
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


@tc.kernel
def attention_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, scale_log2, scale, BM: tc.constexpr, BN: tc.constexpr,
                       BD: tc.constexpr, GROUP: tc.constexpr = 1, CAUSAL: tc.constexpr = False):
    pn, kvh, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    n0 = pn * BN
    k = tc.load(K, (b, kvh, n0, 0), (None, None, BN, BD))
    v = tc.load(V, (b, kvh, n0, 0), (None, None, BN, BD))
    dk = tc.zeros((BN, BD), tc.float32)
    dv = tc.zeros((BN, BD), tc.float32)
    # causal: the first query tile with a row that sees this program's first key
    start = 0
    if CAUSAL:
        start = (tc.maximum(n0 - (lk - lq), 0) // BM) * BM
    keys = n0 + tc.arange(BN)
    for g in tc.range(0, GROUP, 1):
        h = kvh * GROUP + g
        for m in tc.range(start, lq, BM):
            q = tc.load(Q, (b, h, m, 0), (None, None, BM, BD))
            do = tc.load(DO, (b, h, m, 0), (None, None, BM, BD))
            lse2 = tc.load(LSE, (b, h, m), (None, None, BM)) * LOG2E
            delta = tc.load(DELTA, (b, h, m), (None, None, BM))
            st = tc.dot(k, tc.trans(q)) * scale_log2 - lse2[None, :]
            # padded query rows load zeros (q, dO, LSE, D), so they add nothing; only the
            # causal mask is needed, and only on tiles that cross the diagonal
            if CAUSAL:
                if n0 + BN > m + 1 + lk - lq:
                    rows = m + tc.arange(BM) + (lk - lq)
                    st = tc.where(keys[:, None] <= rows[None, :], st, -math.inf)
            pt = tc.exp2(st)
            dv = tc.dot(pt.to(Q.dtype), do, dv)
            dpt = tc.dot(v, tc.trans(do))
            dst = pt * (dpt - delta[None, :])
            dk = tc.dot(dst.to(Q.dtype), q, dk)
    tc.store(DK, (b, kvh, n0, 0), dk * scale, (None, None, BN, BD))
    tc.store(DV, (b, kvh, n0, 0), dv, (None, None, BN, BD))


@tc.kernel
def attention_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, scale_log2, scale, BM: tc.constexpr, BN: tc.constexpr,
                     BD: tc.constexpr, GROUP: tc.constexpr = 1, CAUSAL: tc.constexpr = False):
    pm, h, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    kvh = h // GROUP
    m0 = pm * BM
    q = tc.load(Q, (b, h, m0, 0), (None, None, BM, BD))
    do = tc.load(DO, (b, h, m0, 0), (None, None, BM, BD))
    lse2 = tc.load(LSE, (b, h, m0), (None, None, BM)) * LOG2E
    delta = tc.load(DELTA, (b, h, m0), (None, None, BM))
    dq = tc.zeros((BM, BD), tc.float32)
    stop = lk
    if CAUSAL:
        stop = tc.minimum(lk, m0 + BM + lk - lq)
    rows = m0 + tc.arange(BM) + (lk - lq)
    for n in tc.range(0, stop, BN):
        k = tc.load(K, (b, kvh, n, 0), (None, None, BN, BD))
        v = tc.load(V, (b, kvh, n, 0), (None, None, BN, BD))
        s = tc.dot(q, tc.trans(k)) * scale_log2 - lse2[:, None]
        # padded keys must go: exp2(0 - LSE) of a row of very negative scores overflows
        cols = n + tc.arange(BN)
        if CAUSAL:
            if n + BN > m0 + 1 + lk - lq:
                s = tc.where((cols[None, :] <= rows[:, None]) & (cols[None, :] < lk), s, -math.inf)
        else:
            if n + BN > lk:
                s = tc.where(cols[None, :] < lk, s, -math.inf)
        p = tc.exp2(s)
        dp = tc.dot(do, tc.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tc.dot(ds.to(Q.dtype), k, dq)
    tc.store(DQ, (b, h, m0, 0), dq * scale, (None, None, BM, BD))


@tc.kernel
def attention_bwd_per_head(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, scale_log2, scale, BM: tc.constexpr,
                           BN: tc.constexpr, BD: tc.constexpr, GROUP: tc.constexpr = 1, CAUSAL: tc.constexpr = False):
    """The CPU form: one program owns a whole query head, so dQ (fp32, zeroed by the caller)
    takes each step's dS K in place and the scores are computed once, not twice: five products
    per tile instead of seven. dK and dV are this head's (the caller sums a GQA group)."""
    h, b = tc.program_id(1), tc.program_id(2)
    lq, lk = Q.shape[2], K.shape[2]
    kvh = h // GROUP
    for n0 in tc.range(0, lk, BN):
        k = tc.load(K, (b, kvh, n0, 0), (None, None, BN, BD))
        v = tc.load(V, (b, kvh, n0, 0), (None, None, BN, BD))
        dk = tc.zeros((BN, BD), tc.float32)
        dv = tc.zeros((BN, BD), tc.float32)
        start = 0
        if CAUSAL:
            start = (tc.maximum(n0 - (lk - lq), 0) // BM) * BM
        keys = n0 + tc.arange(BN)
        for m in tc.range(start, lq, BM):
            q = tc.load(Q, (b, h, m, 0), (None, None, BM, BD))
            do = tc.load(DO, (b, h, m, 0), (None, None, BM, BD))
            lse2 = tc.load(LSE, (b, h, m), (None, None, BM)) * LOG2E
            delta = tc.load(DELTA, (b, h, m), (None, None, BM))
            st = tc.dot(k, tc.trans(q)) * scale_log2 - lse2[None, :]
            # padded keys must go here too: their dS rows reach dQ
            if CAUSAL:
                if n0 + BN > m + 1 + lk - lq:
                    rows = m + tc.arange(BM) + (lk - lq)
                    st = tc.where((keys[:, None] <= rows[None, :]) & (keys[:, None] < lk), st, -math.inf)
            else:
                if n0 + BN > lk:
                    st = tc.where(keys[:, None] < lk, st, -math.inf)
            pt = tc.exp2(st)
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
    return cfg


def _check_like(name: str, x: Any, shape: tuple, dtype) -> None:
    info = describe(x, name)
    if tuple(info.shape) != tuple(shape):
        raise InputError(f"{name} must have shape {tuple(shape)}, got {tuple(info.shape)}")
    if info.dtype != dtype:
        raise InputError(f"{name} must be {dtype.name}, got {info.dtype.name}")


def attention_backward(q: Any, k: Any, v: Any, o: Any, lse: Any, do: Any, *, causal: bool = False,
                       scale: float | None = None, dlse: Any = None, backend: str | None = None,
                       config: dict | None = None) -> tuple[Any, Any, Any]:
    """Gradients (dq, dk, dv) of ``attention(q, k, v, causal=, scale=)`` given its output ``o``,
    its log-sum-exp ``lse`` (``return_lse=True``) and the output's gradient ``do``.

    Shapes as the forward's: q, o, do (B, H, Lq, D); k, v (B, Hkv, Lk, D); lse (B, H, Lq) fp32.
    dq, dk, dv come back like q, k, v (dk, dv summed over the query heads of each KV group).
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
    be = pick_backend({"q": q, "k": k, "v": v, "o": o, "lse": lse, "do": do}, backend)
    shape = {"B": bsz, "H": heads, "Hkv": kv_heads, "Lq": lq, "Lk": lk, "D": d}
    cfg = choose_config("attention_backward", shape, dtype.name, be, info["q"].device, config, space(be),
                        default_config({**shape, "causal": bool(causal)}, be))
    if cfg["BD"] < d:
        raise tc.ConfigError(f"attention_backward config BD={cfg['BD']} is smaller than head_dim {d}")
    dq = output_like(q, (bsz, heads, lq, d), dtype)
    dk = output_like(q, (bsz, kv_heads, lk, d), dtype)
    dv = output_like(q, (bsz, kv_heads, lk, d), dtype)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not (bsz and heads and lk):
        return dq, dk, dv
    if lq == 0:
        # no query reads a key: zero gradients for k and v (written by a pass over no rows)
        _zero(dk), _zero(dv)
        return dq, dk, dv
    delta = output_like(q, (bsz, heads, lq), tc.float32)
    launch = {n: cfg[n] for n in cfg if n != "DQ"}
    options = {n: cfg[n] for n in launch if n not in ("BM", "BN", "BD")}
    group, causal = heads // kv_heads, bool(causal)
    attention_bwd_preprocess[(cdiv_host(lq, cfg["BM"]), heads, bsz)](o, do, delta, backend=be, BM=cfg["BM"],
                                                                      BD=cfg["BD"], **options)
    if dlse is not None:
        delta -= dlse
    args = (scale * LOG2E, scale)
    if cfg.get("DQ") == "per_head" and dtype == tc.float32:
        _zero(dq)
        # dK and dV per query head, summed over each KV group after
        dkh, dvh = (dk, dv) if group == 1 else (output_like(q, (bsz, heads, lk, d), dtype) for _ in range(2))
        attention_bwd_per_head[(1, heads, bsz)](q, k, v, do, lse, delta, dq, dkh, dvh, *args, backend=be,
                                                GROUP=group, CAUSAL=causal, **launch)
        if group > 1:
            dk[...] = dkh.reshape(bsz, kv_heads, group, lk, d).sum(2)
            dv[...] = dvh.reshape(bsz, kv_heads, group, lk, d).sum(2)
        return dq, dk, dv
    attention_bwd_dkdv[(cdiv_host(lk, cfg["BN"]), kv_heads, bsz)](
        q, k, v, do, lse, delta, dk, dv, *args, backend=be, GROUP=group, CAUSAL=causal, **launch)
    attention_bwd_dq[(cdiv_host(lq, cfg["BM"]), heads, bsz)](
        q, k, v, do, lse, delta, dq, *args, backend=be, GROUP=group, CAUSAL=causal, **launch)
    return dq, dk, dv


def _zero(x: Any) -> None:
    x[...] = 0


def reference(inputs: dict):
    """(dq, dk, dv) in float64 by the materialized formulas (test sizes only)."""
    from .attention import reference as forward
    q, k, v, do = (np.asarray(inputs[n], np.float64) for n in ("q", "k", "v", "do"))
    group = q.shape[1] // k.shape[1]
    kr, vr = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = inputs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    o, lse = forward({**inputs, "q": q, "k": k, "v": v}, return_lse=True)
    p = np.exp(np.einsum("bhqd,bhkd->bhqk", q, kr) * scale - lse[..., None])
    lq, lk = q.shape[2], k.shape[2]
    if inputs.get("causal"):
        p = np.where(np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq), p, 0.0)
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


def launch_ir(shape: dict, dtype: str, config: dict):
    """(kernel, IR, grid) of the dK/dV kernel, the backward's biggest, for one config."""
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    dd = dtypes.lookup(dtype)
    t4, t3 = TensorType(4, dd), TensorType(3, dtypes.float32)
    types = {"Q": t4, "K": t4, "V": t4, "DO": t4, "LSE": t3, "DELTA": t3, "DK": t4, "DV": t4,
             "scale_log2": TileType((), dtypes.float32), "scale": TileType((), dtypes.float32)}
    constexprs, _ = attention_bwd_dkdv.split_config({n: config[n] for n in config if n != "DQ"})
    constexprs = {"GROUP": shape["H"] // shape.get("Hkv", shape["H"]), "CAUSAL": bool(shape.get("causal")),
                  **constexprs}
    fn = attention_bwd_dkdv.ir(types, constexprs)
    return attention_bwd_dkdv, fn, (cdiv_host(shape["Lk"], config["BN"]), shape.get("Hkv", shape["H"]), shape["B"])


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
