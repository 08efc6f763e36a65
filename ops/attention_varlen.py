"""Attention over packed variable-length batches, as FlashAttention's ``flash_attn_varlen_func``.

q is (total_q, H, D) and k, v are (total_k, Hkv, D): sequence i owns rows
cu_seqlens_q[i] .. cu_seqlens_q[i + 1] of q and the matching rows of k and v. The packed
arrays are read in place as one (1, H, total, D) batch by ``attention_kernel``, each query row
with the packed key range [lo, hi) of its own sequence (cut by ``causal`` and ``window``,
aligned to the sequence's end), so no padding is computed: a program covers BM packed rows and
visits only the key tiles those rows' sequences hold.
"""
from __future__ import annotations

import math
from typing import Any

import tilec as tc
from tilec.kernel import cdiv_host
from tilec.runtime.arrays import library_of

from . import attn_masks
from ._common import check_rank, choose_config, output_like, pick_backend
from .attention import default_config, launch, space
from .attn_checks import check_head_dim
from .attn_masks import check_cu_seqlens, varlen_spans


def _heads_view(x: Any) -> Any:
    """(total, H, D) as a (1, H, total, D) view, without a copy."""
    if library_of(x) == "torch":
        return x.permute(1, 0, 2).unsqueeze(0)
    return x.transpose(1, 0, 2)[None]


def varlen_config(shape: dict, backend: str, mean_q: float) -> dict:
    """attention's default, with query and key tiles no longer than about half the mean
    sequence: a tile that straddles sequences visits the keys of all of them."""
    cfg = default_config(shape, backend)
    tile = max(16, 1 << max(0, int(mean_q) - 1).bit_length() - 1)
    cfg["BM"], cfg["BN"] = min(cfg["BM"], tile), min(cfg["BN"], max(tile, 32 if backend == "numba" else 16))
    return cfg


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
    win = attn_masks.window_bounds(window)
    be = pick_backend({"q": q, "k": k, "v": v}, backend)
    shape = {"B": 1, "H": heads, "Hkv": kv_heads, "Lq": total_q, "Lk": total_k, "D": d}
    mean_q = total_q / max(1, lens_q.size)
    cfg = choose_config("attention", shape, iq.dtype.name, be, iq.device, config, space(be),
                        varlen_config({**shape, "Lq": max(1, int(max_seqlen_q)), "Lk": max(1, int(max_seqlen_k)),
                                       "causal": bool(causal)}, be, mean_q))
    if cfg["BD"] < d:
        raise tc.ConfigError(f"attention config BD={cfg['BD']} is smaller than head_dim {d}")
    out = output_like(q, (total_q, heads, d), iq.dtype)
    lse = output_like(q, (heads, total_q), tc.float32) if return_lse else None
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if total_q and heads:
        if total_k == 0:
            out[...] = 0
            if return_lse:
                lse[...] = -math.inf
        else:
            spans = varlen_spans(cu_q, cu_k, bool(causal), win)
            launch(_heads_view(q), _heads_view(k), _heads_view(v), _heads_view(out),
                   None if lse is None else lse[None], scale, None, spans, None, False, cfg, be,
                   heads // kv_heads, (cdiv_host(total_q, cfg["BM"]), heads, 1))
    return (out, lse) if return_lse else out


def reference(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=False, window=None, scale=None, return_lse=False):
    """Float64, one ``ops.attention.reference`` call per sequence."""
    import numpy as np

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
