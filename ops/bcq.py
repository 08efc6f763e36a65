"""Binary-coding quantization (BCQ) for LUT-GEMM: W ~ sum_i alpha_i * b_i (+ beta), b_i in {-1, +1}.

Layout (``BCQWeight``) for a weight W (K, N) used as ``y = x @ W``, groups of G rows along K:

- ``bits``  uint8 (Q, groups * ceil(G / 8), N): the sign planes, 1 for +1 and 0 for -1. Byte
  ``(i, g * GB + c, n)`` holds rows ``g*G + 8c .. g*G + 8c + 7`` of column n, bit j = row 8c + j;
  a group whose size is not a multiple of 8 is padded with zero bits (those rows do not exist
  and the kernel gives them zero activations), so every byte serves one group only;
- ``alpha`` float32 (Q, groups, N): the scale of each bit plane per group and column;
- ``beta``  float32 (groups, N) or None: an offset per group and column. Plain BCQ has none;
  uniform (round-to-nearest) integer quantization is BCQ with ``alpha_i = s * 2**(i-1)`` and
  ``beta = s * ((2**Q - 1) / 2 - z)``, which is how one LUT kernel serves both;
- dequantized: ``W[k, n] = sum_i alpha[i, g, n] * (2 * bit_i(k, n) - 1) + beta[g, n]`` with g = k // G.

Quantizers: ``greedy`` (alpha_i = mean |residual|, b_i = sign(residual), plane by plane),
``alternating`` (greedy start, then alternately least-squares alphas for fixed signs and the best
sign combination per weight for fixed alphas; Xu et al. 2018, as in the LUT-GEMM paper) and
``uniform`` (round-to-nearest asymmetric integers, written in BCQ form).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from tilec.errors import InputError

from .quant_format import check_weight

METHODS = ("greedy", "alternating", "uniform")


@dataclass(frozen=True)
class BCQLayout:
    bits: int                 # Q, the number of sign planes
    group_size: int           # G rows of K share one alpha per plane and column
    method: str
    has_offset: bool          # beta present (uniform quantization in BCQ form)

    @property
    def group_bytes(self) -> int:
        return -(-self.group_size // 8)


@dataclass(frozen=True)
class BCQWeight:
    bits: np.ndarray            # uint8 (Q, groups * GB, N)
    alpha: np.ndarray           # float32 (Q, groups, N)
    beta: np.ndarray | None     # float32 (groups, N)
    shape: tuple[int, int]      # (K, N)
    config: BCQLayout

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes + self.alpha.nbytes + (0 if self.beta is None else self.beta.nbytes)

    def signs(self) -> np.ndarray:
        """(Q, K, N) float32 of -1/+1."""
        return unpack_signs(self.bits, self.shape[0], self.config.group_size)

    def dequantize(self) -> np.ndarray:
        k, n = self.shape
        g = self.config.group_size
        s = self.signs().reshape(self.config.bits, k // g, g, n)
        w = np.einsum("qgn,qgkn->gkn", self.alpha, s)
        if self.beta is not None:
            w = w + self.beta[:, None, :]
        return w.reshape(k, n).astype(np.float32)


def pack_signs(signs: np.ndarray, group_size: int) -> np.ndarray:
    """(Q, K, N) of +-1 -> (Q, groups * GB, N) uint8, 8 rows per byte, padded per group."""
    q, k, n = signs.shape
    groups, gb = k // group_size, -(-group_size // 8)
    bit = np.zeros((q, groups, gb * 8, n), np.uint8)
    bit[:, :, :group_size, :] = (signs > 0).reshape(q, groups, group_size, n)
    bit = bit.reshape(q, groups, gb, 8, n)
    out = np.zeros((q, groups, gb, n), np.uint8)
    for j in range(8):
        out |= bit[:, :, :, j, :] << np.uint8(j)
    return out.reshape(q, groups * gb, n)


def unpack_signs(packed: np.ndarray, k: int, group_size: int) -> np.ndarray:
    q, rows, n = packed.shape
    groups, gb = k // group_size, -(-group_size // 8)
    b = packed.reshape(q, groups, gb, 1, n) >> np.arange(8, dtype=np.uint8)[None, None, None, :, None]
    b = (b & 1).reshape(q, groups, gb * 8, n)[:, :, :group_size, :]
    return (b.astype(np.float32) * 2 - 1).reshape(q, k, n)


def _greedy(wg: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    """wg (groups, G, N) -> signs (q, groups, G, N), alpha (q, groups, N)."""
    r = wg.astype(np.float64).copy()
    signs = np.empty((q,) + wg.shape, np.float64)
    alpha = np.empty((q, wg.shape[0], wg.shape[2]), np.float64)
    for i in range(q):
        b = np.where(r >= 0, 1.0, -1.0)
        a = np.abs(r).mean(axis=1)
        signs[i], alpha[i] = b, a
        r -= a[:, None, :] * b
    return signs, alpha


def _best_signs(wg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """For fixed alphas, each weight takes the sign combination whose value is nearest."""
    q = alpha.shape[0]
    combos = np.array(list(itertools.product((-1.0, 1.0), repeat=q)))          # (C, q)
    values = np.einsum("cq,qgn->gnc", combos, alpha)                            # (groups, N, C)
    order = np.argsort(values, axis=2)
    sorted_v = np.take_along_axis(values, order, axis=2)
    mids = (sorted_v[:, :, 1:] + sorted_v[:, :, :-1]) / 2                       # decision boundaries
    # index of the nearest sorted value = how many boundaries lie below w (one boundary at a
    # time: a (groups, G, N, C - 1) comparison summed over its short last axis was 3x slower)
    pos = np.zeros(wg.shape, np.intp)                                           # (groups, G, N)
    for j in range(mids.shape[2]):
        pos += wg > mids[:, None, :, j]
    groups, _, n = wg.shape
    pos += (np.arange(groups)[:, None, None] * n + np.arange(n)[None, None, :]) * len(combos)
    choice = np.take(order, pos)                                                # (groups, G, N)
    # combo c's plane i is bit q-1-i of c (itertools.product's order): no (.., q) gather
    return np.stack([((choice >> (q - 1 - i)) & 1) * 2.0 - 1.0 for i in range(q)])  # (q, groups, G, N)


def _alternating(wg: np.ndarray, q: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    signs, alpha = _greedy(wg, q)
    w = wg.astype(np.float64)
    for _ in range(iters):
        # least-squares alphas for these signs: (B^T B) alpha = B^T w per group and column
        # per group and column: sums over the group's rows (einsum's generic loops took 40% of
        # a conversion; elementwise products summed along the rows run as vector code)
        gram = np.empty((w.shape[0], w.shape[2], q, q))
        for i in range(q):
            for j in range(i + 1):
                gram[:, :, i, j] = gram[:, :, j, i] = (signs[i] * signs[j]).sum(axis=1)
        rhs = np.stack([(signs[i] * w).sum(axis=1) for i in range(q)], axis=-1)
        gram += np.eye(q) * 1e-9
        alpha = np.moveaxis(np.linalg.solve(gram, rhs[..., None])[..., 0], -1, 0)
        signs = _best_signs(w, alpha)
    # keep planes ordered by decreasing |alpha| and alphas positive (flip the signs instead)
    flip = np.where(alpha < 0, -1.0, 1.0)
    return signs * flip[:, :, None, :], np.abs(alpha)


def _uniform(wg: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric round-to-nearest q-bit integers, written as BCQ planes plus an offset."""
    top = (1 << q) - 1
    lo, hi = np.minimum(wg.min(axis=1), 0), np.maximum(wg.max(axis=1), 0)
    scale = (hi - lo) / top
    scale = np.where(scale > 0, scale, 1.0)
    zero = np.clip(np.rint(-lo / scale), 0, top)
    code = np.clip(np.rint(wg / scale[:, None, :]) + zero[:, None, :], 0, top).astype(np.int64)
    signs = np.stack([((code >> i) & 1) * 2.0 - 1 for i in range(q)])
    alpha = np.stack([scale * 2.0 ** (i - 1) for i in range(q)])
    beta = scale * (top / 2 - zero)
    return signs, alpha, beta


def _fit_group(rows: np.ndarray, q: int, method: str, iters: int) -> tuple:
    """A group's (alpha (q, N), beta (N,) or None, nearest-value table) from its rows (G, N)."""
    beta = None
    if method == "greedy":
        _, alpha = _greedy(rows[None], q)
    elif method == "alternating":
        _, alpha = _alternating(rows[None], q, iters)
    else:
        _, alpha, beta = _uniform(rows[None], q)
        beta = beta[0]
    alpha = alpha[:, 0].astype(np.float32).astype(np.float64)
    if beta is not None:
        beta = beta.astype(np.float32).astype(np.float64)
    combos = np.array(list(itertools.product((-1.0, 1.0), repeat=q)))           # (C, q)
    values = combos @ alpha + (0.0 if beta is None else beta)                    # (C, N)
    order = np.argsort(values, axis=0)
    ordered = np.take_along_axis(values, order, axis=0)
    return alpha, beta, (combos, order, ordered, (ordered[1:] + ordered[:-1]) / 2)


def _snap_row(row: np.ndarray, params: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The nearest representable value of each weight in a row, and its signs (q, N)."""
    combos, order, ordered, mids = params[2]
    pos = (row[None, :] > mids).sum(axis=0)
    cols = np.arange(row.shape[0])
    return ordered[pos, cols], combos[order[pos, cols]].T


def bcq_quantize(w, bits: int = 3, group_size: int = 128, method: str = "greedy", iters: int = 10,
                 calibration=None, damp: float = 0.01) -> BCQWeight:
    """Binary-coding quantization of a (K, N) weight with per-group, per-plane scales. With
    calibration activations X (samples, K) the signs come from GPTQ (``ops.gptq``): each group's
    scales are fitted by ``method`` and each weight takes the nearest sign combination after the
    error of the rows before it has been fed back, minimising ``||X W - X Wq||``."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 4:
        raise InputError(f"bcq_quantize: bits must be 1..4, got {bits!r}")
    if method not in METHODS:
        raise InputError(f"bcq_quantize: method must be one of {METHODS}, got {method!r}")
    w = check_weight(w, group_size, "bcq_quantize")
    k, n = w.shape
    wg = w.reshape(k // group_size, group_size, n)
    beta = None
    if calibration is not None:
        from .gptq import gptq
        params, codes = gptq(w, calibration, group_size, lambda rows: _fit_group(rows, bits, method, iters),
                             _snap_row, damp)
        signs = np.moveaxis(codes, 1, 0)                                          # (q, K, N)
        alpha = np.stack([p[0] for p in params], axis=1)
        if method == "uniform":
            beta = np.stack([p[1] for p in params])
    elif method == "greedy":
        signs, alpha = _greedy(wg, bits)
    elif method == "alternating":
        signs, alpha = _alternating(wg, bits, iters)
    else:
        signs, alpha, beta = _uniform(wg, bits)
    cfg = BCQLayout(int(bits), int(group_size), method, beta is not None)
    packed = pack_signs(signs.reshape(bits, k, n), group_size)
    return BCQWeight(packed, alpha.astype(np.float32), None if beta is None else beta.astype(np.float32),
                     (k, n), cfg)


def bcq_from_uniform(qw) -> BCQWeight:
    """A ``QuantizedWeight`` (ops.quantize) rewritten exactly in BCQ form, for ``lut_gemm``."""
    c = qw.config
    k, n = qw.shape
    g = c.group_size
    code = qw.codes().astype(np.int64).reshape(k // g, g, n)
    zero = np.full((k // g, n), c.implicit_zero, np.float64) if qw.zeros is None else qw.zeros.astype(np.float64)
    scale = qw.scales.astype(np.float64)
    signs = np.stack([((code >> i) & 1) * 2.0 - 1 for i in range(c.bits)]).reshape(c.bits, k, n)
    alpha = np.stack([scale * 2.0 ** (i - 1) for i in range(c.bits)])
    beta = scale * (((1 << c.bits) - 1) / 2 - zero)
    return BCQWeight(pack_signs(signs, g), alpha.astype(np.float32), beta.astype(np.float32), (k, n),
                     BCQLayout(c.bits, g, "uniform", True))


def relative_error(w, approx) -> float:
    """||W - approx||_F / ||W||_F."""
    w = np.asarray(w, np.float64)
    return float(np.linalg.norm(w - np.asarray(approx, np.float64)) / max(np.linalg.norm(w), 1e-30))
