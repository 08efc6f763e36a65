"""Group-wise weight-only integer quantization: the packed layout and the host-side quantizer.

Layout (``QuantLayout``), for a weight matrix W of shape (K, N) used as ``y = x @ W``:

- groups run along K: rows ``g*G .. g*G+G-1`` of one column share a scale (and a zero point);
- ``qweight`` is uint8 of shape (K, N * bits // 8): each byte holds ``8 // bits`` neighbouring
  columns of one row, the lowest bits holding the lowest column (``packing="N"``), so a kernel
  streams a row of packed bytes contiguously along N;
- ``scales`` is float32 (K // G, N); ``zeros`` is uint8 (K // G, N) for asymmetric
  quantization and absent for symmetric, whose zero point is ``2**(bits-1)`` (codes are stored
  unsigned, offset by it);
- dequantized: ``W[k, n] = scales[k // G, n] * (code[k, n] - zero[k // G, n])``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilec.errors import InputError

SUPPORTED_BITS = (4, 8)


@dataclass(frozen=True)
class QuantLayout:
    """What a packed weight is (like BitBLAS's MatmulConfig): enough to unpack it."""
    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    layout: str = "KN"        # W is (K, N); groups run along K
    packing: str = "N"        # codes of neighbouring columns share a byte, low bits first

    @property
    def per_byte(self) -> int:
        return 8 // self.bits

    @property
    def implicit_zero(self) -> int:
        """The zero point of symmetric codes (stored unsigned)."""
        return 1 << (self.bits - 1)


@dataclass(frozen=True)
class QuantizedWeight:
    qweight: np.ndarray           # uint8 (K, N * bits // 8)
    scales: np.ndarray            # float32 (K // G, N)
    zeros: np.ndarray | None      # uint8 (K // G, N), None when symmetric
    shape: tuple[int, int]        # (K, N) of the original weight
    config: QuantLayout

    @property
    def nbytes(self) -> int:
        return self.qweight.nbytes + self.scales.nbytes + (0 if self.zeros is None else self.zeros.nbytes)

    def by_byte_lane(self) -> tuple:
        """(scales, zeros) as (K/G, N/P, P) views, P codes per byte: the kernel's layout, where
        column p of byte j is output column j*P + p. Symmetric weights have no zeros: the
        scales stand in (the kernel never reads them)."""
        c = self.config
        k, n = self.shape
        scales = self.scales.reshape(k // c.group_size, n // c.per_byte, c.per_byte)
        return scales, scales if self.zeros is None else self.zeros.reshape(scales.shape)

    def codes(self) -> np.ndarray:
        """Unpacked unsigned codes, (K, N) uint8."""
        return unpack_codes(self.qweight, self.config.bits)

    def dequantize(self) -> np.ndarray:
        """The float32 (K, N) matrix these codes stand for (for references and baselines)."""
        c = self.config
        k, n = self.shape
        codes = self.codes().astype(np.float32).reshape(k // c.group_size, c.group_size, n)
        zero = np.float32(c.implicit_zero) if self.zeros is None else \
            self.zeros.astype(np.float32)[:, None, :]
        return (self.scales[:, None, :] * (codes - zero)).reshape(k, n)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(K, N) codes < 2**bits -> (K, N * bits // 8) bytes, low bits = lower column."""
    per = 8 // bits
    k, n = codes.shape
    c = codes.astype(np.uint8).reshape(k, n // per, per)
    out = np.zeros((k, n // per), np.uint8)
    for j in range(per):
        out |= (c[:, :, j] << np.uint8(j * bits)).astype(np.uint8)
    return out


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    k, nb = packed.shape
    out = np.empty((k, nb, per), np.uint8)
    for j in range(per):
        out[:, :, j] = (packed >> np.uint8(j * bits)) & mask
    return out.reshape(k, nb * per)


def fitting_group(k: int, preferred: int = 128) -> int:
    """The largest of preferred, preferred/2, ... 8 that divides K, else K itself (one group):
    lets generic tests pick any K for ops whose weights need K % group_size == 0."""
    g = preferred
    while g >= 8:
        if k % g == 0:
            return g
        g //= 2
    return k


def check_weight(w, group_size: int, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"{what} needs a 2-D weight (K, N), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise InputError(f"{what} needs a floating-point weight, got {w.dtype}")
    if not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise InputError(f"{what}: group_size must be a positive int, got {group_size!r}")
    k = w.shape[0]
    if k % group_size:
        raise InputError(f"{what}: K={k} (rows of the weight) is not a multiple of group_size={group_size}; "
                         f"pad the weight or pick a group size that divides K")
    w = w.astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise InputError(f"{what}: the weight holds NaN or infinite values")
    return w


def _nonzero(scale: np.ndarray) -> np.ndarray:
    """Scales to divide by: an all-zero group (scale 0) divides by 1. Its stored scale stays 0,
    so the kernels' ``scale * (x . codes - zero * sum(x))`` is exactly 0 there, not the
    rounding error of two equal sums."""
    return np.where(scale > 0, scale, np.float32(1.0))


def quantize(w, bits: int = 4, group_size: int = 128, symmetric: bool = True) -> QuantizedWeight:
    """Round-to-nearest group-wise quantization of a (K, N) weight into the packed layout.

    Symmetric: codes in [-(2**(b-1) - 1), 2**(b-1) - 1] times absmax / (2**(b-1) - 1), stored
    offset by 2**(b-1). Asymmetric: codes in [0, 2**b - 1] with a per-group integer zero point.
    """
    if bits not in SUPPORTED_BITS:
        raise InputError(f"quantize: bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    w = check_weight(w, group_size, "quantize")
    k, n = w.shape
    per = 8 // bits
    if n % per:
        raise InputError(f"quantize: N={n} (columns) must be a multiple of {per} to pack {bits}-bit codes")
    cfg = QuantLayout(bits, int(group_size), bool(symmetric))
    wg = w.reshape(k // group_size, group_size, n)
    top = (1 << bits) - 1
    if symmetric:
        half = (1 << (bits - 1)) - 1
        scale = (np.abs(wg).max(axis=1) / half).astype(np.float32)
        q = np.clip(np.rint(wg / _nonzero(scale)[:, None, :]), -half, half) + cfg.implicit_zero
        zeros = None
    else:
        lo, hi = np.minimum(wg.min(axis=1), 0), np.maximum(wg.max(axis=1), 0)
        scale = ((hi - lo) / top).astype(np.float32)
        zero = np.clip(np.rint(-lo / _nonzero(scale)), 0, top)
        q = np.clip(np.rint(wg / _nonzero(scale)[:, None, :]) + zero[:, None, :], 0, top)
        zeros = zero.astype(np.uint8)
    codes = q.astype(np.uint8).reshape(k, n)
    return QuantizedWeight(pack_codes(codes, bits), scale, zeros, (k, n), cfg)
