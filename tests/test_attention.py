"""ops.attention against a float64 NumPy softmax(QK^T)V: MHA/GQA, causal or not, odd and unequal
lengths, length 1, 16-bit inputs, huge logits, the log-sum-exp, and input errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from ops.attention import attention, reference
from ops.backends_for_tests import BACKENDS
from tilec.errors import InputError

# one tile config for the property tests: every shape reuses the same few compiled kernels
CFG = {"BM": 32, "BN": 32, "BD": 64}


def _inputs(rng, b, h, hkv, lq, lk, d, dtype="float32", scale=1.0):
    from ops._testing import random_array
    return (random_array((b, h, lq, d), dtype, rng, scale), random_array((b, hkv, lk, d), dtype, rng, scale),
            random_array((b, hkv, lk, d), dtype, rng, scale))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.sampled_from([1, 2]),
       lq=st.sampled_from([1, 2, 7, 31, 32, 33, 67]), lk=st.sampled_from([1, 5, 32, 61, 97]),
       d=st.sampled_from([16, 24, 64]), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(backend, b, hkv, group, lq, lk, d, causal, seed):
    if causal and lq > lk:
        lq = lk  # more queries than keys would leave rows with nothing to see (rejected, tested below)
    rng = np.random.default_rng(seed)
    q, k, v = _inputs(rng, b, hkv * group, hkv, lq, lk, d)
    out = attention(q, k, v, causal=causal, backend=backend, config=CFG)
    want = reference({"q": q, "k": k, "v": v, "causal": causal})
    assert out.shape == q.shape and out.dtype == q.dtype
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)


@settings(max_examples=8, deadline=None)
@given(lq=st.sampled_from([5, 32, 40]), lk=st.sampled_from([7, 32, 70]), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_heads_interleaved_layout(lq, lk, causal, seed):
    """q, k, v as (B, H, L, D) views of (B, L, H, D) arrays, the layout models project into:
    key and value tiles are read where they lie (strided BLAS operands), edges padded."""
    lq = min(lq, lk) if causal else lq
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, n, 2, 16)).astype(np.float32).transpose(0, 2, 1, 3) for n in (lq, lk, lk))
    assert not k.flags.c_contiguous
    out = attention(q, k, v, causal=causal, config={"BM": 16, "BN": 16, "BD": 16})  # BD = D: tiles fit
    np.testing.assert_allclose(out, reference({"q": q, "k": k, "v": v, "causal": causal}), rtol=2e-4, atol=2e-5)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lq=st.sampled_from([256, 257, 383, 521]), extra=st.sampled_from([0, 1, 130]), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_default_tiles_long_sequences(lq, extra, causal, seed):
    """The CPU default's big tiles (256 query rows, 256 keys): lengths one past a tile, primes,
    a partial last key tile, GQA."""
    from ops.attention import default_config
    lk = lq + extra
    assert default_config({"Lq": lq, "Lk": lk, "D": 64}, "numba")["BM"] == 256
    assert default_config({"Lq": lq, "Lk": lk, "D": 64}, "numba")["BN"] == 256
    rng = np.random.default_rng(seed)
    q, k, v = _inputs(rng, 1, 2, 1, lq, lk, 64)
    out = attention(q, k, v, causal=causal)
    np.testing.assert_allclose(out, reference({"q": q, "k": k, "v": v, "causal": causal}), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_default_query_tile_of_512_rows_without_the_mask(causal):
    """From 1024 query rows at d <= 64 the unmasked default takes 512 of them per program (the
    causal one keeps 256); a prime length leaves a partial last tile of each."""
    from ops.attention import default_config
    lq, lk = 1031, 1031 + 130
    shape = {"Lq": lq, "Lk": lk, "D": 64, "causal": causal}
    assert default_config(shape, "numba")["BM"] == (256 if causal else 512)
    assert default_config({**shape, "D": 128}, "numba")["BM"] == 256
    q, k, v = _inputs(np.random.default_rng(7), 1, 2, 1, lq, lk, 64)
    out = attention(q, k, v, causal=causal)
    np.testing.assert_allclose(out, reference({"q": q, "k": k, "v": v, "causal": causal}), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_config_and_lse(backend):
    rng = np.random.default_rng(1)
    q, k, v = _inputs(rng, 1, 4, 2, 150, 300, 64)
    for causal in (False, True):
        out, lse = attention(q, k, v, causal=causal, return_lse=True, backend=backend)
        want, want_lse = reference({"q": q, "k": k, "v": v, "causal": causal}, return_lse=True)
        np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-4)
        assert lse.shape == (1, 4, 150) and lse.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_huge_logits_stay_finite(backend, causal):
    """Inputs scaled to 1e4 give scores near 1e9: the online softmax must not overflow."""
    rng = np.random.default_rng(2)
    q, k, v = _inputs(rng, 1, 2, 1, 45, 70, 64, scale=1e4)
    out = attention(q, k, v, causal=causal, backend=backend, config=CFG)
    assert np.isfinite(out).all()
    want = reference({"q": q, "k": k, "v": v, "causal": causal})
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-3 * 1e4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_inputs(backend, dtype):
    rng = np.random.default_rng(3)
    q, k, v = _inputs(rng, 1, 2, 2, 40, 77, 32, dtype)
    out = attention(q, k, v, causal=True, backend=backend, config=CFG)
    assert out.dtype == q.dtype
    want = reference({"q": q, "k": k, "v": v, "causal": True})
    tol = 1e-2 if dtype == "float16" else 3e-2
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=tol, atol=tol)


def test_scale_argument():
    rng = np.random.default_rng(4)
    q, k, v = _inputs(rng, 1, 1, 1, 9, 13, 16)
    out = attention(q, k, v, scale=0.7, config=CFG)
    np.testing.assert_allclose(out, reference({"q": q, "k": k, "v": v, "scale": 0.7}), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("make, message", [
    (lambda z: (z((1, 2, 4, 4)), z((1, 2, 4, 4)), z((1, 2, 4, 4))), "head_dim"),
    (lambda z: (z((1, 3, 4, 16)), z((1, 2, 4, 16)), z((1, 2, 4, 16))), "multiple of kv heads"),
    (lambda z: (z((1, 2, 4, 16)), z((1, 2, 5, 16)), z((1, 2, 4, 16))), "one shape"),
    (lambda z: (z((2, 4, 16)), z((1, 2, 4, 16)), z((1, 2, 4, 16))), "4-D"),
])
def test_bad_inputs(make, message):
    with pytest.raises(InputError, match=message):
        attention(*make(lambda s: np.zeros(s, np.float32)))


def test_causal_needs_enough_keys():
    z = np.zeros((1, 1, 8, 16), np.float32)
    with pytest.raises(InputError, match="no visible key"):
        attention(z, z[:, :, :5], z[:, :, :5], causal=True)


def test_dtype_mismatch_and_registry():
    with pytest.raises(InputError, match="share a dtype"):
        attention(np.zeros((1, 1, 4, 16), np.float32), np.zeros((1, 1, 4, 16), np.float16),
                  np.zeros((1, 1, 4, 16), np.float16))
    assert ops.REGISTRY["attention"].name == "attention"
    spec = ops.REGISTRY["attention"]
    shape = {"B": 1, "H": 2, "Hkv": 1, "Lq": 20, "Lk": 30, "D": 16}
    inputs = spec.make_inputs(shape, "float32", np.random.default_rng(0))
    np.testing.assert_allclose(spec.run(inputs, config=CFG), spec.reference(inputs), rtol=2e-4, atol=2e-5)
    _, fn, grid = spec.launch_ir(shape, "float32", spec.default_config(shape, "numba"))
    assert grid == (1, 2, 1) and any(op.kind == "dot" for op in fn.walk())


@pytest.mark.parametrize("name, shape", [("attention", {"B": 1, "H": 2, "Hkv": 1, "Lq": 64, "Lk": 64, "D": 64}),
                                         ("decode_attention", {"B": 1, "H": 4, "Hkv": 1, "T": 1, "L": 256, "D": 64})])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dots_take_the_inputs_type_and_accumulate_in_fp32(name, shape, dtype):
    """Both products of each step take operands of the inputs' type, as FlashAttention does
    (fp32 operands would leave a GPU's tensor cores idle), and accumulate in fp32."""
    spec = ops.REGISTRY[name]
    _kernel, fn, _grid = spec.launch_ir(shape, dtype, spec.default_config(shape, "triton"))
    dots = [op for op in fn.walk() if op.kind == "dot"]
    assert len(dots) == 2
    for op in dots:
        assert [v.dtype.name for v in op.operands[:2]] == [dtype, dtype]
        assert op.result.dtype.name == "float32"
