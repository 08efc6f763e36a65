"""Input checks shared by the attention ops: shapes, dtypes and head grouping."""
from __future__ import annotations

from typing import Any

from tilec.errors import InputError

from ._common import check_rank

MIN_HEAD_DIM, MAX_HEAD_DIM = 8, 256


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def head_tile(d: int, backend: str) -> int:
    """The head-size tile BD for head_dim d: a power of two of at least 16 (GPU dots need
    K >= 16; the padded lanes load as zeros), d itself on Numba where it is one."""
    return d if backend == "numba" and d in (16, 32, 64, 128, 256) else max(16, next_pow2(d))


def check_head_dim(d: int) -> None:
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise InputError(f"head_dim must be in {MIN_HEAD_DIM}..{MAX_HEAD_DIM}, got {d}")


def check_kv_pair(k: Any, v: Any, batch: int, heads: int, d: int, dtype, names: tuple[str, str] = ("k", "v"),
                  ref: str = "q", ref_heads: str = "query heads") -> tuple:
    """k and v of shape (batch, kv_heads, L, d) in ``dtype``, kv_heads dividing ``heads``.
    Messages use the caller's names: ``names`` for k and v, ``ref`` for what gave ``dtype``
    and ``ref_heads`` for what gave ``heads``."""
    kn, vn = names
    ik, iv = check_rank(kn, k, 4), check_rank(vn, v, 4)
    if ik.shape != iv.shape:
        raise InputError(f"{kn} and {vn} must have one shape, got {kn} {ik.shape} and {vn} {iv.shape}")
    if ik.shape[0] != batch or ik.shape[3] != d:
        raise InputError(f"{kn}/{vn} must be (batch={batch}, kv_heads, length, head_dim={d}), got {ik.shape}")
    if ik.shape[1] < 1 or heads % ik.shape[1]:
        raise InputError(f"{ref_heads} ({heads}) must be a multiple of kv heads ({ik.shape[1]} in {kn}/{vn})")
    for name, i in ((kn, ik), (vn, iv)):
        if i.dtype != dtype:
            raise InputError(f"{ref} and {name} must share a dtype, got {ref} {dtype.name} and {name} {i.dtype.name}")
    return ik, iv


def check_qkv(q: Any, k: Any, v: Any, causal: bool) -> dict:
    iq = check_rank("q", q, 4)
    b, h, lq, d = iq.shape
    check_head_dim(d)
    ik, iv = check_kv_pair(k, v, b, h, d, iq.dtype)
    if causal and lq > ik.shape[2]:
        raise InputError(f"causal attention with more queries ({lq}) than keys ({ik.shape[2]}) leaves the "
                         f"first {lq - ik.shape[2]} query rows with no visible key")
    return {"q": iq, "k": ik, "v": iv}
