"""Attention over packed variable-length batches, as FlashAttention's ``flash_attn_varlen_func``.

q is (total_q, H, D) and k, v are (total_k, Hkv, D): sequence i owns rows
cu_seqlens_q[i] .. cu_seqlens_q[i + 1] of q and the matching rows of k and v. The packed
arrays are read in place as one (1, H, total, D) batch by ``attention_kernel``; a program
serves BM query rows of one sequence, each row with the packed key range [lo, hi) it sees (its
sequence's keys, cut by ``causal`` and ``window`` aligned to the sequence's end), so only the
tiles of real tokens are computed. Outputs are written packed, in place: a program's stores
stop at its sequence's end (``tc.limit``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import tilec as tc
from tilec.kernel import cdiv_host
from tilec.runtime.arrays import library_of

from . import attn_masks
from ._common import check_rank, choose_config, output_like, pick_backend
from .attention import default_config, launch, space
from .attn_checks import check_head_dim, next_pow2
from .attn_masks import check_cu_seqlens, varlen_spans


def _permute(x: Any, order: tuple) -> Any:
    """A transposed view of a NumPy, CuPy or Torch array."""
    return x.permute(*order) if library_of(x) == "torch" else x.transpose(order)


def _heads_view(x: Any) -> Any:
    """(total, H, D) as a (1, H, total, D) view, without a copy."""
    return _permute(x, (1, 0, 2))[None]


def varlen_config(shape: dict, backend: str) -> dict:
    """attention's default for one sequence of the batch's longest lengths; on Numba 64 query
    rows (a sequence's rows are padded to whole blocks) and key tiles of up to 128: the K / V
    tiles stop at the block's last key, so BLAS does no work past a short sequence's end, and
    one tile per sequence up to 128 keys is one online-softmax step (numbers in the commit
    that chose them and bench/results/attention_masked.json)."""
    cfg = default_config(shape, backend)
    if backend == "numba":
        cfg["BM"], cfg["BN"] = min(cfg["BM"], 64), min(128, max(64, next_pow2(shape["Lk"])))
    return cfg


def check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int) -> tuple:
    """The packed arguments checked: (q's array info, kv_heads, total_k, cu_q, cu_k) with the
    offsets as int64 NumPy arrays."""
    iq, ik, iv = check_rank("q", q, 3), check_rank("k", k, 3), check_rank("v", v, 3)
    total_q, heads, d = iq.shape
    check_head_dim(d)
    if ik.shape != iv.shape or ik.shape[2] != d or ik.shape[1] < 1 or heads % ik.shape[1]:
        raise tc.InputError(f"k and v must be (total_k, kv_heads, {d}) with kv_heads dividing {heads}, "
                            f"got k {ik.shape} and v {iv.shape}")
    if not iq.dtype == ik.dtype == iv.dtype:
        raise tc.InputError(f"q, k and v must share a dtype, got {iq.dtype.name}, {ik.dtype.name}, {iv.dtype.name}")
    total_k, kv_heads = ik.shape[0], ik.shape[1]
    cu_q = check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", total_q)
    cu_k = check_cu_seqlens(cu_seqlens_k, "cu_seqlens_k", total_k)
    if cu_q.size != cu_k.size:
        raise tc.InputError(f"cu_seqlens_q and cu_seqlens_k must describe one batch, got {cu_q.size - 1} and "
                            f"{cu_k.size - 1} sequences")
    lens_q, lens_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    if lens_q.size and (lens_q.max() > max_seqlen_q or lens_k.max() > max_seqlen_k):
        raise tc.InputError(f"max_seqlen_q / max_seqlen_k ({max_seqlen_q}, {max_seqlen_k}) are below the longest "
                            f"sequences ({lens_q.max()}, {lens_k.max()})")
    return iq, kv_heads, total_k, cu_q, cu_k


def attention_varlen(q: Any, k: Any, v: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int,
                     max_seqlen_k: int, *, causal: bool = False, window: Any = None, scale: float | None = None,
                     return_lse: bool = False, backend: str | None = None, config: dict | None = None) -> Any:
    """softmax(scale * q k^T) v per packed sequence.

    q: (total_q, H, D); k, v: (total_k, Hkv, D), H % Hkv == 0; cu_seqlens_q / cu_seqlens_k:
    (batch + 1,) integer offsets from 0 to total. ``causal`` and ``window=(left, right)``
    align each sequence's queries to the end of its keys; a query row that sees no key gives
    zeros and LSE -inf. Returns (total_q, H, D), and with ``return_lse`` the (H, total_q) fp32
    log-sum-exp. ``max_seqlen_*`` are accepted for flash_attn compatibility (and checked).
    """
    iq, kv_heads, total_k, cu_q, cu_k = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                     max_seqlen_k)
    total_q, heads, d = iq.shape
    lens_q, lens_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    win = attn_masks.window_bounds(window)
    be = pick_backend({"q": q, "k": k, "v": v}, backend)
    nseq, rows = lens_q.size, int(lens_q.max(initial=0))
    shape = {"B": nseq, "H": heads, "Hkv": kv_heads, "Lq": max(1, rows), "Lk": max(1, int(lens_k.max(initial=0))),
             "D": d}
    cfg = choose_config("attention", shape, iq.dtype.name, be, iq.device, config, space(be),
                        varlen_config({**shape, "causal": bool(causal)}, be))
    if cfg["BD"] < d:
        raise tc.ConfigError(f"attention config BD={cfg['BD']} is smaller than head_dim {d}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not (total_q and heads):
        out = output_like(q, (total_q, heads, d), iq.dtype)
        lse = output_like(q, (heads, total_q), tc.float32)
    elif total_k == 0:
        out = output_like(q, (total_q, heads, d), iq.dtype)
        lse = output_like(q, (heads, total_q), tc.float32)
        out[...] = 0
        lse[...] = -math.inf
    else:
        # the kernel writes each sequence's rows in place, packed (its stores stop at the end
        # of their sequence)
        out = output_like(q, (total_q, heads, d), iq.dtype)
        lse = output_like(q, (heads, total_q), tc.float32) if return_lse else None
        lo, hi = varlen_spans(cu_q, cu_k, bool(causal), win)
        launch(_heads_view(q), _heads_view(k), _heads_view(v), _heads_view(out), None if lse is None else lse[None],
               scale, None, (lo, hi, cu_q.astype(np.int32)), None, False, cfg, be, heads // kv_heads,
               (cdiv_host(rows, cfg["BM"]), heads, nseq))
    return (out, lse) if return_lse else out


def reference(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=False, window=None, scale=None, return_lse=False):
    """Float64, one ``ops.attention.reference`` call per sequence."""
    from .attention import reference as dense
    q, k, v = (np.asarray(attn_masks.to_host(x, n), np.float64) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    cu_q, cu_k = (attn_masks.to_host(c, "cu").astype(np.int64) for c in (cu_seqlens_q, cu_seqlens_k))
    out = np.zeros(q.shape)
    lse = np.full((q.shape[1], q.shape[0]), -np.inf)
    for i in range(cu_q.size - 1):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        if qs.stop == qs.start:
            continue
        part = {"q": q[qs].transpose(1, 0, 2)[None], "k": k[ks].transpose(1, 0, 2)[None],
                "v": v[ks].transpose(1, 0, 2)[None], "causal": causal, "window": window, "scale": scale}
        if ks.stop == ks.start:
            continue
        o, s = dense(part, return_lse=True)
        out[qs] = o[0].transpose(1, 0, 2)
        lse[:, qs] = s[0]
    return (out, lse) if return_lse else out
