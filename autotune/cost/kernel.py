"""What a GPU kernel does inside a program, beyond the tile sizes a ``Workload`` holds: the
kernel description a record can carry, which the analytical GPU model reads.

Fields (each from a record's config or its ``extra``, else a default that keeps the
model's older behaviour):

- ``warps_m``, ``warps_n``, ``warps_k``: how a program's warps split its BM x BN tile (and K);
  each warp reads its own BM/warps_m x BK slice of A and BK x BN/warps_n slice of B from
  shared memory, so 4x2 and 2x4 move different bytes when BM != BN; warps along K reduce
  their partial tiles through shared memory at the end.
- ``split_k``: programs along K. More programs (more waves or fuller ones), fewer loop steps
  each, and a reduction that writes and reads ``split_k`` fp32 partial tiles. ``stream_k``:
  the K shares are handed out evenly to persistent programs, so no last wave runs part-full.
- ``a_dtype``, ``b_dtype``, ``out_dtype``: operand and output dtypes when they differ from the
  record's dtype (f16 inputs, f32 output: the epilogue writes 4 bytes per element).
- ``layout_a``, ``layout_b``: "row" or "col"; an operand whose contiguous run along a tile is
  shorter than a 32-byte sector wastes the rest of every sector it touches.
- ``mma_m``, ``mma_n``, ``mma_k``: the tensor-core instruction shape; a warp tile that is not a
  multiple of it computes padding.
- SIMT kernels that keep a register tile per thread (hand-written CUDA/OpenCL SGEMM):
  ``thread_tile`` (tm, tn accumulators per thread), ``loads_per_step`` (load instructions per
  thread per k step), ``unroll`` (k steps per loop trip) and ``loads_in_flight`` (independent
  loads a warp can have outstanding, e.g. unrolled steps x loads per step). With a thread tile the model counts issued
  instructions instead of dividing flops by the peak.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from tilec.errors import InputError, TilecError

from . import cltune
from .workload import Workload, cdiv, itemsize

LAYOUTS = ("row", "col")
SECTOR_BYTES = 32                  # [V] DRAM/L2 access granularity on NVIDIA GPUs since Fermi


@dataclass(frozen=True)
class KernelDesc:
    warps_m: int | None = None
    warps_n: int | None = None
    warps_k: int = 1
    split_k: int = 1
    stream_k: bool = False
    a_dtype: str | None = None
    b_dtype: str | None = None
    out_dtype: str | None = None
    layout_a: str | None = None
    layout_b: str | None = None
    mma_m: int | None = None
    mma_n: int | None = None
    mma_k: int | None = None
    thread_tile: tuple[int, int] | None = None
    loads_per_step: float = 0.0
    loads_in_flight: float | None = None
    unroll: int = 1

    @property
    def mma_shape(self) -> tuple[int, int, int] | None:
        if self.mma_m and self.mma_n and self.mma_k:
            return (self.mma_m, self.mma_n, self.mma_k)
        return None


_INT = ("warps_m", "warps_n", "warps_k", "split_k", "mma_m", "mma_n", "mma_k", "unroll")
_DTYPE = ("a_dtype", "b_dtype", "out_dtype")
# op -> ``fn(shape, dtype, config) -> dict`` of KernelDesc fields, for external kernels
DESCRIBERS: dict = {"gemm_cltune": cltune.describe}


def register(op: str, fn) -> None:
    """Describe ``op``'s launches with ``fn(shape, dtype, config)``."""
    DESCRIBERS[op] = fn


def describe(op: str, shape: dict, dtype: str, config: dict, extra: dict | None = None) -> KernelDesc:
    """The kernel description of one launch: a registered describer's fields, then whatever
    the config and the record's ``extra`` state (the record wins). Bad values raise
    ``InputError`` naming the field."""
    vals = dict(DESCRIBERS[op](shape, dtype, config)) if op in DESCRIBERS else {}
    known = {f.name for f in fields(KernelDesc)}
    for src in (config or {}, extra or {}):
        vals.update({k: v for k, v in src.items() if k in known})
    if "mma_shape" in (extra or {}) or "mma_shape" in (config or {}):
        shp = (extra or {}).get("mma_shape", (config or {}).get("mma_shape"))
        if not isinstance(shp, (list, tuple)) or len(shp) != 3:
            raise InputError(f"kernel description: mma_shape must be (m, n, k), got {shp!r}")
        vals.update(zip(("mma_m", "mma_n", "mma_k"), shp))
    for k in _INT:
        if k in vals and vals[k] is not None:
            v = vals[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
                raise InputError(f"kernel description: {k} must be a positive integer, got {v!r}")
            vals[k] = int(v)
    for k in _DTYPE:
        if vals.get(k) is not None:
            try:
                itemsize(str(vals[k]))
            except TilecError as e:
                raise InputError(f"kernel description: {k}: {e}") from None
            vals[k] = str(vals[k])
    for k in ("layout_a", "layout_b"):
        if vals.get(k) is not None and vals[k] not in LAYOUTS:
            raise InputError(f"kernel description: {k} must be one of {LAYOUTS}, got {vals[k]!r}")
    if "stream_k" in vals:
        vals["stream_k"] = bool(vals["stream_k"])
    if vals.get("thread_tile") is not None:
        vals["thread_tile"] = tuple(int(x) for x in vals["thread_tile"])
    return KernelDesc(**vals)


def _contiguous(layout: str | None, rows: int, cols: int, along_rows_contig: str) -> int:
    """Elements contiguous in memory along one tile row of a (rows x cols) operand tile."""
    if layout is None:
        return 0
    return cols if layout == along_rows_contig else rows


def apply(w: Workload, k: KernelDesc) -> Workload:
    """``w`` (a GEMM-like workload with shape M, N, K and config BM, BN, BK) with what the
    kernel description changes: dtypes of the operands and the output, split-K programs and
    their reduction, layouts' sector waste, the per-warp shared-memory reads, padding to the
    tensor-core instruction shape. Workloads of other ops pass through unchanged."""
    s, c = w.shape, w.config
    if not all(x in s for x in "MNK") or not all(x in c for x in ("BM", "BN", "BK")):
        return w
    M, N, K = (int(s[x]) for x in "MNK")
    BM, BN, BK = (int(c[x]) for x in ("BM", "BN", "BK"))
    e = itemsize(w.dtype)
    ea, eb = itemsize(k.a_dtype or w.dtype), itemsize(k.b_dtype or w.dtype)
    eo = itemsize(k.out_dtype or w.dtype)
    gm, gn = cdiv(M, BM), cdiv(N, BN)
    changes: dict = {}
    traffic = dict(w.traffic)
    bytes_ = float(w.bytes)
    # operand and output dtypes: what the builder priced at the record's dtype, repriced
    if (ea, eb, eo) != (e, e, e):
        bytes_ += M * K * (ea - e) + K * N * (eb - e) + M * N * (eo - e)
        if "dram" in traffic:
            traffic["dram"] += M * K * gn * (ea - e) + K * N * gm * (eb - e) + M * N * (eo - e)
        if "local" in traffic:
            traffic["local"] *= (BM * BK * ea + BK * BN * eb) / ((BM * BK + BK * BN) * e)
    # layouts: a run shorter than a sector wastes the rest of it (A is M x K, B is K x N)
    for layout, rows, cols, contig, size, share in (
            (k.layout_a, BM, BK, "row", ea, M * K * gn * ea),
            (k.layout_b, BK, BN, "row", eb, K * N * gm * eb)):
        run = _contiguous(layout, rows, cols, contig) * size
        if run and run < SECTOR_BYTES and "dram" in traffic:
            traffic["dram"] += share * (SECTOR_BYTES / run - 1.0)
    # warps: each reads its slice of the tile from shared memory
    if k.warps_m or k.warps_n or k.warps_k > 1:
        wm, wn, wk = k.warps_m or 1, k.warps_n or 1, k.warps_k
        steps = gm * gn * cdiv(K, BK)
        per_step = wm * wn * wk * ((BM / wm) * (BK / wk) * ea + (BK / wk) * (BN / wn) * eb)
        reduce = (wk - 1) * BM * BN * 4 * 2 * gm * gn if wk > 1 else 0.0
        traffic["local"] = steps * per_step + reduce
        if k.mma_shape is not None:
            mm, mn, _ = k.mma_shape
            tm, tn = BM / wm, BN / wn
            pad = (tm * tn) / (cdiv(int(tm), mm) * mm * cdiv(int(tn), mn) * mn)
            changes["work_efficiency"] = w.work_efficiency * min(1.0, pad)
        changes["threads_per_program"] = wm * wn * wk * 32
    if k.mma_shape is not None:
        changes["dot_shape"] = k.mma_shape
    # split-K: split_k programs share each output tile's K loop, then a reduction reads and
    # writes their fp32 partial tiles
    sk = max(1, k.split_k)
    if sk > 1:
        grid = tuple(w.grid) + (sk,)
        changes["grid"] = grid
        changes["inner_iterations"] = cdiv(max(1, w.inner_iterations), sk)
        partial = 2.0 * sk * M * N * 4
        traffic["dram"] = traffic.get("dram", bytes_) + partial
        bytes_ += partial
        changes["flops"] = w.flops + float(sk) * M * N
    changes["bytes"] = bytes_
    changes["traffic"] = traffic
    return replace(w, **changes)
