"""What a cost model needs to know about one launch, independent of the IR.

An op builds a ``Workload`` from its shape, dtype and config (``ops/`` know their flops and
bytes; the ``workload_for`` registry below holds builders for the common op families so that
records from any source can be turned into workloads by name). Fields:

- ``flops``: arithmetic work of the whole launch (2 per multiply-add).
- ``bytes``: minimal main-memory traffic (each input read once, each output written once).
- ``traffic``: optional {memory level name: bytes} actually moved through a level when tiles
  are re-read (e.g. GEMM reads A once per column of programs); the model uses ``bytes`` when absent.
- ``grid``: programs launched; ``tile_bytes_local``: on-chip bytes one program keeps live
  (shared memory / L1 / UB); ``level_bytes``: per-level needs for targets with several buffers
  (e.g. {"L0A": ..., "L0C": ...} on an NPU).
- ``threads_per_program`` / ``registers_per_thread``: GPU launch resources when known (from a
  backend's compile), else estimated by the model.
- ``compute_dtype``: the key into the profile's ``peak_flops`` (e.g. "float16", "tf32").
- ``pipeline_stages``: tiles in flight per program (software pipelining / double buffering).
- ``work_efficiency``: useful over computed work (edge tiles compute zero padding);
  ``dot_shape``: (m, n, k) of the tile products, checked against the matrix unit.
- CPU loop nests (the Numba backend; the analytical CPU model reads these): ``library_calls``,
  the BLAS calls of a launch (tile products with ``dot=blas``), ``call_flops``,
  ``call_bytes`` (operands packed) and ``call_out_bytes`` (the result read and written) of one
  such call; ``loop_ops``, element operations done in
  the kernel's own loops (padded edge tiles included; a multiply-add is one); ``vector_length``,
  the contiguous extent those loops vectorize along; ``edge_steps``, the (program, loop step)
  pairs that touch a partial tile, read through a masked copy instead of in place, and
  ``edge_elements``, the elements those copies move (element by element, whatever their size);
  ``lookups`` from a table of ``table_entries`` (LUT-GEMM), in ``lookup_rows`` rows, and
  ``table_ops``, the multiply-adds that build those tables, in loops over the table's entries
  (so they vectorize along ``table_entries``, not ``vector_length``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from tilec.errors import TilecError


@dataclass(frozen=True)
class Workload:
    op: str
    shape: dict
    dtype: str
    config: dict
    flops: float
    bytes: float
    grid: tuple[int, ...]
    tile_bytes_local: int
    threads_per_program: int | None = None
    registers_per_thread: int | None = None
    compute_dtype: str | None = None
    traffic: dict = field(default_factory=dict)
    level_bytes: dict = field(default_factory=dict)
    pipeline_stages: int = 1
    inner_iterations: int = 1            # sequential steps per program (K loop trips), for pipelining
    work_efficiency: float = 1.0         # useful / computed work (edge tiles compute padding)
    dot_shape: tuple[int, int, int] | None = None   # (m, n, k) of the tile products, if any
    library_calls: float = 0.0           # BLAS calls per launch (CPU, dot=blas)
    call_flops: float = 0.0              # flops of one such call
    call_bytes: float = 0.0              # operand bytes of one such call
    call_out_bytes: float = 0.0          # result bytes one such call reads and writes (C += A @ B)
    loop_ops: float = 0.0                # element operations in the kernel's own loops
    vector_length: int = 0               # contiguous extent those loops run along
    edge_steps: float = 0.0              # (program, step) pairs touching a partial tile
    edge_elements: float = 0.0           # elements copied through masked loads at those steps
    lookups: float = 0.0                 # table lookups (gathers from a small table) per launch
    table_entries: int = 0               # entries of that table
    lookup_rows: float = 0.0             # rows of lookups (one vector-helper call each when vectorized)
    table_ops: float = 0.0               # multiply-adds building those tables, along table_entries

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    @property
    def peak_key(self) -> str:
        return self.compute_dtype or self.dtype


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def itemsize(dtype: str) -> float:
    sizes = {"float64": 8, "float32": 4, "tf32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "int8": 1,
             "uint8": 1, "int4": 0.5, "int32": 4}
    if dtype not in sizes:
        raise TilecError(f"unknown dtype {dtype!r} for a workload; known: {sorted(sizes)}")
    return sizes[dtype]


def blas(config: dict) -> bool:
    """Whether tile products become library (BLAS) calls: the Numba backend's ``dot`` option."""
    return config.get("dot", "blas") == "blas"


def edges(extents: list[tuple[int, int]]) -> tuple[int, int]:
    """(all tiles, partial tiles) over a grid of tiles, one (size, tile) pair per tiled axis."""
    total = math.prod(cdiv(n, b) for n, b in extents)
    full = math.prod(int(n) // int(b) for n, b in extents)
    return total, total - full


def _need(shape: dict, config: dict, op: str, shape_keys: tuple, config_keys: tuple) -> None:
    miss = [k for k in shape_keys if k not in shape] + [k for k in config_keys if k not in config]
    if miss:
        raise TilecError(f"{op} workload needs {miss} (shape {shape}, config {config})")


# -- builders for the op families -------------------------------------------------------------
def gemm(shape: dict, dtype: str, config: dict) -> Workload:
    """C[M,N] = A[M,K] @ B[K,N]; config BM, BN, BK (+ num_warps, num_stages on GPUs)."""
    _need(shape, config, "gemm", ("M", "N", "K"), ("BM", "BN", "BK"))
    M, N, K = (int(shape[k]) for k in "MNK")
    BM, BN, BK = (int(config[k]) for k in ("BM", "BN", "BK"))
    e = itemsize(dtype)
    gm, gn = cdiv(M, BM), cdiv(N, BN)
    stages = int(config.get("num_stages", 1))
    warps = config.get("num_warps")
    threads = int(warps) * 32 if warps else None
    tile = int((BM * BK + BK * BN) * e * max(stages, 1))
    regs = None
    if threads:
        # 1.5 x the fp32 accumulator per thread (the epilogue converts it while it is live)
        # + about one register per operand byte per thread (data in flight plus addresses)
        # + 40 for indices: fitted to Triton 3.9 sm_80 compiles of a pointer-block GEMM,
        # erring on the side of predicting a spill
        regs = int(1.5 * BM * BN / threads + (BM * BK + BK * BN) * e / threads + 40)
    steps, edge = edges([(M, BM), (N, BN), (K, BK)])
    padded = 2.0 * steps * BM * BN * BK
    lib = blas(config)
    return Workload(
        "gemm", {"M": M, "N": N, "K": K}, dtype, dict(config), flops=2.0 * M * N * K,
        bytes=(M * K + K * N + M * N) * e,
        grid=(gm, gn), tile_bytes_local=tile, threads_per_program=threads, registers_per_thread=regs,
        traffic={"dram": (M * K * gn + K * N * gm) * e + M * N * e,
                 "local": gm * gn * cdiv(K, BK) * (BM * BK + BK * BN) * e},
        level_bytes={"L0A": BM * BK * e, "L0B": BK * BN * e, "L0C": BM * BN * 4},
        pipeline_stages=stages, inner_iterations=cdiv(K, BK),
        work_efficiency=(M * N * K) / (gm * BM * gn * BN * cdiv(K, BK) * BK), dot_shape=(BM, BN, BK),
        library_calls=steps if lib else 0.0, call_flops=2.0 * BM * BN * BK, call_bytes=(BM * BK + BK * BN) * e,
        call_out_bytes=2.0 * BM * BN * 4,
        loop_ops=gm * gn * BM * BN + (0.0 if lib else padded / 2), vector_length=BN,
        edge_steps=edge, edge_elements=edge * (BM * BK + BK * BN))


def gemv(shape: dict, dtype: str, config: dict) -> Workload:
    """y[M] = A[M,K] @ x[K]; config BM, BK."""
    _need(shape, config, "gemv", ("M", "K"), ("BM", "BK"))
    M, K = int(shape["M"]), int(shape["K"])
    BM, BK = int(config["BM"]), int(config["BK"])
    e = itemsize(dtype)
    gm = cdiv(M, BM)
    steps, edge = edges([(M, BM), (K, BK)])
    return Workload("gemv", {"M": M, "K": K}, dtype, dict(config), flops=2.0 * M * K,
                    bytes=M * K * e + K * e + M * e, grid=(gm,), tile_bytes_local=int((BM * BK + BK) * e),
                    traffic={"dram": M * K * e + K * e * gm + M * e,
                             "local": gm * cdiv(K, BK) * (BM * BK + BK) * e},
                    inner_iterations=cdiv(K, BK), work_efficiency=(M * K) / (gm * BM * cdiv(K, BK) * BK),
                    loop_ops=steps * BM * BK, vector_length=BK, edge_steps=edge, edge_elements=edge * (BM * BK + BK))


def quant_gemv(shape: dict, dtype: str, config: dict) -> Workload:
    """y[M] = scale[M] * (Wq[M,K] @ x[K]) with weights of ``wbits`` (8 or 4) bits; config BM, BK."""
    _need(shape, config, "quant_gemv", ("M", "K"), ("BM", "BK"))
    M, K = int(shape["M"]), int(shape["K"])
    BM, BK = int(config["BM"]), int(config["BK"])
    wb = int(shape.get("wbits", 8)) / 8
    e = itemsize(dtype)
    gm = cdiv(M, BM)
    steps, edge = edges([(M, BM), (K, BK)])
    return Workload("quant_gemv", dict(shape), dtype, dict(config), flops=2.0 * M * K,
                    bytes=M * K * wb + K * e + 2 * M * e, grid=(gm,),
                    tile_bytes_local=int(BM * BK * (wb + 4) + BK * e), compute_dtype=dtype,
                    traffic={"dram": M * K * wb + K * e * gm + 2 * M * e,
                             "local": gm * cdiv(K, BK) * (BM * BK * (wb + 4) + BK * e)},
                    inner_iterations=cdiv(K, BK), work_efficiency=(M * K) / (gm * BM * cdiv(K, BK) * BK),
                    loop_ops=2.0 * steps * BM * BK, vector_length=BK, edge_steps=edge,
                    edge_elements=edge * (BM * BK + BK))


ATTENTION_OPS_PER_SCORE = 16        # [E] scale, mask, max, subtract, sum: 1 each; exp: ~10


def attention_registers(rows: int, keys: int, head: int, threads: int, dtype: str) -> int:
    """Registers per thread of a Triton attention program: its fp32 scores (rows x keys) and
    accumulator (rows x head) spread over the threads, plus addresses and softmax state.
    Fitted to Triton 3.x sm_80 compiles of ops/attention.py (2026-12-03): with 16-bit operands
    (tensor-core dots) 0.9 per element + 110 came within 10% of ptxas (20% for the smallest)
    and told the one spilling config from the 15 that fit; fp32 operands take FMA dots whose
    operand layouts cost about 4 per element + 90, which sorted 13 of 14 configs right (the
    miss predicted a spill)."""
    per_element, base = (0.9, 110) if itemsize(dtype) <= 2 else (4.0, 90)
    return int(per_element * (rows * keys + rows * head) / threads + base)


def _attention_heads(shape: dict) -> tuple[int, int]:
    """(query heads, key/value heads) over the batch; grouped-query attention shares a K/V head."""
    batch, heads = int(shape.get("B", 1)), int(shape.get("H", 1))
    return batch * heads, batch * int(shape.get("Hkv", heads))


def _gpu_launch(config: dict) -> tuple[int | None, int]:
    """(threads per program or None off GPUs, pipeline stages) of a config."""
    warps = config.get("num_warps")
    return (int(warps) * 32 if warps else None), int(config.get("num_stages", 1))


def attention(shape: dict, dtype: str, config: dict) -> Workload:
    """FlashAttention-style forward; config BM, BN (+ BD, num_warps, num_stages on GPUs).
    Shape as ``ops.attention`` names it (B, H, Hkv, Lq, Lk, D, causal) or as the host
    records do (H heads of N queries over Nk keys, default N)."""
    rows = "Lq" if "Lq" in shape else "N"
    _need(shape, config, "attention", (rows, "D"), ("BM", "BN"))
    N, D = int(shape[rows]), int(shape["D"])
    Nk = int(shape.get("Lk", shape.get("Nk", N)))
    heads, kv_heads = _attention_heads(shape)
    BM, BN = int(config["BM"]), int(config["BN"])
    BD = int(config.get("BD", D))
    e = itemsize(dtype)
    causal = bool(shape.get("causal", False))
    frac = 0.5 if causal else 1.0
    gm = cdiv(N, BM)
    kb = max(1, int(cdiv(Nk, BN) * frac))
    steps = heads * gm * kb
    edge = heads * (gm * kb - (N // BM) * int((Nk // BN) * frac))
    lib = blas(config)
    threads, stages = _gpu_launch(config)
    if threads:
        # K and V tiles in flight through shared memory; Q, scores and accumulator stay in registers
        local, regs = stages * 2 * BN * BD * e, attention_registers(BM, BN, BD, threads, dtype)
    else:
        local, regs = (BM * D + 2 * BN * D) * e + (BM * BN + BM * D) * 4, None
    return Workload("attention", dict(shape), dtype, dict(config), flops=4.0 * heads * N * Nk * D * frac,
                    bytes=(2 * heads * N * D + 2 * kv_heads * Nk * D) * e, grid=(gm, heads),
                    tile_bytes_local=int(local), threads_per_program=threads, registers_per_thread=regs,
                    pipeline_stages=stages,
                    traffic={"dram": heads * (2 * N * D * e + 2 * Nk * D * e * gm * frac),
                             "local": heads * gm * (2 * BM * D * e + cdiv(Nk, BN) * frac * (2 * BN * D * e + BM * BN * 4))},
                    inner_iterations=kb,
                    work_efficiency=(N * Nk) / (gm * BM * cdiv(Nk, BN) * BN), dot_shape=(BM, BN, BD),
                    # two products per key block; around them, per score: scale, mask, max, exp,
                    # subtract, sum, each over the whole score tile, and the rescale of the output rows
                    library_calls=2.0 * steps if lib else 0.0, call_flops=2.0 * BM * BN * D,
                    call_bytes=(BM * D + 2 * BN * D + BM * BN) * e / 2, call_out_bytes=(BM * BN + 2 * BM * D) * 4 / 2,
                    loop_ops=steps * (ATTENTION_OPS_PER_SCORE * BM * BN + BM * D + (0.0 if lib else BM * BN * D)),
                    vector_length=BM * BN, edge_steps=edge,
                    edge_elements=edge * (2 * BN * D + BM * BN))   # masked key/value copies, masked scores


def _decode(op: str, shape: dict, dtype: str, config: dict, step: int, token_bytes: float,
            element_bytes: float, unpack_ops: float, dot_dtype: str) -> Workload:
    """What the two decode ops share: one program per (split, KV head) streams its split of
    the L cached tokens in steps of ``step``, for the H / Hkv query heads x T new tokens that
    share the K/V head (one tile of rows); with NS > 1 splits, each writes a partial output
    and log-sum-exp that a combine kernel merges. Every sequence is taken at its full length
    L. ``token_bytes``: cache bytes per token and KV head; ``element_bytes``: bytes a K or V
    tile holds per element as loaded; ``unpack_ops``: operations per cached element to turn
    codes into floats, inside the products, which are then the kernel's own loops (no BLAS);
    ``dot_dtype``: the products' operand type. On GPUs (configs with num_warps) the products
    are what the Triton renderer makes of a few rows: a broadcast product in fp32 on the CUDA
    cores while it is at most 64 multiply-adds per thread, else tl.dot with the rows padded
    to 16."""
    _need(shape, config, op, ("B", "H", "Hkv", "T", "L", "D"), ("BD", "NS"))
    T, L, D = (int(shape[k]) for k in ("T", "L", "D"))
    heads, kv_heads = _attention_heads(shape)
    rows = heads // kv_heads * T
    BD = int(config["BD"])
    e = itemsize(dtype)
    # as ops.decode.launch_decode splits: chunks are whole steps
    ns = max(1, min(int(config["NS"]), cdiv(L, step)))
    chunk = cdiv(cdiv(L, ns), step) * step
    per_head = (L // chunk) * (chunk // step) + cdiv(L % chunk, step)
    steps = kv_heads * per_head
    edge = kv_heads if L % step else 0                  # the cache's last tile, read through a mask
    threads, stages = _gpu_launch(config)
    dot_rows, compute, dot_shape = rows, dot_dtype, None
    if threads:
        # the Triton renderer's BROADCAST_PER_THREAD and DOT_MIN
        if rows < 16 and rows * step * BD <= 64 * threads:
            compute = "float32"
        else:
            dot_rows = max(rows, 16)
            dot_shape = (dot_rows, step, BD)
        local, regs = stages * 2 * step * BD * element_bytes, attention_registers(dot_rows, step, BD, threads, dot_dtype)
    else:
        local, regs = 2 * step * BD * 4 + (rows * step + 2 * rows * BD) * 4, None
    cache = kv_heads * L * token_bytes
    qo = 2 * heads * T * D * e
    partials = 2 * heads * T * ns * (D + 1) * 4 if ns > 1 else 0   # written, then read by the combine
    lib = blas(config) and not unpack_ops
    macs = 2.0 * steps * rows * step * BD               # both products, padded rows and lanes included
    return Workload(op, dict(shape), dtype, dict(config), flops=4.0 * heads * T * L * D,
                    bytes=cache + qo, grid=(ns, kv_heads), tile_bytes_local=int(local),
                    threads_per_program=threads, registers_per_thread=regs, pipeline_stages=stages,
                    compute_dtype=compute, traffic={"dram": cache + qo + partials},
                    inner_iterations=min(per_head, chunk // step),
                    work_efficiency=(rows * L * D) / (dot_rows * per_head * step * BD), dot_shape=dot_shape,
                    # per step as in attention: q k^T, then p v into the rescaled accumulator
                    library_calls=2.0 * steps if lib else 0.0, call_flops=2.0 * rows * step * BD,
                    call_bytes=(rows * BD + 2 * step * BD + rows * step) * 4 / 2,
                    call_out_bytes=(rows * step + 2 * rows * BD) * 4 / 2,
                    loop_ops=steps * (ATTENTION_OPS_PER_SCORE * rows * step + rows * BD)
                    + (0.0 if lib else macs) + unpack_ops * 2 * steps * step * BD,
                    vector_length=rows * step, edge_steps=edge, edge_elements=edge * 2 * step * BD)


def decode_attention(shape: dict, dtype: str, config: dict) -> Workload:
    """``ops.decode_attention``: T new tokens against a K/V cache of L tokens; config BN (keys
    per step), BD, NS (cache splits)."""
    _need(shape, config, "decode_attention", ("D",), ("BN",))
    e = itemsize(dtype)
    return _decode("decode_attention", shape, dtype, config, int(config["BN"]), 2 * int(shape["D"]) * e, e, 0.0, dtype)


def decode_attention_quantized(shape: dict, dtype: str, config: dict) -> Workload:
    """``ops.decode_attention_quantized``: decoding from a KIVI cache of ``bits``-bit codes
    (keys per channel in groups of G tokens, values per token); config BD, NS and on the
    CPU NG (key groups per step). Each code is shifted, masked and converted (3 operations)
    inside the products, which take fp32 operands; the cache bytes are the codes plus the
    scales and zeros (per group and channel for keys, per token for values)."""
    _need(shape, config, "decode_attention_quantized", ("D",), ())
    D, G, bits = int(shape["D"]), int(shape.get("G", 32)), int(shape.get("bits", 2))
    token_bytes = 2 * D * bits / 8 + 4 * 2 * D / G + 4 * 2
    return _decode("decode_attention_quantized", shape, dtype, config, G * int(config.get("NG", 1)),
                   token_bytes, bits / 8, 3.0, "float32")


def quant_gemm(shape: dict, dtype: str, config: dict) -> Workload:
    """``ops.quant``: y[M,N] = x[M,K] @ dequant(W) with ``bits``-bit codes packed 8/bits per byte,
    one scale per group of ``group_size`` rows; config BM rows, BNB packed bytes wide, UNPACK
    "fused" (codes unpacked in the multiply loop), "tile" (a group unpacked once, then one
    tile product) or "dequant" (KG groups dequantized into one float tile, then one tile product)."""
    _need(shape, config, "quant_gemm", ("M", "N", "K"), ("BM", "BNB"))
    M, N, K = (int(shape[k]) for k in "MNK")
    bits, G = int(shape.get("bits", 4)), int(shape.get("group_size", 128))
    BM, BNB = int(config["BM"]), int(config["BNB"])
    P, NB = 8 // bits, N * bits // 8
    e = itemsize(dtype)
    gm, gn = cdiv(M, BM), cdiv(NB, BNB)
    form = config.get("UNPACK", "fused")
    KS = G * int(config.get("KG", 1)) if form == "dequant" else G      # rows of K per step
    steps, edge = edges([(M, BM), (NB, BNB), (K, KS)])
    tile = form in ("tile", "dequant")
    lib = tile and blas(config)
    product = steps * BM * KS * P * BNB                # multiply-adds, padding included
    # shift, mask and convert run as vector instructions over P * BNB codes: about one FMA's worth
    # each; "tile" rescales the block's partial products every group, "dequant" scales the codes
    if form == "dequant":
        unpack = steps * KS * P * BNB * 3
    else:
        unpack = steps * G * P * BNB + steps * BM * P * BNB * 3 + steps * BM * G
    weights = K * NB + 4.0 * (K // G) * N
    return Workload("quant_gemm", dict(shape), dtype, dict(config), flops=2.0 * M * N * K,
                    bytes=weights + (M * K + M * N) * e, grid=(gm, gn),
                    tile_bytes_local=int(BM * KS * e + KS * BNB + (KS + BM) * P * BNB * 4), compute_dtype=dtype,
                    traffic={"dram": weights + M * K * e * gn + M * N * e,
                             "local": steps * (BM * KS * e + KS * BNB) + (steps * KS * P * BNB * 4 if tile else 0)},
                    inner_iterations=cdiv(K, KS), work_efficiency=(M * N * K) / max(1, product * 1.0),
                    library_calls=steps if lib else 0.0, call_flops=2.0 * BM * KS * P * BNB,
                    call_bytes=(BM * KS + KS * P * BNB) * 4.0, call_out_bytes=BM * P * BNB * 4.0, loop_ops=unpack + (0.0 if lib else product),
                    vector_length=P * BNB, edge_steps=edge, edge_elements=edge * (BM * G + G * BNB))


def lut_gemm(shape: dict, dtype: str, config: dict) -> Workload:
    """``ops.lut_gemm``: y[M,N] = x[M,K] @ W for W in ``bits`` binary-coded planes with a scale
    per group of ``group_size`` rows; per group, tables of the 2**MU signed sums of MU
    activations, then per plane one lookup per MU weights. Config BM, BN, MU.

    Every program builds the tables of its BM rows for each group, whatever its strip width:
    BM * G * 2**MU multiply-adds per (program, group), in a loop over the 2**MU entries, so a
    narrow strip rebuilds the same tables N / BN times. A partial tile is copied through a mask
    only where that operand is partial: the activations where M (or K) ends inside the tile,
    the sign planes and scales where N does (the planes do not depend on M)."""
    _need(shape, config, "lut_gemm", ("M", "N", "K"), ("BM", "BN", "MU"))
    M, N, K = (int(shape[k]) for k in "MNK")
    Q, G = int(shape.get("bits", 3)), int(shape.get("group_size", 128))
    BM, BN, MU = int(config["BM"]), int(config["BN"]), int(config["MU"])
    T, GB = 1 << MU, cdiv(G, 8)
    e = itemsize(dtype)
    gm, gn = cdiv(M, BM), cdiv(N, BN)
    steps, edge = edges([(M, BM), (N, BN), (K, G)])
    groups = cdiv(K, G)
    x_edge = gn * edges([(M, BM), (K, G)])[1]          # (program, group) steps with a partial x tile
    w_edge = gm * groups * edges([(N, BN)])[1]         # ... with partial sign-plane and scale tiles
    lookups = steps * Q * BM * (GB * 8 // MU) * BN
    table_flops = 2.0 * steps * BM * GB * 8 * T
    lib = blas(config)
    weights = Q * (K // G) * GB * N + 4.0 * Q * (K // G) * N      # sign planes (bytes padded per group), scales
    return Workload("lut_gemm", dict(shape), dtype, dict(config), flops=2.0 * M * N * K,
                    bytes=weights + (M * K + M * N) * e, grid=(gm, gn),
                    tile_bytes_local=int(BM * GB * 8 * e + BM * (GB * 8 // MU) * T * 4 + GB * BN + BM * BN * 4),
                    compute_dtype=dtype,
                    traffic={"dram": weights + M * K * e * gn + M * N * e,
                             "local": steps * (BM * GB * 8 * e + Q * GB * BN) + lookups * 4},
                    inner_iterations=cdiv(K, G), work_efficiency=(M * N * K) / max(1.0, steps * BM * BN * G),
                    library_calls=steps if lib else 0.0, call_flops=2.0 * BM * GB * 8 * T,
                    call_bytes=(BM * GB * 8 + MU * T) * 4.0, call_out_bytes=BM * GB * 8 // MU * T * 4.0,
                    # the sign patterns (shift, mask) are bytes: a register holds 4x the fp32 lanes
                    loop_ops=steps * Q * (2 * GB * 8 // MU * BN / 4 + 2 * BM * BN),
                    table_ops=0.0 if lib else table_flops / 2,
                    lookups=lookups, table_entries=T, lookup_rows=steps * Q * BM, vector_length=BN, edge_steps=edge,
                    edge_elements=x_edge * BM * GB * 8 + w_edge * Q * (GB + 4) * BN)


BUILDERS: dict[str, Callable[[dict, str, dict], Workload]] = {
    "gemm": gemm, "gemv": gemv, "quant_gemv": quant_gemv, "attention": attention,
    "quant_gemm": quant_gemm, "lut_gemm": lut_gemm, "decode_attention": decode_attention,
    "decode_attention_quantized": decode_attention_quantized}


def register(op: str, builder: Callable[[dict, str, dict], Workload]) -> None:
    """Let an op family outside this module describe its launches to the cost models."""
    BUILDERS[op] = builder


def workload_for(op: str, shape: dict, dtype: str, config: dict) -> Workload:
    if op not in BUILDERS:
        raise TilecError(f"no workload builder for op {op!r}; known: {sorted(BUILDERS)} "
                         "(register one with autotune.cost.workload.register)")
    return BUILDERS[op](shape, dtype, config)
