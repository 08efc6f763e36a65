"""Quantized GEMM on int8-quantized activations (``quant_gemm(..., act_quant="int8")``): the
decode form for few rows, after llama.cpp's Q8 blocks.

Two kernels. ``quantize_rows_kernel`` quantizes each row of x per weight group of G columns,
symmetric int8: ``s = max|x| / 127``, ``q = round(x / s)`` (half up) in [-127, 127], and the
sum of the group's codes. ``quant_gemm_q8_kernel`` then forms, per group, the integer dot of the
activation codes with the weight codes (``tc.dot`` of int8 by uint8, int32 sums: exact) and
applies both scales and the zero point once per group in fp32:

    y[m, n] = sum_g xs[m, g] * ws[g, n] * (dot_g(xq[m], code[:, n]) - zero[g, n] * sum_g(xq[m]))

Numerics: the integer part is exact, so the result equals the float64 value of this sum to
fp32 rounding. Against the exact fp32 path (the default, ``act_quant=None``) the only extra
error is the activation rounding, |x - s q| <= s / 2 per element, hence per output

    |y_q8[m, n] - y[m, n]| <= sum_g (max_g |x[m]| / 254) * sum_{k in g} |W[k, n]|

with W the dequantized weight (``act_quant_bound`` computes it; tests hold the kernels to it).

Weights are read in k-quad order, made once per weight (``quad_form``): four consecutive codes
of a column are four consecutive bytes, 32 columns side by side, the operand order of the
CPU's byte dot-product instructions (one int32 lane per column: no horizontal sums) and of
dp4a. For 4-bit codes a byte holds code i of its group in its low bits and code i + G/2 in its
high bits, so one AND and one shift unpack two halves of the group.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import tilec as tc
from tilec.errors import InputError
from tilec.kernel import cdiv_host
from tilec.space import Param

from ._common import backend_space, choose_config, output_like, pick_backend
from .quant_format import QuantizedWeight


@tc.kernel
def quantize_rows_kernel(X, XQ, XS, XSUM, BM: tc.constexpr, G: tc.constexpr):
    # X (M, K) float; XQ (M, K) int8 codes; XS (M, K/G) float32 scales; XSUM (M, K/G) int32 code sums
    pm, pg = tc.program_id(0), tc.program_id(1)
    x = tc.cast(tc.load(X, (pm * BM, pg * G), (BM, G)), tc.float32)
    amax = tc.max(tc.abs(x), axis=1)
    inv = 127.0 / tc.maximum(amax, 1e-30)          # an all-zero group gets codes 0
    q = tc.floor(x * inv[:, None] + 0.5)
    q = tc.cast(tc.minimum(tc.maximum(q, -127.0), 127.0), tc.int8)
    tc.store(XQ, (pm * BM, pg * G), q)
    tc.store(XS, (pm * BM, pg), amax * (1.0 / 127.0), (BM, None))
    tc.store(XSUM, (pm * BM, pg), tc.sum(q, axis=1), (BM, None))


@tc.kernel
def quant_gemm_q8_kernel(XQ, XS, XSUM, QV, S, Z, Y, BM: tc.constexpr, W: tc.constexpr, G: tc.constexpr,
                         BITS: tc.constexpr, SYMMETRIC: tc.constexpr):
    # XQ, XS, XSUM from quantize_rows_kernel; QV (N/W * K * BITS/32, 4 W) codes in k-quad order,
    # a block of W columns after another; S, Z (N/W * K/G, W) by block, then group (quad_form);
    # Y (M, N)
    pm, pn = tc.program_id(0), tc.program_id(1)
    R = G * BITS // 32                                            # rows of QV per group and block
    NG = XQ.shape[1] // G
    base = pn * NG * R
    acc = tc.zeros((BM, W), tc.float32)
    for k in tc.range(0, XQ.shape[1], G):
        g = k // G
        q = tc.load(QV, (base + g * R, 0), (R, 4 * W))
        if BITS == 4:   # low nibbles: codes 0..G/2-1 of the group, high nibbles: the rest
            d = tc.dot(tc.load(XQ, (pm * BM, k), (BM, G // 2)), tc.from_quads(q & 15))
            d = tc.dot(tc.load(XQ, (pm * BM, k + G // 2), (BM, G // 2)), tc.from_quads(q >> 4), d)
        else:
            d = tc.dot(tc.load(XQ, (pm * BM, k), (BM, G)), tc.from_quads(q))
        d = tc.cast(d, tc.float32)                                # int32 sums, exact in fp32
        xs = tc.load(XS, (pm * BM, g), (BM, None))
        xsum = tc.cast(tc.load(XSUM, (pm * BM, g), (BM, None)), tc.float32)
        s = tc.load(S, (pn * NG + g, 0), (None, W))
        if SYMMETRIC:
            zx = xsum[:, None] * float(1 << (BITS - 1))
        else:
            zx = xsum[:, None] * tc.cast(tc.load(Z, (pn * NG + g, 0), (None, W)), tc.float32)[None, :]
        acc = acc + (xs[:, None] * s[None, :]) * (d - zx)
    tc.store(Y, (pm * BM, pn * W), acc)


TILES = [Param("BM", (1, 2, 4, 8, 16))]
QUANTIZE_TILES = [Param("BM", (1, 2, 4, 8, 16))]


def space(backend: str = "numba"):
    return backend_space(TILES, [], backend)


def default_config(shape: dict, backend: str = "numba") -> dict:
    """All rows (up to 16) in one program, so each weight byte is read once and used by every row."""
    m = shape.get("M", 1)
    return {"BM": min(16, 1 << (m - 1).bit_length())}


WIDTH = 32   # columns per block of the layout: four vectors of eight int32 lanes


def group_step(bits: int) -> int:
    """Group sizes this form reads must be multiples of this: four codes per column and row,
    and for 4-bit codes a group split in two halves."""
    return 8 if bits == 4 else 4


def quad_form(qw: QuantizedWeight, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(codes, scales, zeros) as the kernel reads them, made once per weight and kept on it.

    codes (N/W * K * bits/32, 4 W) uint8: blocks of W = ``width`` columns one after another (a
    program streams one contiguous run), in each the groups in order, in each group rows of four
    bytes per column (k-quad order, ``tc.from_quads``). scales and zeros (N/W * K/G, W): one row
    per block and group in the same order, so a program reads them as one contiguous run too
    (read across the (K/G, N) originals, each group's row was another page: at K = N = 8192 those
    scattered reads cost as much again as the codes). Columns past N: code 0, scale 0."""
    cached = qw.__dict__.get("_quad_form")
    if cached is not None and cached[0].shape[1] == 4 * width:
        return cached
    c = qw.config
    k, n = qw.shape
    groups, blocks = k // c.group_size, -(-n // width)
    codes = np.zeros((groups, c.group_size, blocks * width), np.uint8)
    codes[:, :, :n] = qw.codes().reshape(groups, c.group_size, n)
    if c.bits == 4:
        half = c.group_size // 2
        codes = codes[:, :half] | (codes[:, half:] << 4)
    codes = codes.reshape(groups, -1, 4, blocks, width).transpose(3, 0, 1, 4, 2).reshape(-1, 4 * width)

    def by_block(a: np.ndarray) -> np.ndarray:
        padded = np.zeros((groups, blocks * width), a.dtype)
        padded[:, :n] = a
        return np.ascontiguousarray(padded.reshape(groups, blocks, width).transpose(1, 0, 2).reshape(-1, width))

    form = (np.ascontiguousarray(codes), by_block(qw.scales), None if qw.zeros is None else by_block(qw.zeros))
    object.__setattr__(qw, "_quad_form", form)
    return form


def quantize_rows(x2: Any, group: int, backend: str) -> tuple[Any, Any, Any]:
    """(codes int8 (M, K), scales float32 (M, K/G), code sums int32 (M, K/G)) of x2 (M, K)."""
    m, k = x2.shape
    xq = output_like(x2, (m, k), tc.int8)
    xs = output_like(x2, (m, k // group), tc.float32)
    xsum = output_like(x2, (m, k // group), tc.int32)
    bm = min(16, 1 << (m - 1).bit_length())
    quantize_rows_kernel[(cdiv_host(m, bm), k // group)](x2, xq, xs, xsum, backend=backend, BM=bm, G=group)
    return xq, xs, xsum


def plan_q8(x2: Any, qw: QuantizedWeight, backend: str | None = None, config: dict | None = None) -> tuple:
    """Check a call of x2 (M, K) on qw and decide its backend, config and grid."""
    c = qw.config
    k, n = qw.shape
    m = x2.shape[0]
    if c.group_size % group_step(c.bits):
        raise InputError(f"act_quant='int8' reads each group's {c.bits}-bit codes four bytes per column: qw's "
                         f"group size {c.group_size} must be a multiple of {group_step(c.bits)}")
    be = pick_backend({"x": x2, "qweight": qw.qweight}, backend)
    shape = {"M": m, "N": n, "K": k, "bits": c.bits, "group_size": c.group_size}
    cfg = choose_config("quant_gemm_q8", shape, f"int{c.bits}", be, getattr(x2, "device", "cpu"), config,
                        space(be), default_config(shape, be))
    return be, cfg, (cdiv_host(m, cfg["BM"]), cdiv_host(n, WIDTH)), (m, n)


def quant_gemm_q8(x2: Any, qw: QuantizedWeight, backend: str | None = None, config: dict | None = None,
                  plan: tuple | None = None) -> Any:
    """y (M, N) float32 = x2 (M, K) @ W, activations quantized to int8 per row and group;
    ``plan``: ``plan_q8``'s answer for a call of this kind, made before."""
    be, cfg, grid, (m, n) = plan or plan_q8(x2, qw, backend, config)
    c = qw.config
    qv, scales, zeros = (None if a is None else _on_device(a, x2) for a in quad_form(qw))
    zeros = scales if zeros is None else zeros
    xq, xs, xsum = quantize_rows(x2, c.group_size, be)
    y = output_like(x2, (m, n), tc.float32)
    quant_gemm_q8_kernel[grid](xq, xs, xsum, qv, scales, zeros, y, backend=be, W=WIDTH, G=c.group_size, BITS=c.bits,
                               SYMMETRIC=c.symmetric, **cfg)
    return y


def _on_device(a: np.ndarray, like: Any) -> Any:
    """A host array moved next to ``like`` (the weight's own arrays live where qweight does)."""
    if isinstance(a, np.ndarray) and not isinstance(like, np.ndarray):
        mod = type(like).__module__.split(".")[0]
        if mod == "torch":
            import torch
            return torch.from_numpy(a).to(like.device)
        if mod == "cupy":
            import cupy
            return cupy.asarray(a)
    return a


def quantize_activations(x: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of ``quantize_rows_kernel`` in float64: (codes, scales)."""
    x = np.asarray(x, np.float64)
    m, k = x.shape
    g = x.reshape(m, k // group, group)
    amax = np.abs(g).max(-1)
    q = np.clip(np.floor(g * (127.0 / np.maximum(amax, 1e-30))[..., None] + 0.5), -127, 127)
    return q.reshape(m, k).astype(np.int8), amax / 127.0


def reference_q8(xq: np.ndarray, xs: np.ndarray, qw: QuantizedWeight) -> np.ndarray:
    """float64 value of the kernel's sum for given activation codes and scales."""
    c = qw.config
    k, n = qw.shape
    groups = k // c.group_size
    codes = qw.codes().astype(np.float64).reshape(groups, c.group_size, n)
    zero = np.float64(c.implicit_zero) if qw.zeros is None else qw.zeros.astype(np.float64)[:, None, :]
    xg = np.asarray(xq, np.float64).reshape(xq.shape[0], groups, c.group_size)
    d = np.einsum("mgk,gkn->mgn", xg, codes - zero)            # exact integers
    return np.einsum("mg,gn,mgn->mn", np.asarray(xs, np.float64), qw.scales.astype(np.float64), d)


def act_quant_bound(x: np.ndarray, qw: QuantizedWeight) -> np.ndarray:
    """The bound above on |y_q8 - y| per output (M, N), from x and the dequantized weight."""
    c = qw.config
    k, n = qw.shape
    groups = k // c.group_size
    x = np.asarray(x, np.float64)
    amax = np.abs(x.reshape(x.shape[0], groups, c.group_size)).max(-1)             # (M, groups)
    wabs = np.abs(qw.dequantize().astype(np.float64)).reshape(groups, c.group_size, n).sum(1)   # (groups, N)
    return amax / 254.0 @ wabs
