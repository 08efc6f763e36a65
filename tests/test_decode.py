"""ops.decode_attention against a float64 per-sequence reference: lengths that differ per
sequence (down to the new tokens alone), GQA, one or a few new tokens, with and without split-K."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.backends_for_tests import BACKENDS
from ops.decode import decode_attention, default_config, reference
from tilec.errors import InputError


def _case(rng, b, h, hkv, t, cap, d, lengths):
    q = rng.standard_normal((b, h, t, d)).astype(np.float32)
    k = rng.standard_normal((b, hkv, cap, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, cap, d)).astype(np.float32)
    return q, k, v, np.asarray(lengths, np.int32)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), b=st.integers(1, 3), t=st.sampled_from([1, 3]), cap=st.sampled_from([3, 64, 130, 257]),
       splits=st.sampled_from([1, 4]), seed=st.integers(0, 2**16))
def test_matches_reference(backend, data, b, t, cap, splits, seed):
    """GQA with 4 query heads per KV head (each kernel specialization compiles once: the
    constexprs here are only T and split or not)."""
    lengths = data.draw(st.lists(st.integers(t, cap), min_size=b, max_size=b))
    rng = np.random.default_rng(seed)
    q, k, v, lens = _case(rng, b, 8, 2, t, cap, 32, lengths)
    out = decode_attention(q, k, v, lens, backend=backend, config={"BN": 32, "BD": 32, "NS": splits})
    want = reference({"q": q, "k_cache": k, "v_cache": v, "lengths": lens})
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)


def test_split_k_default_for_small_batch():
    shape = {"B": 1, "H": 8, "Hkv": 1, "T": 1, "L": 16384, "D": 64}
    assert default_config(shape, "numba")["NS"] > 1          # one KV head: split the cache
    assert default_config({**shape, "B": 64, "Hkv": 8}, "numba")["NS"] == 1
    rng = np.random.default_rng(5)
    q, k, v, lens = _case(rng, 1, 4, 1, 1, 4000, 32, [3999])
    assert default_config({"B": 1, "H": 4, "Hkv": 1, "T": 1, "L": 4000, "D": 32}, "numba")["NS"] > 1
    out = decode_attention(q, k, v, lens)
    np.testing.assert_allclose(out, reference({"q": q, "k_cache": k, "v_cache": v, "lengths": lens}),
                               rtol=2e-4, atol=2e-5)


def test_huge_logits_stay_finite():
    rng = np.random.default_rng(6)
    q, k, v, lens = _case(rng, 2, 8, 2, 1, 100, 32, [100, 37])
    q, k = q * 1e4, k * 1e4
    out = decode_attention(q, k, v, lens, config={"BN": 32, "BD": 32, "NS": 4})
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference({"q": q, "k_cache": k, "v_cache": v, "lengths": lens}),
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 8e-3)])
def test_16bit_inputs(backend, dtype, tol):
    """16-bit q and caches: fp32 accumulation, so only the output's rounding (half an ulp:
    2.4e-4 / 2e-3 near 0.5) separates it from the float64 reference; split-K on."""
    from ops._testing import random_array
    rng = np.random.default_rng(8)
    q = random_array((2, 4, 2, 32), dtype, rng)
    k, v = (random_array((2, 2, 70, 32), dtype, rng) for _ in range(2))
    lens = np.array([70, 9], np.int32)
    out = decode_attention(q, k, v, lens, backend=backend, config={"BN": 32, "BD": 32, "NS": 2})
    assert out.dtype == q.dtype
    want = reference({"q": q, "k_cache": k, "v_cache": v, "lengths": lens})
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=tol, atol=tol)


def test_bad_lengths():
    rng = np.random.default_rng(7)
    q, k, v, _ = _case(rng, 2, 2, 1, 2, 16, 16, [0, 0])
    with pytest.raises(InputError, match="lengths must lie"):
        decode_attention(q, k, v, np.array([1, 16], np.int32))      # fewer than the 2 new tokens
    with pytest.raises(InputError, match="lengths must lie"):
        decode_attention(q, k, v, np.array([4, 17], np.int32))      # past the capacity
    with pytest.raises(InputError, match="int32"):
        decode_attention(q, k, v, np.array([4, 5], np.int64))
    with pytest.raises(InputError, match="shape"):
        decode_attention(q, k, v, np.array([4], np.int32))
