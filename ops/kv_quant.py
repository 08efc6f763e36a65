"""KIVI-style KV-cache quantization (2- or 4-bit) and decoding straight from the packed cache.

Keys are quantized per channel over groups of G consecutive tokens (one scale and zero per
group and channel: key outliers live in a few channels), values per token (one scale and zero
per token and head). The most recent tokens, fewer than ``residual + G``, stay in full
precision, so a sequence's cache is ``q_len`` quantized tokens (a multiple of G) followed by
``r_len`` residual ones.

Packed layout (uint8, both K and V), per group of G tokens and per channel: with
PB = 8 // bits codes per byte, byte i of the group holds tokens i, i + G/PB, ..., at bit
offsets 0, bits, 2*bits, ... So unpacking a (G/PB, D) byte tile by shifting it PB ways gives
a (PB, G/PB, D) tile whose reshape to (G, D) is the tokens in order.

The decode kernel never dequantizes the cache as a whole: each step dequantizes the keys of
its NG groups (codes * k_scale + k_zero, per group and channel), and the value product is
(p * v_scale) @ codes plus p . v_zero (the value scale is per token, so it folds into the
softmax weights). On the CPU neither the codes nor the keys become a tile: both dots take them
byte by byte inside their loops (tilec/backends/numba/blocked_dots.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param

from ._common import backend_space, check_rank, check_scalar, choose_config, output_like, pick_backend
from .attention import online_softmax
from .attn_checks import check_head_dim, check_kv_pair, head_tile
from .decode import LOG2E, NEG_BIG, finish, launch_decode, target_programs
from .spec import OpSpec


@tc.kernel
def quantize_kernel(K, V, KC, KS, KZ, VC, VS, VZ, G: tc.constexpr, BD: tc.constexpr, BITS: tc.constexpr):
    """One program packs one group of G tokens of one (batch, kv head)."""
    grp, h, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    levels = (1 << BITS) - 1
    pb = 8 // BITS
    n0 = grp * G
    k = tc.load(K, (b, h, n0, 0), (None, None, G, BD))
    lo, hi = tc.min(k, 0), tc.max(k, 0)                        # per channel over the group
    ks = (hi - lo) / levels
    kcodes = tc.floor((k - lo[None, :]) * tc.where(hi > lo, levels / (hi - lo), 0.0)[None, :] + 0.5)
    tc.store(KC, (b, h, grp * (G // pb), 0), pack(kcodes, G, BD, BITS), (None, None, G // pb, BD))
    tc.store(KS, (b, h, grp, 0), ks, (None, None, None, BD))
    tc.store(KZ, (b, h, grp, 0), lo, (None, None, None, BD))
    v = tc.load(V, (b, h, n0, 0), (None, None, G, BD))
    # per token over the head dim; the padded lanes past D must not count
    inside = tc.arange(BD)[None, :] < V.shape[3]
    vlo = tc.min(tc.where(inside, v, math.inf), 1)
    vhi = tc.max(tc.where(inside, v, -math.inf), 1)
    vcodes = tc.floor((v - vlo[:, None]) * tc.where(vhi > vlo, levels / (vhi - vlo), 0.0)[:, None] + 0.5)
    tc.store(VC, (b, h, grp * (G // pb), 0), pack(vcodes, G, BD, BITS), (None, None, G // pb, BD))
    tc.store(VS, (b, h, n0), (vhi - vlo) / levels, (None, None, G))
    tc.store(VZ, (b, h, n0), vlo, (None, None, G))


@tc.func
def pack(codes, G, BD, BITS):
    """(G, BD) float codes -> (G/PB, BD) bytes; byte i holds rows i + j*G/PB at bits j*BITS."""
    pb = 8 // BITS
    levels = (1 << BITS) - 1
    c = tc.reshape(tc.cast(tc.minimum(tc.maximum(codes, 0.0), levels * 1.0), tc.int32), (pb, G // pb, BD))
    shifted = c << (tc.arange(pb) * BITS)[:, None, None]
    return tc.cast(tc.sum(shifted, 0), tc.uint8)


@tc.kernel
def decode_quant_kernel(Q, KC, KS, KZ, VC, VS, VZ, KR, VR, QLen, RLen, O, OP, LP, scale_log2, chunk,
                        GROUP: tc.constexpr, BT: tc.constexpr, G: tc.constexpr, BN: tc.constexpr,
                        BD: tc.constexpr, BITS: tc.constexpr, SPLIT: tc.constexpr = False,
                        NG: tc.constexpr = 1):
    """One program: one KV head, its GROUP query heads, one split of the cache. Each step takes
    NG key groups (NG * G tokens). The two products are dots whose code operands are computed
    from the packed bytes: on the CPU the renderer takes them inside the dots' loops, a byte
    read once for its PB codes (tilec/backends/numba/blocked_dots.py), so no code tile is
    stored. BN (= NG * G) only sizes the split chunks on the host; the full-precision tail is
    read in tiles of G."""
    sid, g, b = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    pb = 8 // BITS
    BQ = NG * G
    nq = tc.load(QLen, (b,), (None,))
    nr = tc.load(RLen, (b,), (None,))
    t_new = Q.shape[2]
    q = tc.reshape(tc.load(Q, (b, g * GROUP, 0, 0), (None, GROUP, BT, BD)), (GROUP * BT, BD)) * scale_log2
    last = (nq + nr - t_new) + tc.arange(GROUP * BT) % BT
    m_i = tc.full((GROUP * BT,), NEG_BIG, tc.float32)
    l_i = tc.zeros((GROUP * BT,), tc.float32)
    acc = tc.zeros((GROUP * BT, BD), tc.float32)
    start = sid * chunk
    stop = tc.minimum(nq, start + chunk)
    for n in tc.range(start, stop, BQ):                      # NG quantized groups of this split
        # keys dequantized for this step only (scale and zero per group and channel)
        kcodes = unpack_groups(tc.load(KC, (b, g, n // pb, 0), (None, None, BQ // pb, BD)), NG, G, BD, BITS)
        ks = tc.load(KS, (b, g, n // G, 0), (None, None, NG, BD))
        kz = tc.load(KZ, (b, g, n // G, 0), (None, None, NG, BD))
        if NG == 1:
            # one key group: its scale and zero are per channel for the whole step, so they
            # fold into q and the dot reads plain codes
            s = tc.dot(q * ks, tc.trans(tc.reshape(kcodes, (BQ, BD)))) + tc.sum(q * kz, 1)[:, None]
        else:
            s = tc.dot(q, tc.trans(tc.reshape(kcodes * ks[:, None, None, :] + kz[:, None, None, :], (BQ, BD))))
        cols = n + tc.arange(BQ)
        s = tc.where((cols[None, :] <= last[:, None]) & (cols[None, :] < stop), s, -math.inf)
        m_new, p, alpha, l_i = online_softmax(m_i, l_i, s)
        # values stay codes: their scale and zero are per token, so they fold into the weights
        vcodes = unpack_groups(tc.load(VC, (b, g, n // pb, 0), (None, None, BQ // pb, BD)), NG, G, BD, BITS)
        vs = tc.load(VS, (b, g, n), (None, None, BQ))
        vz = tc.load(VZ, (b, g, n), (None, None, BQ))
        acc = tc.dot(p * vs[None, :], tc.reshape(vcodes, (BQ, BD)),
                     acc * alpha[:, None] + tc.sum(p * vz[None, :], 1)[:, None])
        m_i = m_new
    r_stop = tc.where(sid == 0, nr, 0)                       # the full-precision tail: split 0 only
    for n in tc.range(0, r_stop, G):
        k = tc.load(KR, (b, g, n, 0), (None, None, G, BD))
        s = tc.dot(q, tc.trans(k))
        local = n + tc.arange(G)
        s = tc.where(((nq + local)[None, :] <= last[:, None]) & (local[None, :] < nr), s, -math.inf)
        m_new, p, alpha, l_i = online_softmax(m_i, l_i, s)
        v = tc.load(VR, (b, g, n, 0), (None, None, G, BD))
        acc = tc.dot(p, v, acc * alpha[:, None])
        m_i = m_new
    finish(O, OP, LP, acc, m_i, l_i, b, g, sid, GROUP, BT, BD, SPLIT)


@tc.func
def unpack_groups(packed, NG, G, BD, BITS):
    """(NG * G/PB, BD) bytes of NG consecutive groups -> (NG, PB, G/PB, BD) float32 codes, whose
    reshape to (NG * G, BD) is the tokens in order."""
    pb = 8 // BITS
    levels = (1 << BITS) - 1
    shifts = tc.arange(pb) * BITS
    # shifted as int32 lanes: there is no byte shift in AVX-512, and LLVM's byte-shift code was slower
    by_group = tc.cast(tc.reshape(packed, (NG, G // pb, BD)), tc.int32)
    return tc.cast((by_group[:, None, :, :] >> shifts[None, :, None, None]) & levels, tc.float32)


@dataclass
class QuantizedKV:
    """A KIVI cache. Codes are uint8 (B, Hkv, capacity_q * bits / 8, D) in the packed layout of
    the module doc; k_scale/k_zero are fp32 (B, Hkv, capacity_q / G, D); v_scale/v_zero fp32
    (B, Hkv, capacity_q); k_res/v_res (B, Hkv, residual + G, D) in the input dtype;
    q_len/r_len int32 (B,) quantized and residual token counts per sequence."""
    k_codes: Any
    k_scale: Any
    k_zero: Any
    v_codes: Any
    v_scale: Any
    v_zero: Any
    k_res: Any
    v_res: Any
    q_len: Any
    r_len: Any
    bits: int
    group: int
    residual: int
    capacity: int | None = None     # tokens per sequence (quantize_kv's L); None: what the arrays hold

    # the array fields, in order (a class constant, not a dataclass field)
    ARRAYS = ("k_codes", "k_scale", "k_zero", "v_codes", "v_scale", "v_zero", "k_res", "v_res", "q_len", "r_len")

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in (getattr(self, n) for n in self.ARRAYS))

    def dequantize(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, v, lengths) as fp32 NumPy caches (for tests and inspection; decoding never does this)."""
        kc, vc = unpack_host(np.asarray(self.k_codes), self.bits, self.group), \
            unpack_host(np.asarray(self.v_codes), self.bits, self.group)
        ks = np.repeat(np.asarray(self.k_scale), self.group, axis=2)
        kz = np.repeat(np.asarray(self.k_zero), self.group, axis=2)
        k = kc * ks + kz
        v = vc * np.asarray(self.v_scale)[..., None] + np.asarray(self.v_zero)[..., None]
        ql, rl = np.asarray(self.q_len), np.asarray(self.r_len)
        cap = k.shape[2] + self.k_res.shape[2]
        kk = np.zeros(k.shape[:2] + (cap, k.shape[3]), np.float32)
        vv = np.zeros_like(kk)
        kr = np.asarray(self.k_res, np.float32)
        vr = np.asarray(self.v_res, np.float32)
        for b in range(k.shape[0]):
            n, r = int(ql[b]), int(rl[b])
            kk[b, :, :n], vv[b, :, :n] = k[b, :, :n], v[b, :, :n]
            kk[b, :, n:n + r], vv[b, :, n:n + r] = kr[b, :, :r], vr[b, :, :r]
        return kk, vv, (ql + rl).astype(np.int32)


def unpack_host(packed: np.ndarray, bits: int, group: int) -> np.ndarray:
    """NumPy inverse of the packed layout: (..., n * bits / 8, D) uint8 -> (..., n, D) fp32 codes."""
    pb = 8 // bits
    *lead, nbytes, d = packed.shape
    groups = nbytes * pb // group
    x = packed.reshape(*lead, groups, group // pb, d)
    codes = np.stack([(x >> (j * bits)) & ((1 << bits) - 1) for j in range(pb)], axis=-3)
    return codes.reshape(*lead, groups * group, d).astype(np.float32)


def _check_quant_params(bits: int, group: int, residual: int) -> None:
    if bits not in (2, 4):
        raise tc.InputError(f"bits must be 2 or 4, got {bits!r}")
    if group not in (16, 32, 64, 128, 256):
        raise tc.InputError(f"group must be one of 16, 32, 64, 128, 256, got {group!r}")
    if not isinstance(residual, int) or residual < 0:
        raise tc.InputError(f"residual must be a non-negative int, got {residual!r}")


def quantize_kv(k: Any, v: Any, lengths: Any = None, *, bits: int = 2, group: int = 32, residual: int = 32,
                backend: str | None = None) -> QuantizedKV:
    """Quantize a (B, Hkv, L, D) KV cache KIVI-style. Sequence b keeps its first
    ``(lengths[b] - residual) // group * group`` tokens in ``bits`` bits and the rest (fewer
    than residual + group) in full precision. ``lengths`` defaults to L for every sequence."""
    _check_quant_params(bits, group, residual)
    ik0 = check_rank("k", k, 4)
    bsz, kv_heads, cap, d = ik0.shape
    ik, _ = check_kv_pair(k, v, bsz, kv_heads, d, ik0.dtype, ref="k", ref_heads="k's kv heads")
    check_head_dim(d)
    if lengths is None:
        lengths = np.full(bsz, cap, np.int32)
    if ik.library != "numpy":
        raise tc.InputError("quantize_kv takes NumPy arrays for now (the residual split is done on the host)")
    check_rank("lengths", lengths, 1, ("int32",))
    lens = np.asarray(lengths)
    if lens.shape != (bsz,) or lens.min(initial=0) < 0 or lens.max(initial=0) > cap:
        raise tc.InputError(f"lengths must be ({bsz},) int32 in [0, {cap}], got {lens}")
    be = pick_backend({"k": k, "v": v}, backend)
    cap_q = cap // group * group
    pb = 8 // bits
    q_len = (np.maximum(lens - residual, 0) // group * group).astype(np.int32)
    r_len = (lens - q_len).astype(np.int32)
    kc = np.zeros((bsz, kv_heads, cap_q // pb, d), np.uint8)
    vc = np.zeros_like(kc)
    ks = np.zeros((bsz, kv_heads, cap_q // group, d), np.float32)
    kz, vs, vz = np.zeros_like(ks), np.zeros((bsz, kv_heads, cap_q), np.float32), \
        np.zeros((bsz, kv_heads, cap_q), np.float32)
    groups = int(q_len.max(initial=0)) // group
    if groups and kv_heads:
        bd = head_tile(d, be)
        quantize_kernel[(groups, kv_heads, bsz)](k, v, kc, ks, kz, vc, vs, vz, backend=be, G=group, BD=bd,
                                                 BITS=bits)
        for b in np.flatnonzero(q_len < groups * group):    # the launch covered the longest sequence
            n = int(q_len[b])
            kc[b, :, n // pb:], vc[b, :, n // pb:], ks[b, :, n // group:], kz[b, :, n // group:] = 0, 0, 0, 0
            vs[b, :, n:], vz[b, :, n:] = 0, 0
    k_res = output_like(k, (bsz, kv_heads, residual + group, d), ik.dtype)
    v_res = output_like(v, (bsz, kv_heads, residual + group, d), ik.dtype)
    k_res[...] = 0
    v_res[...] = 0
    for b in range(bsz):
        n, r = int(q_len[b]), int(r_len[b])
        k_res[b, :, :r] = k[b, :, n:n + r]
        v_res[b, :, :r] = v[b, :, n:n + r]
    return QuantizedKV(kc, ks, kz, vc, vs, vz, k_res, v_res, q_len, r_len, bits, group, residual, cap)


def append_kv(cache: QuantizedKV, k: Any, v: Any, *, backend: str | None = None) -> QuantizedKV:
    """Append T new tokens to every sequence of a KIVI cache, in place: k and v are
    (B, Hkv, T, D) in the residual's dtype. The tokens join the full-precision residual; whenever
    it holds ``residual + group`` tokens its oldest ``group`` are quantized into the next key
    group. So a cache built token by token equals ``quantize_kv`` of the whole sequences.
    Raises before changing anything when a sequence would outgrow the cache's capacity (make
    the cache with room: quantize_kv of arrays longer than the sequences)."""
    if not all(type(getattr(cache, name)) is np.ndarray for name in cache.ARRAYS):
        raise tc.InputError("append_kv takes a cache of NumPy arrays (as quantize_kv makes them)")
    bsz, kv_heads, _, d = cache.k_res.shape
    res = check_rank("cache.k_res", cache.k_res, 4)
    ik = check_rank("k", k, 4)
    if ik.shape[1] != kv_heads:
        raise tc.InputError(f"k and v (the new tokens) have {ik.shape[1]} kv heads, the cache has {kv_heads}")
    ik, _ = check_kv_pair(k, v, bsz, kv_heads, d, res.dtype, ref="the cache (k_res)", ref_heads="the cache's kv heads")
    if ik.library != "numpy":
        raise tc.InputError("append_kv takes NumPy arrays for k and v (the residual window is kept on the host)")
    capacity = cache.capacity
    if capacity is not None:
        after = np.asarray(cache.q_len) + np.asarray(cache.r_len) + ik.shape[2]
        if after.max(initial=0) > capacity:
            b = int(np.argmax(after))
            raise tc.InputError(f"append_kv: sequence {b} would hold {int(after[b])} tokens with the "
                                f"{ik.shape[2]} new ones in k/v, more than the cache's capacity of {capacity} "
                                f"(quantize_kv's length L); make the cache with room")
    # Each sequence's window (its residual, then the new tokens) is quantize_kv's input: the
    # groups it quantizes are the ones leaving the window, its residual is the new window. The
    # cache is written only after every window is quantized, so a failure leaves it as it was.
    lengths = (cache.r_len + ik.shape[2]).astype(np.int32)
    windows = [np.zeros((bsz, kv_heads, int(lengths.max(initial=0)), d), cache.k_res.dtype) for _ in range(2)]
    for b, r in enumerate(cache.r_len.tolist()):
        for window, res, new in zip(windows, (cache.k_res, cache.v_res), (k, v)):
            window[b, :, :r], window[b, :, r:lengths[b]] = res[b, :, :r], new[b]
    part = quantize_kv(*windows, lengths, bits=cache.bits, group=cache.group, residual=cache.residual,
                       backend=backend)
    g, pb = cache.group, 8 // cache.bits
    cap_q = cache.k_codes.shape[2] * pb
    full = np.flatnonzero(cache.q_len + part.q_len > cap_q)
    if full.size:
        b = int(full[0])
        raise tc.InputError(f"sequence {b} would need {int(cache.q_len[b] + part.q_len[b])} quantized tokens, "
                            f"more than the cache's capacity of {cap_q}")
    for b, (n, added) in enumerate(zip(cache.q_len.tolist(), part.q_len.tolist())):
        codes, groups, tokens = slice(n // pb, (n + added) // pb), slice(n // g, (n + added) // g), slice(n, n + added)
        cache.k_codes[b, :, codes], cache.v_codes[b, :, codes] = part.k_codes[b, :, :added // pb], \
            part.v_codes[b, :, :added // pb]
        cache.k_scale[b, :, groups], cache.k_zero[b, :, groups] = part.k_scale[b, :, :added // g], \
            part.k_zero[b, :, :added // g]
        cache.v_scale[b, :, tokens], cache.v_zero[b, :, tokens] = part.v_scale[b, :, :added], part.v_zero[b, :, :added]
    cache.k_res[...], cache.v_res[...] = part.k_res, part.v_res     # the same residual + group rows
    cache.q_len += part.q_len
    cache.r_len[...] = part.r_len
    return cache


# a step is NG of the cache's key groups (the group size was fixed when it was quantized)
TILES = [Param("BD", (16, 32, 64, 128, 256)), Param("NS", (1, 2, 4, 8, 16, 32, 64)),
         Param("NG", (1, 2, 4, 8, 16, 32), "key groups per step")]


# GPUs: one key group per step. Compiled by Triton for sm_80 at d 128 and groups of 32, fewer
# than 8 warps spilled (255 registers), and so did two groups per step even at 8 warps; 8 warps
# and one group used 244.
GPU_TILES = [TILES[0], TILES[1]]


def space(backend: str = "numba"):
    if backend == "numba":
        return backend_space(TILES, [], backend)
    return backend_space(GPU_TILES, [], backend, narrow={"num_warps": (8, 16)})


def default_config(shape: dict, backend: str = "numba") -> dict:
    d = shape["D"]
    programs = shape["B"] * shape["Hkv"]
    g = shape.get("G", 32)
    ng = 1
    if backend == "numba":
        # Steps of 512 tokens: fewer pay the per-step work (softmax, rescale) more often. 16k
        # tokens, d 128, 8 KV heads, two threads, 2026-12-03 (fp32 cache 9.0-9.3 ms): groups of
        # 32 in steps of 2/4/8/16 groups 3.5/3.1-3.3/3.0-3.1/2.8-2.9 ms; groups of 128 in steps
        # of 1/2/4 groups 3.0-3.1/3.0/2.9-3.0 ms (one group folds its scale into q instead).
        while ng < 32 and 2 * ng * g <= min(512, max(shape["L"], g)):
            ng *= 2
    ns = 1
    while ns < 64 and programs * ns < target_programs(backend) and shape["L"] >= 4 * ns * g * ng:
        ns *= 2
    cfg = {"BD": head_tile(d, backend), "NS": ns}
    if backend == "numba":
        cfg.update({"NG": ng, "dot": "blas"})
    elif backend == "triton":
        # d 128, groups of 32, compiled for sm_80: 4 warps used 255 registers and spilled 320 B, 8 used 244
        cfg.update(num_warps=8, num_stages=3)
    return cfg


def decode_attention_quantized(q: Any, cache: QuantizedKV, *, scale: float | None = None,
                               backend: str | None = None, config: dict | None = None) -> Any:
    """decode_attention over a QuantizedKV cache: q (B, H, T, D); the T new tokens must be the
    cache's last T tokens. Returns (B, H, T, D) like q."""
    iq = check_rank("q", q, 4)
    bsz, heads, t_new, d = iq.shape
    check_head_dim(d)
    ick = check_rank("k_codes", cache.k_codes, 4, ("uint8",))
    if ick.shape[0] != bsz or ick.shape[3] != d or heads % max(ick.shape[1], 1):
        raise tc.InputError(f"cache codes {ick.shape} do not match q {iq.shape}")
    if check_rank("k_res", cache.k_res, 4).dtype != iq.dtype:
        raise tc.InputError(f"q is {iq.dtype.name} but the cache's residual is {describe_dtype(cache.k_res)}")
    lens = np.asarray(cache.q_len) + np.asarray(cache.r_len)
    if t_new < 1 or lens.min(initial=t_new) < t_new:
        raise tc.InputError(f"every sequence needs at least the {t_new} new tokens in its cache, lengths {lens}")
    kv_heads = ick.shape[1]
    cap_q = ick.shape[2] * 8 // cache.bits
    be = pick_backend({"q": q, "k_codes": cache.k_codes, "k_res": cache.k_res}, backend)
    shape = {"B": bsz, "H": heads, "Hkv": kv_heads, "T": t_new, "L": cap_q, "D": d, "G": cache.group}
    cfg = choose_config("decode_attention_quantized", shape, iq.dtype.name, be, iq.device, config, space(be),
                        default_config(shape, be))
    out = output_like(q, (bsz, heads, t_new, d), iq.dtype)
    if bsz == 0:
        return out
    scale = 1.0 / math.sqrt(d) if scale is None else check_scalar("scale", scale)
    inputs = (q, cache.k_codes, cache.k_scale, cache.k_zero, cache.v_codes, cache.v_scale, cache.v_zero,
              cache.k_res, cache.v_res, cache.q_len, cache.r_len)
    # split-K chunks must be whole steps of NG key groups (launch_decode rounds chunks to BN)
    launch_decode(decode_quant_kernel, inputs, out, scale * LOG2E, max(cap_q, 1), shape,
                  {**cfg, "BN": cache.group * cfg.get("NG", 1)}, be, G=cache.group, BITS=cache.bits)
    return out


def describe_dtype(x: Any) -> str:
    from tilec.runtime.arrays import describe
    return describe(x).dtype.name


def reference(inputs: dict) -> np.ndarray:
    """Decoding against the dequantized cache, in float64."""
    from .decode import reference as decode_reference
    k, v, lengths = inputs["cache"].dequantize()
    return decode_reference({"q": inputs["q"], "k_cache": k, "v_cache": v, "lengths": lengths,
                             "scale": inputs.get("scale")})


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    b, h, hkv, t, cap, d = (shape[n] for n in ("B", "H", "Hkv", "T", "L", "D"))
    k, v = random_array((b, hkv, cap, d), dtype, rng), random_array((b, hkv, cap, d), dtype, rng)
    lengths = rng.integers(max(t, cap // 2), cap + 1, size=b).astype(np.int32)
    cache = quantize_kv(k, v, lengths, bits=shape.get("bits", 2), group=shape.get("G", 32),
                        residual=shape.get("R", 32))
    return {"q": random_array((b, h, t, d), dtype, rng), "cache": cache}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return decode_attention_quantized(inputs["q"], inputs["cache"], scale=inputs.get("scale"), backend=backend,
                                      config=config)


def _bytes(s: dict, dtype: str) -> float:
    """The packed cache (codes, a scale and zero per key group and channel and per value
    token) and the queries and outputs."""
    bits, g = s.get("bits", 2), s.get("G", 32)
    per_token = 2 * s["D"] * bits / 8 + 4 * 2 * s["D"] / g + 4 * 2
    e = 4 if dtype == "float32" else 2
    return float(s["B"] * s["Hkv"] * s["L"] * per_token + 2 * s["B"] * s["H"] * s["T"] * s["D"] * e)


def launch_ir(shape: dict, dtype: str, config: dict):
    """The decode kernel over a 2-bit cache (``shape["bits"]`` for 4) of key groups ``shape["G"]``."""
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    dd, f32, u8, i32 = dtypes.lookup(dtype), dtypes.float32, dtypes.uint8, dtypes.int32
    split = config.get("NS", 1) > 1
    group = shape.get("G", 32)
    types = {"Q": TensorType(4, dd), "KC": TensorType(4, u8), "KS": TensorType(4, f32), "KZ": TensorType(4, f32),
             "VC": TensorType(4, u8), "VS": TensorType(3, f32), "VZ": TensorType(3, f32),
             "KR": TensorType(4, dd), "VR": TensorType(4, dd), "QLen": TensorType(1, i32), "RLen": TensorType(1, i32),
             "O": TensorType(4, dd), "OP": TensorType(5 if split else 4, f32 if split else dd),
             "LP": TensorType(4, f32 if split else dd),
             "scale_log2": TileType((), f32), "chunk": TileType((), dtypes.int64)}
    tiles = {k: v for k, v in config.items() if k != "NS"}
    constexprs, _ = decode_quant_kernel.split_config({**tiles, "BN": group * config.get("NG", 1)})
    constexprs = {"GROUP": shape["H"] // shape["Hkv"], "BT": shape["T"], "SPLIT": split, "G": group,
                  "BITS": shape.get("bits", 2), **constexprs}
    fn = decode_quant_kernel.ir(types, constexprs)
    return decode_quant_kernel, fn, (config.get("NS", 1), shape["Hkv"], shape["B"])


SPEC = OpSpec(
    name="decode_attention_quantized", doc="Decoding attention straight from a 2/4-bit KIVI cache",
    kernels={"decode_quant": decode_quant_kernel, "quantize": quantize_kernel},
    shape_names=("B", "H", "Hkv", "T", "L", "D"), space=space, default_config=default_config,
    make_inputs=make_inputs, run=run, reference=reference,
    flops=lambda s: 4.0 * s["B"] * s["H"] * s["T"] * s["L"] * s["D"], bytes=_bytes, launch_ir=launch_ir,
    dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (1e-3, 1e-3) if dtype == "float32" else (2e-2, 2e-2),
    extra={"fixed_by_shape": ("BD",),   # the head size, padded
           "test_shapes": [{"B": 2, "H": 4, "Hkv": 2, "T": 1, "L": 70, "D": 32, "G": 32, "R": 8}],
           "compile_shape": {"B": 1, "H": 32, "Hkv": 8, "T": 1, "L": 16384, "D": 128, "G": 32}},
)
