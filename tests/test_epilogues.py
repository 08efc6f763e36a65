"""The fused epilogues (GELU erf and tanh forms, SiLU) in exp2 and arithmetic only: accuracy
against float64 over the whole float32 range that matters, on every backend, and their IR."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ops
from ops.gemm import apply_activation_reference, launch_ir

ACTS = ["gelu", "gelu_tanh", "silu"]
X = np.concatenate([np.linspace(-12, 12, 2401), [0.0, 1e-6, -1e-6, 1e-30, -1e-30, -40, 40, -90, 90]]).astype(np.float32)


def _check(y, x, act):
    want = apply_activation_reference(x.astype(np.float64), act)
    err = np.abs(np.asarray(y, np.float64) - want)
    # a few float32 ulps absolutely, and relatively wherever the value is a normal float32
    assert err.max() <= 2e-6 * max(1.0, np.abs(x).max() / 12), err.max()
    normal = np.abs(want) > 1e-30
    assert (err[normal] / np.abs(want[normal])).max() < 5e-5


@pytest.mark.parametrize("act", ACTS)
def test_epilogue_matches_float64_on_numba(act):
    # x as a column of A times B = [[1]]: the epilogue sees exactly x
    y = ops.gemm(X.reshape(-1, 1), np.ones((1, 1), np.float32), activation=act,
                 config={"BM": 64, "BN": 16, "BK": 16})
    _check(y[:, 0], X, act)


@pytest.mark.parametrize("act", ACTS)
def test_gemv_epilogue_matches_float64(act):
    y = ops.gemv(X.reshape(-1, 1), np.ones(1, np.float32), activation=act)
    _check(y, X, act)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("act", ACTS)
def test_epilogue_on_gpu_backends(act, backend):
    from tilec.backends import get
    reason = get(backend).missing()
    if reason:
        pytest.skip(reason)
    x = X[::24].copy()
    y = ops.gemm(x.reshape(-1, 1), np.ones((1, 1), np.float32), activation=act, backend=backend,
                 config={"BM": 16, "BN": 16, "BK": 16})
    _check(y[:, 0], x, act)


@pytest.mark.parametrize("act", ACTS + [None, "relu"])
def test_epilogue_ir_has_no_libm_calls(act):
    """No erf / sigmoid / tanh / exp left for a backend to call per element: exp2 (vectorized on
    the CPU, native on GPUs), abs and arithmetic."""
    _, fn, _ = launch_ir({"M": 64, "N": 64, "K": 64}, "float32",
                         {"BM": 32, "BN": 32, "BK": 32, "ACT": act})
    unary = {op.attrs["op"] for op in fn.walk() if op.kind == "unary"}
    assert unary <= {"exp2", "abs", "neg"}, unary
    assert ("exp2" in unary) == (act in ACTS)


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)
SPECIAL = st.sampled_from([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -1e-45, 88.7, -88.7, 3.4e38, -3.4e38])


@settings(deadline=None, max_examples=30)
@given(xs=st.lists(st.one_of(FINITE, SPECIAL, st.floats(-20, 20, width=32)), min_size=1, max_size=200),
       act=st.sampled_from(ACTS))
def test_epilogue_matches_float64_at_any_float32(xs, act):
    """Any float32 through the fused store loop (16 x 16 tiles, one loop per tile): NaN stays
    NaN, infinities go to their float64 limits, large |x| neither overflows to NaN nor loses
    the sign, everything else within a few ulps of float64."""
    x = np.array(xs, np.float32)
    y = np.asarray(ops.gemm(x.reshape(-1, 1), np.ones((1, 1), np.float32), activation=act,
                            config={"BM": 16, "BN": 16, "BK": 16})[:, 0], np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        want = apply_activation_reference(x.astype(np.float64), act)
    assert np.array_equal(np.isnan(y), np.isnan(want)), (x[np.isnan(y) != np.isnan(want)], act)
    inf = np.isinf(want) | (np.abs(want) > np.finfo(np.float32).max)
    assert np.array_equal(y[inf], np.sign(want[inf]) * np.inf)
    ok = ~np.isnan(want) & ~inf
    err = np.abs(y[ok] - want[ok])
    assert (err <= 2e-6 + 5e-6 * np.abs(want[ok])).all(), (x[ok][err > 2e-6 + 5e-6 * np.abs(want[ok])], act)
