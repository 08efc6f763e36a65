"""Host-side preparation of what restricts attention: masks, sliding windows, packed batches.

The attention kernel reads three things made here:
- an additive mask in log2 units (float32, shape (Bm, Hm, Qm, Lk) with Bm in {1, B}, Hm in
  {1, H}, Qm in {1, Lq}: broadcast dimensions stay of extent 1 and the kernel indexes them at 0);
- a block map (int32, (Bm, Hm, query blocks or 1, key blocks)) saying per tile of the score
  matrix whether it is SKIP (every entry masked: never loaded nor computed), FULL (nothing
  masked: the mask tile is not read) or PARTIAL (the mask tile is loaded and added);
- for packed variable-length batches, per query row the half-open key range [lo, hi) it sees.
Additive values at or below -1e30 (e.g. torch.finfo(float32).min, what models add for padding)
count as masked (-inf), so a row whose every key is masked gives zeros and LSE -inf.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tilec.errors import InputError
from tilec.runtime.arrays import library_of

LOG2E = 1.4426950408889634
MASKED_AT = -1.0e30        # additive values at or below count as masked
SKIP, FULL, PARTIAL = 0, 1, 2
UNBOUNDED = 1 << 30         # a window side without a bound


def to_host(x: Any, name: str) -> np.ndarray:
    """A NumPy copy or view of any array tilec takes (Torch, CuPy, NumPy), bools included."""
    lib = type(x).__module__.split(".")[0]
    if lib == "torch":
        x = x.detach().cpu()
        return (x.float() if x.dtype.is_floating_point and x.element_size() == 2 else x).numpy()
    if lib == "cupy":
        return x.get()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - anything NumPy cannot read is the caller's input
        raise InputError(f"{name} must be an array, got {type(x).__name__}") from e


def like(ref: Any, a: np.ndarray) -> Any:
    """``a`` as an array of ``ref``'s library and device."""
    lib = library_of(ref)
    if lib == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(a)).to(ref.device)
    if lib == "cupy":
        import cupy
        with cupy.cuda.Device(ref.device.id):
            return cupy.asarray(a)
    return np.ascontiguousarray(a)


def additive_mask(mask: Any, b: int, h: int, lq: int, lk: int) -> np.ndarray:
    """``mask`` (bool, True = attend, or additive float) as a float32 additive mask in log2
    units of shape (Bm, Hm, Qm, Lk), broadcast dimensions kept at extent 1."""
    m = to_host(mask, "mask")
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.floating) and m.dtype.kind != "V":
        raise InputError(f"mask must be bool (True = attend) or floating (added to the scores), got {m.dtype}")
    if m.dtype.kind == "V" or m.dtype.itemsize == 2 and m.dtype != np.float16:   # bfloat16 bits
        raise InputError("mask must be bool, float16, float32 or float64")
    if m.ndim > 4:
        raise InputError(f"mask must have at most 4 dimensions, got shape {m.shape}")
    full = (b, h, lq, lk)
    shape = (1,) * (4 - m.ndim) + tuple(m.shape)
    for have, want in zip(shape, full):
        if have not in (1, want):
            raise InputError(f"mask of shape {tuple(m.shape)} does not broadcast to (B, H, Lq, Lk) = {full}")
    if shape[3] != lk:
        m = np.broadcast_to(m.reshape(shape), shape[:3] + (lk,))
    m = m.reshape(shape[:3] + (lk,))
    if m.dtype == np.bool_:
        return np.where(m, np.float32(0), np.float32(-np.inf))
    m = m.astype(np.float32) * np.float32(LOG2E)
    if np.isnan(m).any():
        raise InputError("mask holds NaN")
    return np.where(m <= MASKED_AT, np.float32(-np.inf), m)


def _blocks_all(x: np.ndarray, bm: int, bn: int) -> np.ndarray:
    """Per (bm x bn) block of the last two axes: are all entries True (ragged edges count True)."""
    q, k = x.shape[-2:]
    nq, nk = -(-q // bm), -(-k // bn)
    pad = np.ones(x.shape[:-2] + (nq * bm, nk * bn), bool)
    pad[..., :q, :k] = x
    return pad.reshape(x.shape[:-2] + (nq, bm, nk, bn)).all(axis=(-3, -1))


def block_map(m: np.ndarray, bm: int, bn: int) -> np.ndarray:
    """SKIP / FULL / PARTIAL per tile of an additive mask from ``additive_mask``; a mask shared
    by all query rows (Qm = 1) gets one query block."""
    rows = bm if m.shape[2] > 1 else 1
    out = np.full(m.shape[:2] + (-(-m.shape[2] // rows), -(-m.shape[3] // bn)), PARTIAL, np.int32)
    out[_blocks_all(m == 0, rows, bn)] = FULL
    out[_blocks_all(np.isneginf(m), rows, bn)] = SKIP
    return out


def window_bounds(window: Any) -> tuple[int, int] | None:
    """``window=(left, right)``: keys j with i - left <= j <= i + right are seen (positions
    aligned to the end); None or a negative side means unbounded."""
    if window is None:
        return None
    try:
        left, right = (int(w) if w is not None else -1 for w in window)
    except (TypeError, ValueError):
        raise InputError(f"window must be (left, right) with ints (None or -1: unbounded), got {window!r}") from None
    if left < 0 and right < 0:
        return None
    return (UNBOUNDED if left < 0 else left, UNBOUNDED if right < 0 else right)


def check_cu_seqlens(cu: Any, name: str, total: int) -> np.ndarray:
    c = to_host(cu, name)
    if c.ndim != 1 or c.size < 1 or not np.issubdtype(c.dtype, np.integer):
        raise InputError(f"{name} must be a 1-D integer array (batch + 1 offsets), got {c.dtype} {c.shape}")
    c = c.astype(np.int64)
    if c[0] != 0 or (np.diff(c) < 0).any() or c[-1] != total:
        raise InputError(f"{name} must rise from 0 to the packed length {total}, got {c.tolist()[:8]}...")
    return c


def varlen_spans(cu_q: np.ndarray, cu_k: np.ndarray, causal: bool, window: tuple | None) -> tuple:
    """Per packed query row, the packed key range [lo, hi) it sees: its own sequence's keys,
    cut (causal / window) with positions aligned to the sequence's end as in FlashAttention."""
    lens_q, lens_k = np.diff(cu_q), np.diff(cu_k)
    seq = np.repeat(np.arange(lens_q.size), lens_q)
    t = np.arange(cu_q[-1]) - cu_q[:-1][seq]
    pos = t + (lens_k - lens_q)[seq]
    lo, hi = np.zeros_like(pos), lens_k[seq].copy()
    if causal:
        hi = np.minimum(hi, pos + 1)
    if window is not None:
        lo = np.maximum(lo, pos - window[0])
        hi = np.minimum(hi, pos + window[1] + 1)
    hi = np.maximum(hi, lo)
    base = cu_k[:-1][seq]
    return (base + lo).astype(np.int32), (base + hi).astype(np.int32)
