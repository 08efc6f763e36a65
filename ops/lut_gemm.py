"""LUT-GEMM: y = x @ W for binary-coded W (BCQ), by table lookups instead of multiplications.

x is (M, K) float, bw a ``BCQWeight`` (layout in ``ops.bcq``), y (M, N) float32. Per group of
G rows, a program splits its activations into chunks of MU and builds, for each chunk, the table
of all 2**MU signed sums ``sum_j +-x_j``. Each packed sign byte of a plane holds 8 // MU chunk
patterns; the pattern indexes the table (``tc.gather``), the hits are summed over the group and
scaled by that plane's alpha. The offset beta (uniform quantization in BCQ form) adds
``beta * sum(x)``. No dequantized weight is ever formed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import backend_space, check_rank, choose_config, output_like, pick_backend, strip_width
from .bcq import BCQWeight, bcq_quantize
from .spec import OpSpec


@tc.kernel
def lut_gemm_kernel(X, Bits, Alpha, Beta, Y, BM: tc.constexpr, BN: tc.constexpr, MU: tc.constexpr,
                    G: tc.constexpr, Q: tc.constexpr, HAS_OFFSET: tc.constexpr):
    # X (M, K); Bits (Q, groups * GB, N) uint8; Alpha (Q, groups, N); Beta (groups, N); Y (M, N)
    pm, pn = tc.program_id(0), tc.program_id(1)
    GB = (G + 7) // 8           # sign bytes per group and column
    R = 8 // MU                 # table patterns per byte
    T = 1 << MU                 # table entries
    # signs[j, p] = +1 if bit j of pattern p is set, else -1
    signs = tc.cast(((tc.arange(T)[None, :] >> tc.arange(MU)[:, None]) & 1) * 2 - 1, tc.float32)
    shifts = tc.arange(R) * MU
    acc = tc.zeros((BM, BN), tc.float32)
    for g in tc.range(0, Alpha.shape[1]):
        x = tc.load(X, (pm * BM, g * G), (BM, GB * 8))
        if G != GB * 8:         # the group ends inside the last byte: later rows are not ours
            x = tc.where(tc.arange(GB * 8)[None, :] < G, x, 0.0)
        # every table at once: one (BM*GB*R, MU) @ (MU, T) product
        chunks = tc.reshape(x, (BM * GB * R, MU))
        table = tc.reshape(tc.dot(chunks, signs), (BM, GB * R, T))
        for i in tc.static_range(Q):
            byte = tc.load(Bits, (i, g * GB, pn * BN), (None, GB, BN))
            pattern = tc.reshape((byte[:, None, :] >> shifts[None, :, None]) & (T - 1), (GB * R, BN))
            hits = tc.gather(table, pattern[None, :, :], axis=2)                         # (BM, GB*R, BN)
            part = tc.sum(hits, axis=1)                                                  # (BM, BN)
            alpha = tc.load(Alpha, (i, g, pn * BN), (None, None, BN))
            acc = acc + alpha[None, :] * part
        if HAS_OFFSET:
            beta = tc.load(Beta, (g, pn * BN), (None, BN))
            acc = acc + beta[None, :] * tc.sum(x, axis=1)[:, None]
    tc.store(Y, (pm * BM, pn * BN), acc)


TILES = [Param("BM", (1, 2, 4, 8, 16)), Param("BN", (32, 64, 128, 256, 512)),
         Param("MU", (1, 2, 4, 8), "activations per lookup table (2**MU entries)")]
# GPUs hold a program's hits, (BM, G / MU, BN), in registers: 16 x 128 x 512 would be 1M of
# them, which Triton takes minutes to compile; Triton for sm_80 fits these in 72-168 registers.
GPU_TILES = [Param("BM", (1, 2, 4)), Param("BN", (32, 64, 128)),
             Param("MU", (2, 4, 8), "activations per lookup table (2**MU entries)")]


def space(backend: str = "numba"):
    return backend_space(TILES if backend == "numba" else GPU_TILES, [], backend)


def default_config(shape: dict, backend: str = "numba") -> dict:
    m = shape.get("M", 1)
    bm = 1 if m == 1 else min(8, 1 << (m - 1).bit_length())
    if backend == "numba":
        # Where the CPU has AVX-512, 16-entry tables (MU=4): each sits in a register and one
        # vpermps does 16 lookups (K=N=4096, same run: M=1 1.55 ms against 3.15 for MU=8 and
        # 2.06 for NumPy fp32; M=8 4.9 against 17.0 and 7.1). Elsewhere lookups are scalar
        # loads, and 256-entry tables (MU=8) halve their number. Wide strips; narrower only to
        # leave a few programs per thread.
        from tilec.backends.numba.support import PERMUTE16
        bn = strip_width(512, shape.get("N", 1), cdiv_host(m, bm), 32)
        return {"BM": bm, "BN": bn, "MU": 4 if PERMUTE16 else 8, "dot": "loops"}
    return {"BM": min(bm, 4), "BN": 32, "MU": 4}  # tables and hits live in shared memory on GPUs


def lut_gemm(x: Any, bw: BCQWeight, *, backend: str | None = None, config: dict | None = None) -> Any:
    """x @ W for a BCQ weight by table lookups; x (M, K) or (K,) gives (M, N) or (N,) float32."""
    if not isinstance(bw, BCQWeight):
        raise tc.InputError(f"lut_gemm needs a BCQWeight from ops.bcq_quantize or ops.bcq_from_uniform, "
                            f"got {type(bw).__name__}")
    ix = check_rank("x", x, (1, 2))
    k, n = bw.shape
    if ix.shape[-1] != k:
        raise tc.InputError(f"lut_gemm: x has {ix.shape[-1]} columns but the weight has K={k} rows")
    m = ix.shape[0] if ix.ndim == 2 else 1
    x2 = x.reshape(m, k) if ix.ndim == 1 else x
    c = bw.config
    be = pick_backend({"x": x, "bits": bw.bits}, backend)
    shape = {"M": m, "N": n, "K": k}
    cfg = choose_config("lut_gemm", shape, f"bcq{c.bits}", be, ix.device, config, space(be),
                        default_config(shape, be))
    y = output_like(x, (m, n), tc.float32)
    beta = bw.beta if bw.beta is not None else bw.alpha[0]
    grid = (cdiv_host(m, cfg["BM"]), cdiv_host(n, cfg["BN"]))
    lut_gemm_kernel[grid](x2, bw.bits, bw.alpha, beta, y, backend=be, G=c.group_size, Q=c.bits,
                          HAS_OFFSET=bw.beta is not None, **cfg)
    return y.reshape(n) if ix.ndim == 1 else y


def reference(inputs: dict) -> np.ndarray:
    """Dequantize explicitly, then multiply in float64."""
    return np.asarray(inputs["x"], np.float64) @ inputs["bw"].dequantize().astype(np.float64)


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    """Random x and a BCQ-quantized Gaussian W. Optional shape keys: bits, group_size, method;
    without group_size, one that divides K is chosen."""
    from ._testing import random_array
    from .quant_format import fitting_group
    k = shape["K"]
    w = rng.standard_normal((k, shape["N"])).astype(np.float32)
    bw = bcq_quantize(w, shape.get("bits", 3), shape.get("group_size") or fitting_group(k),
                      shape.get("method", "greedy"))
    return {"x": random_array((shape["M"], k), dtype, rng), "bw": bw}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return lut_gemm(inputs["x"], inputs["bw"], backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    from tilec import dtypes
    from tilec.ir import TensorType
    d = dtypes.lookup(dtype)
    types = {"X": TensorType(2, d), "Bits": TensorType(3, dtypes.uint8), "Alpha": TensorType(3, dtypes.float32),
             "Beta": TensorType(2, dtypes.float32), "Y": TensorType(2, dtypes.float32)}
    constexprs, _ = lut_gemm_kernel.split_config({**config, "G": shape.get("group_size", 128),
                                                  "Q": shape.get("bits", 3), "HAS_OFFSET": False})
    fn = lut_gemm_kernel.ir(types, constexprs)
    return lut_gemm_kernel, fn, (cdiv_host(shape["M"], config["BM"]), cdiv_host(shape["N"], config["BN"]))


def _bytes(s: dict, dtype: str) -> float:
    q, g = s.get("bits", 3), s.get("group_size", 128)
    k, n, m = s["K"], s["N"], s["M"]
    return q * (k // g) * -(-g // 8) * n + 4.0 * q * (k // g) * n + 4.0 * (m * k + m * n)


SPEC = OpSpec(
    name="lut_gemm", doc=__doc__.strip().splitlines()[0], kernels={"lut_gemm": lut_gemm_kernel},
    shape_names=("M", "N", "K"), space=space, default_config=default_config, make_inputs=make_inputs,
    run=run, reference=reference, flops=lambda s: 2.0 * s["M"] * s["N"] * s["K"], bytes=_bytes,
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    tolerance=lambda dtype: (1e-4, 1e-3) if dtype == "float32" else (1e-2, 1e-2),
    extra={"weight_params": ("bits", "group_size", "method"),
           "cuda_registers_unmodelled": "the estimate misses the unrolled table lookups (57 estimated, 225 from ptxas)",
           "test_shapes": [{"M": 1, "N": 33, "K": 36, "group_size": 12}, {"M": 2, "N": 7, "K": 64}],
           "compile_shape": {"M": 1, "N": 4096, "K": 4096}},
)
