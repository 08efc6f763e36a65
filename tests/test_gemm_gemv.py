"""Property tests: ops.gemm / ops.gemv on the Numba backend against a float64 NumPy reference."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ops
import tilec as tc
from ops._testing import as_float64, random_array
from ops.gemm import apply_activation_reference

# (config, dtype, with bias, activation): a fixed menu so each combination compiles once,
# while hypothesis varies the shapes freely (shapes are runtime values, not recompiles).
GEMM_CASES = [
    ({"BM": 16, "BN": 16, "BK": 16, "dot": "blas"}, "float32", False, None),
    ({"BM": 32, "BN": 16, "BK": 64, "dot": "loops"}, "float32", True, "relu"),
    ({"BM": 16, "BN": 64, "BK": 32, "dot": "blas"}, "float16", True, "gelu"),
    ({"BM": 64, "BN": 32, "BK": 16, "dot": "loops"}, "bfloat16", False, "silu"),
    ({"BM": 128, "BN": 128, "BK": 128, "dot": "blas"}, "float32", True, None),
]
GEMV_CASES = [
    ({"BM": 1, "BK": 64, "dot": "blas"}, "float32", False, None),
    ({"BM": 8, "BK": 128, "dot": "blas"}, "float32", True, "relu"),
    ({"BM": 16, "BK": 64, "dot": "loops"}, "bfloat16", True, None),
    ({"BM": 4, "BK": 256, "dot": "blas"}, "float16", False, "gelu"),
    ({"BM": 8, "BK": 64, "dot": "blas", "AS_DOT": True}, "float32", True, "relu"),
    ({"BM": 1, "BK": 128, "dot": "blas", "AS_DOT": True}, "float16", False, None),
    ({"BM": 4, "BK": 64, "dot": "loops", "AS_DOT": True}, "bfloat16", True, "silu"),
    ({"BM": 512, "BK": 256, "dot": "blas", "AS_DOT": True}, "float32", True, None),   # strips past m
]
EDGE = st.sampled_from([1, 2, 3, 7, 13, 16, 17, 31, 33, 64, 97, 130])


def _tol(dtype, k):
    # fp32: accumulation order only. 16-bit: inputs are exact in fp32, the output is rounded once.
    return (2e-5 * max(1, k) ** 0.5, 1e-5 * max(1, k) ** 0.5) if dtype == "float32" else (1e-2, 1e-2)


@settings(max_examples=120)
@given(case=st.sampled_from(GEMM_CASES), m=EDGE, n=EDGE, k=EDGE, alpha=st.sampled_from([1.0, 0.5, -2.0]),
       seed=st.integers(0, 2**16))
def test_gemm_matches_reference(case, m, n, k, alpha, seed):
    config, dtype, with_bias, act = case
    rng = np.random.default_rng(seed)
    a, b = random_array((m, k), dtype, rng), random_array((k, n), dtype, rng)
    bias = random_array((n,), dtype, rng) if with_bias else None
    out = ops.gemm(a, b, bias=bias, activation=act, alpha=alpha, config=config)
    assert out.shape == (m, n) and out.dtype == a.dtype
    want = alpha * (as_float64(a) @ as_float64(b)) + (as_float64(bias) if with_bias else 0)
    want = apply_activation_reference(want, act)
    rtol, atol = _tol(dtype, k)
    np.testing.assert_allclose(as_float64(out), want, rtol=rtol, atol=atol * max(1.0, np.abs(want).max()))


@settings(max_examples=100)
@given(case=st.sampled_from(GEMV_CASES), m=EDGE, k=st.sampled_from([1, 5, 63, 64, 65, 127, 300, 1031]),
       seed=st.integers(0, 2**16))
def test_gemv_matches_reference(case, m, k, seed):
    config, dtype, with_bias, act = case
    rng = np.random.default_rng(seed)
    a, x = random_array((m, k), dtype, rng), random_array((k,), dtype, rng)
    bias = random_array((m,), dtype, rng) if with_bias else None
    y = ops.gemv(a, x, bias=bias, activation=act, config=config)
    assert y.shape == (m,) and y.dtype == a.dtype
    want = apply_activation_reference(as_float64(a) @ as_float64(x) + (as_float64(bias) if with_bias else 0), act)
    rtol, atol = _tol(dtype, k)
    np.testing.assert_allclose(as_float64(y), want, rtol=rtol, atol=atol * max(1.0, np.abs(want).max()))


def test_gemm_default_config_1024_within_1e4():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    b = rng.standard_normal((1024, 1024)).astype(np.float32)
    want = a.astype(np.float64) @ b
    got = ops.gemm(a, b)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


@pytest.mark.parametrize("m, k, n", [(1, 384, 1536), (8, 1536, 384), (3, 2000, 1000), (128, 384, 1536)])
def test_small_gemm_runs_on_the_calling_thread(m, k, n):
    """Few multiply-adds: one thread (no pool wake-up), big tiles, the same result as NumPy."""
    from ops._common import check_config
    from ops.gemm import SMALL_MACS, _plan, default_config, space
    check_config("gemm", default_config({"M": m, "N": n, "K": k}), space("numba"))   # a config a user may pass
    rng = np.random.default_rng(m)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    launch = _plan(a, b, None, None, "numba", None)[1]
    assert (launch.get("parallel", True) is False) == (m * n * k <= SMALL_MACS)
    np.testing.assert_allclose(ops.gemm(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("m, k, n", [(1, 1024, 2048), (2, 1024, 2048), (8, 384, 1536), (13, 1536, 384),
                                     (16, 3072, 768), (32, 1536, 384), (31, 1000, 997), (64, 384, 1536),
                                     (128, 1536, 384), (200, 384, 1536)])
def test_skinny_gemm_makes_small_blas_calls(m, k, n):
    """Up to SKINNY_ROWS rows, every BLAS call of the default tiles is small (narrowed to 32
    columns and 256-deep K steps at the least); past them a mid-size GEMM is split for balance
    across threads; the result is still the product."""
    from ops._common import check_config
    from ops.gemm import SKINNY_ROWS, default_config, skinny_call_fits, space
    cfg = default_config({"M": m, "N": n, "K": k})
    check_config("gemm", cfg, space("numba"))
    rows, depth = min(m, cfg["BM"]), min(k, cfg["BK"])
    if m <= SKINNY_ROWS:
        assert skinny_call_fits(rows, cfg["BN"], depth) or (cfg["BN"] == 32 and cfg["BK"] == 256)
    else:   # balanced: at least four programs per thread, in tiles no narrower than 64 columns
        programs = -(-m // cfg["BM"]) * -(-n // cfg["BN"])
        assert cfg["BN"] >= 64 and (programs >= 4 * (os.cpu_count() or 2) or cfg["BN"] == 64)
    rng = np.random.default_rng(m)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    np.testing.assert_allclose(ops.gemm(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


def test_gemm_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 70)).astype(np.float32)[:, ::2]     # strided columns
    b = rng.standard_normal((50, 35)).astype(np.float32).T[:, :33]   # transposed view
    np.testing.assert_allclose(ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16}),
                               a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("as_dot", [False, True])
def test_gemv_non_contiguous_inputs(as_dot):
    rng = np.random.default_rng(2)
    config = {"BM": 8, "BK": 64, "dot": "blas", "AS_DOT": as_dot}
    for a in (rng.standard_normal((150, 45)).astype(np.float32).T,         # column-major
              rng.standard_normal((45, 300)).astype(np.float32)[:, ::2]):  # strided rows
        x = rng.standard_normal(150).astype(np.float32)[::-1]               # negative stride
        np.testing.assert_allclose(ops.gemv(a, x, config=config), a.astype(np.float64) @ x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call,match", [
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((5, 6), np.float32)), r"do not chain.*\(3, 4\).*\(5, 6\)"),
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float16)), "one dtype.*float32.*float16"),
    (lambda: ops.gemm(np.ones((3, 4), np.int32), np.ones((4, 6), np.int32)), "dtype int32"),
    (lambda: ops.gemm(np.ones(4, np.float32), np.ones((4, 6), np.float32)), "must be 2-D"),
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float32), bias=np.ones(5, np.float32)),
     r"bias must have shape \(6,\)"),
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float32), activation="tanhh"), "activation"),
    (lambda: ops.gemv(np.ones((3, 4), np.float32), np.ones(5, np.float32)), r"x of shape \(4,\)"),
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float32), config={"BM": 48}), "BM=48"),
    (lambda: ops.gemm(np.ones((3, 4), np.float32), np.ones((4, 6), np.float32), config={"XX": 1}), "XX"),
    (lambda: ops.gemm([[1.0]], np.ones((1, 1), np.float32)), "NumPy, CuPy or Torch"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises(tc.TilecError, match=match):
        call()


def test_backend_that_cannot_take_host_arrays_is_refused(monkeypatch):
    from tilec import backends
    from tilec.backends.base import Backend

    class GpuOnly(Backend):
        name, device = "gpuonly", "cuda"

    monkeypatch.setitem(backends._MODULES, "gpuonly", "unused")
    monkeypatch.setitem(backends._INSTANCES, "gpuonly", GpuOnly())
    with pytest.raises(tc.TilecError, match="gpuonly backend runs on cuda, but the arrays live on cpu"):
        ops.gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), backend="gpuonly")
    with pytest.raises(tc.TilecError, match="unknown backend 'nope'"):
        ops.gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), backend="nope")


def test_flops_and_bytes_formulas():
    s = {"M": 3, "N": 5, "K": 7}
    assert ops.REGISTRY["gemm"].flops(s) == 2 * 3 * 5 * 7
    assert ops.REGISTRY["gemm"].bytes(s, "float32") == 4 * (3 * 7 + 7 * 5 + 3 * 5)
    assert ops.REGISTRY["gemv"].flops({"M": 3, "K": 7}) == 42


def test_repeated_calls_reuse_their_plan_until_the_tuning_memo_is_dropped(monkeypatch):
    """Checks, backend choice and config lookup run once per kind of call; another shape or
    config plans anew, and so does every call after a tune dropped the lookup memo."""
    import importlib

    from tilec.tuning import database
    from ops._common import CallPlans
    gemm_module = importlib.import_module("ops.gemm")
    monkeypatch.setattr(gemm_module, "_plans", CallPlans())    # none kept from earlier tests
    planned = []
    real = gemm_module._plan
    monkeypatch.setattr(gemm_module, "_plan", lambda *a: planned.append(a[0].shape) or real(*a))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(ops.gemm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert len(planned) == 1
    ops.gemm(a[:4], b)
    ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    assert len(planned) == 3
    database.forget()
    np.testing.assert_allclose(ops.gemm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert len(planned) == 4
    with pytest.raises(tc.InputError, match="do not chain"):
        ops.gemm(a, a)
