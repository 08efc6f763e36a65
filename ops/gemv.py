"""GEMV: y = act(alpha * A @ x + bias), fp32/fp16/bf16 inputs, fp32 accumulation.

A is (M, K) row-major, x is (K,), y is (M,). One program owns BM rows and streams along K
in BK-wide slices, so each slice of A is read once, contiguously.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import tilec as tc
from tilec.space import Param
from tilec.kernel import cdiv_host

from ._common import (CallPlans, activation, backend_space, check_activation, check_rank, check_scalar,
                      choose_config, config_items, fits_local_memory, output_like, pick_backend, torch_op)
from .gemm import apply_activation_reference, calling_thread
from .spec import OpSpec


@tc.kernel
def gemv_kernel(A, X, Y, bias, alpha, BM: tc.constexpr, BK: tc.constexpr,
                HAS_BIAS: tc.constexpr = False, ACT: tc.constexpr = None, AS_DOT: tc.constexpr = False):
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    if AS_DOT:
        # the slice as a (BM, BK) @ (BK, 1) dot: on the CPU a BLAS GEMV reading A where it lies
        column = tc.zeros((BM, 1), tc.float32)
        for k in tc.range(0, A.shape[1], BK):
            x = tc.reshape(tc.load(X, (k,), (BK,)), (BK, 1))
            column = tc.dot(tc.load(A, (pm * BM, k), (BM, BK)), x, column)
        acc = tc.reshape(column, (BM,))
    else:
        for k in tc.range(0, A.shape[1], BK):
            a = tc.load(A, (pm * BM, k), (BM, BK))
            x = tc.load(X, (k,), (BK,))
            acc = acc + tc.sum(a * x[None, :], axis=1)
    acc = acc * alpha
    if HAS_BIAS:
        acc = acc + tc.load(bias, (pm * BM,), (BM,))
    tc.store(Y, (pm * BM,), activation(acc, ACT))


CPU_TILES = [Param("BM", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)),
             Param("BK", (64, 128, 256, 512, 1024, 2048, 4096)),
             Param("AS_DOT", (False, True), "each slice as a dot (a BLAS GEMV on the CPU) or multiply-and-sum")]
GPU_TILES = [Param("BM", (1, 2, 4, 8, 16, 32, 64, 128)), Param("BK", (32, 64, 128, 256, 512))]


# a slice of x, the accumulator and, unless the slice is a dot (which reads A in place), a tile of A
_fits = fits_local_memory(lambda cfg: 4 * ((0 if cfg.get("AS_DOT") else cfg["BM"] * cfg["BK"]) + cfg["BK"] + cfg["BM"]),
                          ("BM", "BK"))


def space(backend: str = "numba"):
    return backend_space(CPU_TILES if backend == "numba" else GPU_TILES, [_fits], backend)


def default_config(shape: dict, backend: str = "numba") -> dict:
    if backend == "numba":
        # multiply-and-sum over (BM, BK) slices of A read in place, four rows per pass (each
        # x element loaded once for the four): 4096^2 fp32 in bench gemm, 0.95-0.98x NumPy at
        # BM 64 against 0.90-0.91x for a BLAS GEMV per 128-row strip (the old default), and no
        # single-threaded BLAS to set up. Strips narrow until there are 8 programs.
        bm = 64
        while bm > 1 and cdiv_host(shape["M"], bm) < 8:
            bm //= 2
        bk = 64
        while bk < 4096 and 2 * bk <= shape["K"]:
            bk *= 2
        # a slice that divides K: a masked tail slice costs about as much as a whole one, and
        # the masks keep the loop from vectorizing
        while bk > 64 and shape["K"] % bk:
            bk //= 2
        return {"BM": bm, "BK": bk, "dot": "blas", "AS_DOT": False}
    return {"BM": 32, "BK": 128}


_plans = CallPlans()


def gemv(a: Any, x: Any, *, bias: Any = None, activation: str | None = None, alpha: float = 1.0,
         backend: str | None = None, config: dict | None = None) -> Any:
    """act(alpha * a @ x + bias) with fp32 accumulation; returns a vector like ``a``."""
    traced = torch_op("gemv", (a, x, bias), backend, config)
    if traced is not None:
        return traced(a, x, bias, activation, check_scalar("alpha", alpha))
    key = _plans.key((a, x, bias), activation, backend, config_items(config))
    plan = _plans.get(key) or _plans.put(key, _plan(a, x, bias, activation, backend, config))
    be, cfg, grid, m, dtype = plan
    y = output_like(a, (m,), dtype)
    gemv_kernel[grid](a, x, y, bias if bias is not None else y, check_scalar("alpha", alpha), backend=be,
                      HAS_BIAS=bias is not None, ACT=activation, **cfg)
    return y


def _plan(a, x, bias, activation, backend, config) -> tuple:
    """Check the call and decide its backend, config and grid."""
    ia, ix = check_rank("a", a, 2), check_rank("x", x, 1)
    m, k = ia.shape
    if ix.shape != (k,):
        raise tc.InputError(f"gemv needs x of shape ({k},) for a of shape {ia.shape}, got {ix.shape}")
    if ia.dtype != ix.dtype:
        raise tc.InputError(f"gemv needs a and x of one dtype, got a {ia.dtype.name} and x {ix.dtype.name}")
    check_activation(activation)
    if bias is not None:
        ibias = check_rank("bias", bias, 1)
        if ibias.shape != (m,):
            raise tc.InputError(f"bias must have shape ({m},) to match a's rows, got {ibias.shape}")
    be = pick_backend({"a": a, "x": x, "bias": bias}, backend)
    shape = {"M": m, "K": k}
    cfg = choose_config("gemv", shape, ia.dtype.name, be, ia.device, config, space(be), default_config(shape, be))
    return be, {**cfg, **calling_thread(be, m * k)}, (cdiv_host(m, cfg["BM"]),), m, ia.dtype


def reference(inputs: dict) -> np.ndarray:
    out = inputs.get("alpha", 1.0) * (np.asarray(inputs["a"], np.float64) @ np.asarray(inputs["x"], np.float64))
    if inputs.get("bias") is not None:
        out = out + np.asarray(inputs["bias"], np.float64)
    return apply_activation_reference(out, inputs.get("activation"))


def make_inputs(shape: dict, dtype: str, rng: np.random.Generator) -> dict:
    from ._testing import random_array
    return {"a": random_array((shape["M"], shape["K"]), dtype, rng), "x": random_array((shape["K"],), dtype, rng)}


def run(inputs: dict, config: dict | None = None, backend: str | None = None):
    return gemv(inputs["a"], inputs["x"], bias=inputs.get("bias"), activation=inputs.get("activation"),
                alpha=inputs.get("alpha", 1.0), backend=backend, config=config)


def launch_ir(shape: dict, dtype: str, config: dict):
    from tilec import dtypes
    from tilec.ir import TensorType, TileType
    d = dtypes.lookup(dtype)
    types = {"A": TensorType(2, d), "X": TensorType(1, d), "Y": TensorType(1, d), "bias": TensorType(1, d),
             "alpha": TileType((), dtypes.float32)}
    constexprs, _ = gemv_kernel.split_config(config)
    return gemv_kernel, gemv_kernel.ir(types, constexprs), (cdiv_host(shape["M"], config["BM"]),)


SPEC = OpSpec(
    name="gemv", doc=__doc__.strip().splitlines()[0], kernels={"gemv": gemv_kernel},
    shape_names=("M", "K"), space=space, default_config=default_config, make_inputs=make_inputs,
    run=run, reference=reference,
    flops=lambda s: 2.0 * s["M"] * s["K"],
    bytes=lambda s, dtype: float(4 if dtype == "float32" else 2) * (s["M"] * s["K"] + s["K"] + s["M"]),
    launch_ir=launch_ir, dtypes=("float32", "float16", "bfloat16"),
    extra={"backends": ("numba", "triton", "cuda")},
    tolerance=lambda dtype: (1e-4, 1e-4) if dtype == "float32" else (1e-2, 1e-2),
)
