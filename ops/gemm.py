"""GEMM: C = act(alpha * A @ B + bias), fp32/fp16/bf16 inputs, fp32 accumulation.

A is (M, K), B is (K, N), C is (M, N) in A's dtype; bias is (N,). One program computes one
BM x BN tile of C, stepping over K in BK slices.
"""
from __future__ import annotations

import os

from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import (CallPlans, activation, backend_space, check_activation, check_rank, check_scalar,
                      choose_config, config_items, fits_local_memory, output_like, pick_backend, torch_op)
from .spec import OpSpec


@tc.kernel
def gemm_kernel(A, B, C, bias, alpha, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr,
                HAS_BIAS: tc.constexpr = False, ACT: tc.constexpr = None):
    pm, pn = tc.program_id(0), tc.program_id(1)
    acc = tc.zeros((BM, BN), tc.float32)
    for k in tc.range(0, A.shape[1], BK):
        a = tc.load(A, (pm * BM, k), (BM, BK))
        b = tc.load(B, (k, pn * BN), (BK, BN))
        acc = tc.dot(a, b, acc)
    acc = acc * alpha
    if HAS_BIAS:
        acc = acc + tc.load(bias, (pn * BN,), (BN,))[None, :]
    tc.store(C, (pm * BM, pn * BN), activation(acc, ACT))


# CPUs want big tiles (one BLAS call per tile, few programs); GPUs want tiles that fit registers.
CPU_TILES = [Param("BM", (16, 32, 64, 128, 256, 512, 1024)), Param("BN", (16, 32, 64, 128, 256, 512, 1024)),
             Param("BK", (16, 32, 64, 128, 256, 512, 1024))]
GPU_TILES = [Param("BM", (16, 32, 64, 128, 256)), Param("BN", (16, 32, 64, 128, 256)),
             Param("BK", (16, 32, 64, 128))]


# tiles of A, B and C staged in fp32; BLAS dots on the CPU stage none (A and B are read in place,
# and BLAS blocks C for its caches itself), so no local memory bounds them
_fits = fits_local_memory(lambda cfg: 0 if cfg.get("dot") == "blas" else
                          4 * (cfg["BM"] * cfg["BK"] + cfg["BK"] * cfg["BN"] + cfg["BM"] * cfg["BN"]), ("BM", "BN", "BK"))


def space(backend: str = "numba"):
    return backend_space(CPU_TILES if backend == "numba" else GPU_TILES, [_fits], backend)


# A GEMM of at most this many multiply-adds runs on the calling thread, in big tiles: one core does
# it in a fraction of a millisecond, less than waking a second thread costs on a busy machine.
SMALL_MACS = 1 << 23


def calling_thread(backend: str, macs: int) -> dict:
    """The launch option that keeps a problem of ``macs`` multiply-adds on the calling thread
    where it is small (see SMALL_MACS); GEMV takes the same rule."""
    return {"parallel": False} if backend == "numba" and macs <= SMALL_MACS else {}


# A skinny GEMM's BLAS calls (up to SKINNY_ROWS rows) stay small enough for OpenBLAS's
# small-matrix kernels, which read B in place: one call over a wide B packs all of it first,
# which costs more than the multiply (bench/results/gemm_small.json). With two rows or more,
# B's tile also stays within half of a 1 MB L2 (a lone row showed no such limit).
SKINNY_ROWS = 32
SKINNY_CALL_MACS = 1 << 19
SKINNY_B_BYTES = 1 << 19


# Up to this many multiply-adds a GEMM splits into at least four programs per thread (columns
# down to 64): with fewer, e.g. 3 tiles on 2 threads, one thread idles while another finishes.
BALANCE_MACS = 1 << 28


def skinny_call_fits(m: int, bn: int, k: int) -> bool:
    """Whether an m x bn x k BLAS call (fp32 B tile) is small in the sense above."""
    return m * bn * k <= SKINNY_CALL_MACS and (m == 1 or 4 * bn * k <= SKINNY_B_BYTES)


def _skinny(m: int, bn: int, bk: int, k: int) -> tuple[int, int]:
    """(BN, BK) for calls of m rows: narrower tiles, then shorter K steps (down to 32 and 256),
    until each call is small; tiles of more than SKINNY_ROWS rows are left as they are."""
    if m > SKINNY_ROWS:
        return bn, bk
    while bn > 32 and not skinny_call_fits(m, bn, min(k, bk)):
        bn //= 2
    while bk > 256 and not skinny_call_fits(m, bn, min(k, bk)):
        bk //= 2
    return bn, bk


def _cover(n: int) -> int:
    """The smallest tile size of the space (16 .. 1024) that covers n."""
    return min(1024, max(16, 1 << (n - 1).bit_length()))


def default_config(shape: dict, backend: str = "numba") -> dict:
    """Big tiles on the CPU (one BLAS call per tile), small calls for skinny GEMMs; 64x64x32
    on GPUs."""
    if backend == "numba":
        # Few, big BLAS calls, K whole up to 1024: each tile's sgemm packs its own share of A
        # and B, so fewer calls pack less (bench/results/gemm.json compares tile sizes).
        # Shrunk while there are fewer programs than CPU threads or a tile overhangs the matrix;
        # mid-size GEMMs take narrower tiles for balance (BALANCE_MACS).
        m, n = shape["M"], shape["N"]
        threads = os.cpu_count() or 2
        if m * n * shape["K"] <= SMALL_MACS:   # big tiles, on the calling thread (see _plan)
            bn, bk = _skinny(m, _cover(n), _cover(min(shape["K"], 1024)), shape["K"])
            return {"BM": _cover(m), "BN": bn, "BK": bk, "dot": "blas"}
        bm, bn = 1024, 512
        while bm > 16 and (bm >= 2 * m or (cdiv_host(m, bm) * cdiv_host(n, bn) < threads and bm >= bn)):
            bm //= 2
        while bn > 16 and (bn >= 2 * n or (cdiv_host(m, bm) * cdiv_host(n, bn) < threads and bn > bm // 2)):
            bn //= 2
        while bn > 64 and m * n * shape["K"] <= BALANCE_MACS and cdiv_host(m, bm) * cdiv_host(n, bn) < 4 * threads:
            bn //= 2
        bk = 1024
        while bk > 16 and bk >= 2 * shape["K"]:
            bk //= 2
        bn, bk = _skinny(min(m, bm), bn, bk, shape["K"])
        return {"BM": bm, "BN": bn, "BK": bk, "dot": "blas"}
    return {"BM": 64, "BN": 64, "BK": 32}


_plans = CallPlans()


def gemm(a: Any, b: Any, *, bias: Any = None, activation: str | None = None, alpha: float = 1.0,
         backend: str | None = None, config: dict | None = None) -> Any:
    """act(alpha * a @ b + bias) with fp32 accumulation; returns an array like ``a``."""
    traced = torch_op("gemm", (a, b, bias), backend, config)
    if traced is not None:
        return traced(a, b, bias, activation, check_scalar("alpha", alpha))
    key = _plans.key((a, b, bias), activation, backend, config_items(config))
    plan = _plans.get(key) or _plans.put(key, _plan(a, b, bias, activation, backend, config))
    be, launch_config, grid, (m, n), dtype = plan
    c = output_like(a, (m, n), dtype)
    bias_arg = bias if bias is not None else c  # unused when HAS_BIAS is False
    _plans.launch(plan, key is not None, gemm_kernel, grid, (a, b, c, bias_arg, check_scalar("alpha", alpha)),
                  launch_config, be)
    return c


def _plan(a, b, bias, activation, backend, config) -> tuple:
    """Check the call and decide its backend, config and grid."""
    ia, ib = check_rank("a", a, 2), check_rank("b", b, 2)
    (m, k), (k2, n) = ia.shape, ib.shape
    if k != k2:
        raise tc.InputError(f"gemm shapes do not chain: a is {ia.shape}, b is {ib.shape} ({k} != {k2})")
    if ia.dtype != ib.dtype:
        raise tc.InputError(f"gemm needs a and b of one dtype, got a {ia.dtype.name} and b {ib.dtype.name}")
    check_activation(activation)
    if bias is not None:
        ibias = check_rank("bias", bias, 1)
        if ibias.shape != (n,):
            raise tc.InputError(f"bias must have shape ({n},) to match b's columns, got {ibias.shape}")
    be = pick_backend({"a": a, "b": b, "bias": bias}, backend)
    shape = {"M": m, "N": n, "K": k}
    cfg = choose_config("gemm", shape, ia.dtype.name, be, ia.device, config, space(be), default_config(shape, be))
    grid = (cdiv_host(m, cfg["BM"]), cdiv_host(n, cfg["BN"]))
    return be, {"HAS_BIAS": bias is not None, "ACT": activation, **cfg, **calling_thread(be, m * n * k)}, grid, \
        (m, n), ia.dtype


def reference(inputs: dict) -> np.ndarray:
    a = np.asarray(inputs["a"], np.float64)
    out = inputs.get("alpha", 1.0) * (a @ np.asarray(inputs["b"], np.float64))
    if inputs.get("bias") is not None:
        out = out + np.asarray(inputs["bias"], np.float64)
    return apply_activation_reference(out, inputs.get("activation"))


def apply_activation_reference(x: np.ndarray, act: str | None) -> np.ndarray:
    """The epilogues in float64, in forms without cancellation (erfc, not 1 + erf), so their
    relative error stays small where the values are tiny."""
    if act == "relu":
        return np.maximum(x, 0)
    if act == "gelu":
        from math import erfc
        return 0.5 * x * np.vectorize(erfc, otypes=[np.float64])(-x / np.sqrt(2))
    if act == "gelu_tanh":
        u = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
        with np.errstate(over="ignore"):
            return x / (1 + np.exp(-2 * u))      # = 0.5 x (1 + tanh u)
    if act == "silu":
        with np.errstate(over="ignore"):
            return x / (1 + np.exp(-x))
    return x


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    return {"a": random_array((shape["M"], shape["K"]), dtype, rng),
            "b": random_array((shape["K"], shape["N"]), dtype, rng)}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return gemm(inputs["a"], inputs["b"], bias=inputs.get("bias"), activation=inputs.get("activation"),
                alpha=inputs.get("alpha", 1.0), backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    """(kernel, IR, grid) for one config, without data: for `tilec show` and the cost models."""
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    d = dtypes.lookup(dtype)
    types = {"A": TensorType(2, d), "B": TensorType(2, d), "C": TensorType(2, d), "bias": TensorType(1, d),
             "alpha": TileType((), dtypes.float32)}
    constexprs, _ = gemm_kernel.split_config(config)
    fn = gemm_kernel.ir(types, constexprs)
    grid = (cdiv_host(shape["M"], config["BM"]), cdiv_host(shape["N"], config["BN"]))
    return gemm_kernel, fn, grid


SPEC = OpSpec(
    name="gemm", doc=__doc__.strip().splitlines()[0], kernels={"gemm": gemm_kernel},
    shape_names=("M", "N", "K"), space=space, default_config=default_config, make_inputs=make_inputs,
    run=run, reference=reference,
    flops=lambda s: 2.0 * s["M"] * s["N"] * s["K"],
    bytes=lambda s, dtype: float(np.dtype(np.float32).itemsize if dtype == "float32" else 2)
    * (s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]),
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    extra={"backends": ("numba", "triton", "cuda")},
    tolerance=lambda dtype: (1e-4, 1e-4) if dtype == "float32" else (1e-2, 1e-2),
)
