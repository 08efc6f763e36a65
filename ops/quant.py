"""Weight-only quantized GEMM/GEMV: y = x @ dequant(qw) with int4/int8 group-wise weights.

x is (M, K) float, qw a ``QuantizedWeight`` for W (K, N) (layout in ``ops.quant_format``), y is
(M, N) float32 accumulated in fp32; M=1 is the GEMV case. One program owns BM rows and BNB
packed byte columns (BNB * 8 // bits output columns). It unpacks one code position per byte at a
time in tiles, so the dequantized matrix never exists: per group it forms ``sum_k x * code``
and applies the zero point once per group, ``s * (sum_k x * code - z * sum_k x)``. For many rows
(``UNPACK="dequant"``, the CPU default from ``DEQUANT_FROM_M`` rows) the weight tile is instead
dequantized once per K step and shared by a block of up to 1024 rows through one tile product.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import (CallPlans, backend_space, check_rank, choose_config, config_items, output_like, pick_backend,
                      strip_width)
from .quant_format import QuantizedWeight, QuantLayout, quantize
from .spec import OpSpec


@tc.kernel
def quant_gemm_kernel(X, QW, S, Z, Y, BM: tc.constexpr, BNB: tc.constexpr, G: tc.constexpr,
                      BITS: tc.constexpr, SYMMETRIC: tc.constexpr, UNPACK: tc.constexpr = "fused", KG: tc.constexpr = 1):
    # X (M, K); QW (K, N/P) packed codes; S, Z (K/G, N/P, P) scales and zero points; Y (M, N/P, P)
    pm, pn = tc.program_id(0), tc.program_id(1)
    P = 8 // BITS                                   # codes per byte: output column = P * byte + p
    if UNPACK == "dequant":
        # many rows: the weight tile, KG groups deep, is dequantized once per K step in
        # output-column order, and one tile product serves every row of the block (the cost of
        # a float GEMM plus one dequantization of the weight per BM rows)
        lanes = tc.arange(P) * BITS
        acc = tc.zeros((BM, BNB * P), tc.float32)
        for k in tc.range(0, X.shape[1], G * KG):
            x = tc.load(X, (pm * BM, k), (BM, G * KG))
            q = tc.load(QW, (k, pn * BNB), (G * KG, BNB))
            code = tc.cast((q[:, :, None] >> lanes[None, None, :]) & ((1 << BITS) - 1), tc.float32)
            code = tc.reshape(code, (KG, G, BNB, P))
            scale = tc.load(S, (k // G, pn * BNB, 0), (KG, BNB, P))[:, None, :, :]
            if SYMMETRIC:
                w = (code - float(1 << (BITS - 1))) * scale
            else:
                w = (code - tc.cast(tc.load(Z, (k // G, pn * BNB, 0), (KG, BNB, P)), tc.float32)[:, None, :, :]) * scale
            acc = tc.dot(x, tc.reshape(w, (KG * G, BNB * P)), acc)
        tc.store(Y, (pm * BM, pn * BNB, 0), tc.reshape(acc, (BM, BNB, P)), (BM, BNB, P))
    else:
        shifts = tc.arange(P) * BITS
        acc = tc.zeros((BM, P, BNB), tc.float32)
        for k in tc.range(0, X.shape[1], G):
            x = tc.load(X, (pm * BM, k), (BM, G))
            q = tc.load(QW, (k, pn * BNB), (G, BNB))
            code = tc.cast((q[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1), tc.float32)  # (G, P, BNB)
            if UNPACK == "fused":   # unpack inside the multiply loop, innermost along the packed bytes
                part = tc.sum(x[:, :, None, None] * code[None, :, :, :], axis=1)
            else:                   # unpack the tile once, then one matrix product for all rows
                part = tc.reshape(tc.dot(x, tc.reshape(code, (G, P * BNB))), (BM, P, BNB))
            scale = tc.trans(tc.load(S, (k // G, pn * BNB, 0), (None, BNB, P)))  # (P, BNB)
            if SYMMETRIC:           # zero point 2**(BITS-1), applied once per group
                zx = tc.sum(x, axis=1) * float(1 << (BITS - 1))
                acc = acc + scale[None, :, :] * (part - zx[:, None, None])
            else:
                zero = tc.cast(tc.trans(tc.load(Z, (k // G, pn * BNB, 0), (None, BNB, P))), tc.float32)
                acc = acc + scale[None, :, :] * (part - zero[None, :, :] * tc.sum(x, axis=1)[:, None, None])
        for p in tc.static_range(P):
            out = tc.gather(acc, tc.full((BM, 1, BNB), p, tc.int32), axis=1)     # acc[:, p, :]
            tc.store(Y, (pm * BM, pn * BNB, p), tc.reshape(out, (BM, BNB)), (BM, BNB, None))

TILES = [Param("BM", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)), Param("BNB", (16, 32, 64, 128, 256, 512)),
         Param("UNPACK", ("fused", "tile", "dequant"),
               "unpack codes inside the multiply loop, once per tile, or into a dequantized tile"),
         Param("KG", (1, 2, 4, 8), "groups per K step of the dequantized tile")]


# GPUs keep a program's unpacked codes, (G, 8 / bits, BNB), in registers or shared memory.
GPU_TILES = [Param("BM", (1, 2, 4, 8, 16, 32, 64)), Param("BNB", (16, 32, 64)), TILES[2], Param("KG", (1, 2))]


def space(backend: str = "numba"):
    return backend_space(TILES if backend == "numba" else GPU_TILES, [], backend)


# The crossover between the forms on CPUs: from this many rows on the weight is dequantized into
# a float tile shared by the rows (UNPACK="dequant"); the tuner may pick any form at any M.
# At M=16 the unpacked tile was faster on all three BERT-base-384 shapes, at M=32 even.
DEQUANT_FROM_M = 32


def default_config(shape: dict, backend: str = "numba") -> dict:
    m = shape.get("M", 1)
    # up to 16 rows in one block: each row block unpacks the codes again (M=16 on the BERT-384
    # shapes: 8-row blocks 1.1-1.6x slower than one 16-row block)
    bm = 1 if m == 1 else min(16, 1 << (m - 1).bit_length())
    if backend == "numba":
        # One row: codes unpacked inside the multiply loop, wide strips so each inner loop runs
        # long enough to repay its set-up (BNB=512 was 2x faster than 64 at K=N=4096). Several
        # rows: each group's codes unpacked once into a tile that one BLAS call multiplies; 256
        # bytes wide, so the tile (128 x 512 fp32) stays in L2 (same-run sweep at M=8: 6.2 ms
        # against 9.2-11.8 for the loop-nest variants and 7.7 for NumPy fp32 at K=N=4096).
        packed = shape.get("N", 1) * shape.get("bits", 4) // 8
        if m >= DEQUANT_FROM_M:
            # Many rows: the dequantized form, one float GEMM's cost plus one dequantization of
            # the weight per 1024 rows; 512 output columns and 4 groups deep per K step, so each
            # BLAS call is big enough to run at full speed (K=N=M=4096, int4: 0.92-0.94x tilec's
            # fp32 GEMM against 0.85 with one group per step).
            # Strips and K steps that tile the weight exactly: a tile overhanging it is
            # dequantized and multiplied in full (N=384, K=384 int4 took 1.3x fp32's time so).
            bm = min(1024, 1 << (m - 1).bit_length())
            bnb = strip_width(512 * shape.get("bits", 4) // 8, packed, cdiv_host(m, bm), 16)
            while bnb > 16 and packed % bnb:
                bnb //= 2
            kg, group = 4, shape.get("G", 128)
            while kg > 1 and shape.get("K", 0) % (group * kg):
                kg //= 2
            return {"BM": bm, "BNB": bnb, "UNPACK": "dequant", "KG": kg, "dot": "blas"}
        if bm == 1:
            return {"BM": 1, "BNB": strip_width(512, packed, 1, 64), "UNPACK": "fused", "dot": "loops"}
        return {"BM": bm, "BNB": strip_width(256, packed, cdiv_host(m, bm), 64), "UNPACK": "tile", "dot": "blas"}
    # GPUs: codes unpacked inside the multiply, few rows. Compiled by Triton for sm_80 at
    # K=N=4096: BM=1/2 x BNB=32 used 96 registers, BM=4 x 16 80, none spilled; the unpacked
    # tile (BM=16, BNB=32, "tile") spilled 4.5 KB.
    bm = min(bm, 4)
    return {"BM": bm, "BNB": 32 if bm <= 2 else 16, "UNPACK": "fused"}


def _check(x, qw) -> tuple[Any, int, int, int]:
    ix = check_rank("x", x, (1, 2))
    k, n = qw.shape
    if ix.shape[-1] != k:
        raise tc.InputError(f"quant_gemm: x has {ix.shape[-1]} columns but the weight has K={k} rows")
    m = ix.shape[0] if ix.ndim == 2 else 1
    return ix, m, k, n


ACT_QUANT = (None, "int8")


_plans = CallPlans()


def quant_gemm(x: Any, qw: QuantizedWeight, *, backend: str | None = None, config: dict | None = None,
               act_quant: str | None = None) -> Any:
    """x @ W for a quantized W, fp32 accumulation; x (M, K) or (K,) gives (M, N) or (N,) float32.
    ``act_quant="int8"``: x is quantized to int8 per row and weight group and the products are
    integer dot products (the decode form, ``ops.quant_q8``, whose error bound is documented
    there); None (the default) keeps x exact in fp32."""
    if act_quant not in ACT_QUANT:
        raise tc.InputError(f"act_quant must be one of {ACT_QUANT}, got {act_quant!r}")
    if not isinstance(qw, QuantizedWeight):
        raise tc.InputError(f"quant_gemm needs a QuantizedWeight from ops.quantize, got {type(qw).__name__}")
    key = _plans.key((x, qw.qweight, qw.scales, qw.zeros), qw.shape, qw.config, act_quant, backend,
                     config_items(config))
    plan = _plans.get(key) or _plans.put(key, _plan(x, qw, act_quant, backend, config))
    (m, k, n, vector), own = plan
    x2 = x.reshape(m, k) if vector else x
    if act_quant == "int8":
        from .quant_q8 import quant_gemm_q8
        y = quant_gemm_q8(x2, qw, plan=own)
        return y.reshape(n) if vector else y
    be, cfg, grid = own
    c = qw.config
    scales3, zeros3 = qw.by_byte_lane()
    y = output_like(x, (m, n), tc.float32)
    quant_gemm_kernel[grid](x2, qw.qweight, scales3, zeros3, y.reshape(m, n // c.per_byte, c.per_byte), backend=be,
                            G=c.group_size, BITS=c.bits, SYMMETRIC=c.symmetric, **cfg)
    return y.reshape(n) if vector else y


def _plan(x, qw: QuantizedWeight, act_quant, backend, config) -> tuple:
    """Check the call and decide: ((M, K, N, x is a vector), the path's own plan)."""
    ix, m, k, n = _check(x, qw)
    shape = (m, k, n, ix.ndim == 1)
    if act_quant == "int8":
        from .quant_q8 import plan_q8
        return shape, plan_q8(x.reshape(m, k) if ix.ndim == 1 else x, qw, backend, config)
    c = qw.config
    be = pick_backend({"x": x, "qweight": qw.qweight}, backend)
    dims = {"M": m, "N": n, "K": k}
    cfg = choose_config("quant_gemm", dims, f"int{c.bits}", be, ix.device, config, space(be),
                        default_config({**dims, "bits": c.bits, "G": c.group_size}, be))
    return shape, (be, cfg, (cdiv_host(m, cfg["BM"]), cdiv_host(n // c.per_byte, cfg["BNB"])))


def reference(inputs: dict) -> np.ndarray:
    """Dequantize explicitly, then multiply in float64."""
    x = np.asarray(inputs["x"], np.float64)
    return x @ inputs["qw"].dequantize().astype(np.float64)


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    """Random x and a quantized Gaussian W. Optional shape keys: bits, group_size, symmetric.
    Shapes the layout cannot take are met halfway: a group size that divides K, and 8-bit codes
    when N is odd."""
    from ._testing import random_array
    from .quant_format import fitting_group
    k, n = shape["K"], shape["N"]
    bits = shape.get("bits", 4) if n % 2 == 0 else 8
    group = shape.get("group_size") or fitting_group(k)
    w = rng.standard_normal((k, n)).astype(np.float32)
    return {"x": random_array((shape["M"], k), dtype, rng), "qw": quantize(w, bits, group, shape.get("symmetric", True))}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return quant_gemm(inputs["x"], inputs["qw"], backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    from tilec import dtypes
    from tilec.ir import TensorType
    d = dtypes.lookup(dtype)
    bits, group = shape.get("bits", 4), shape.get("group_size", 128)
    types = {"X": TensorType(2, d), "QW": TensorType(2, dtypes.uint8), "S": TensorType(3, dtypes.float32),
             "Z": TensorType(3, dtypes.uint8 if not shape.get("symmetric", True) else dtypes.float32),
             "Y": TensorType(3, dtypes.float32)}
    constexprs, _ = quant_gemm_kernel.split_config({**config, "G": group, "BITS": bits,
                                                    "SYMMETRIC": shape.get("symmetric", True)})
    fn = quant_gemm_kernel.ir(types, constexprs)
    grid = (cdiv_host(shape["M"], config["BM"]), cdiv_host(shape["N"] * bits // 8, config["BNB"]))
    return quant_gemm_kernel, fn, grid


def _bytes(s: dict, dtype: str) -> float:
    bits, group = s.get("bits", 4), s.get("group_size", 128)
    k, n, m = s["K"], s["N"], s["M"]
    zeros = 0 if s.get("symmetric", True) else k // group * n
    return k * n * bits / 8 + 4.0 * (k // group) * n + zeros + 4.0 * (m * k + m * n)


SPEC = OpSpec(
    name="quant_gemm", doc=__doc__.strip().splitlines()[0], kernels={"quant_gemm": quant_gemm_kernel},
    shape_names=("M", "N", "K"), space=space, default_config=default_config, make_inputs=make_inputs,
    run=run, reference=reference, flops=lambda s: 2.0 * s["M"] * s["N"] * s["K"], bytes=_bytes,
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (1e-4, 1e-3) if dtype == "float32" else (1e-2, 1e-2),
    extra={"layout": QuantLayout, "weight_params": ("bits", "group_size", "symmetric"),
           "cuda_registers_unmodelled": "the estimate misses the unrolled unpack-and-multiply (120 estimated, 255 from ptxas)",
           "test_shapes": [{"M": 1, "N": 34, "K": 64, "group_size": 32}, {"M": 3, "N": 6, "K": 128}],
           "compile_shape": {"M": 1, "N": 4096, "K": 4096}},
)
