"""BCQ quantizers and LUT-GEMM, against a NumPy reference that dequantizes explicitly."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
import tilec as tc
from ops.backends_for_tests import BACKENDS
from ops.bcq import bcq_from_uniform, bcq_quantize, pack_signs, relative_error, unpack_signs
from ops.quant_format import quantize


def dequant_reference(x: np.ndarray, bw) -> np.ndarray:
    """Independent of the op: read each sign bit with plain NumPy, sum the planes in float64."""
    k, n = bw.shape
    g = bw.config.group_size
    gb = -(-g // 8)
    w = np.zeros((k, n))
    for row in range(k):
        grp, r = divmod(row, g)
        byte = bw.bits[:, grp * gb + r // 8, :].astype(np.int64)          # (Q, N)
        sign = ((byte >> (r % 8)) & 1) * 2.0 - 1.0
        w[row] = (bw.alpha[:, grp, :].astype(np.float64) * sign).sum(axis=0)
        if bw.beta is not None:
            w[row] += bw.beta[grp]
    return np.asarray(x, np.float64) @ w


# (bits, group, method, config): a few compiled variants; MU=8/4/2/1 and groups that are not a
# multiple of MU or of 8 (the "K not divisible by mu" cases) are among them.
VARIANTS = [
    (3, 12, "uniform", {"BM": 2, "BN": 32, "MU": 8}),     # 12 rows: the last byte of a group is half used
    (2, 7, "greedy", {"BM": 1, "BN": 32, "MU": 2}),       # a group of 7 ends inside a chunk of MU
    (3, 20, "alternating", {"BM": 2, "BN": 32, "MU": 4}),  # 16-entry tables: SIMD lookups on AVX-512
    (3, 12, "uniform", {"BM": 4, "BN": 32, "MU": 4, "FORM": "dequant"}),  # planes as a float tile
    (2, 16, "greedy", {"BM": 2, "BN": 32, "MU": 4, "FORM": "dequant", "KG": 2}),  # 2 groups a step
]


def _poisoned_tail(rng, m: int, k: int) -> np.ndarray:
    """An (m, k) float32 array whose memory is followed by NaN: a kernel reading past its end
    reads NaN, every time (plain garbage would fail only now and then)."""
    buf = np.full(m * k + 4096, np.nan, np.float32)
    buf[:m * k] = rng.standard_normal(m * k)
    return buf[:m * k].reshape(m, k)


@pytest.mark.parametrize("cfg, m", [
    ({"BM": 16, "BN": 32, "MU": 4, "FORM": "dequant", "KG": 4, "dot": "blas"}, 16),  # K step past K
    ({"BM": 4, "BN": 32, "MU": 8, "dot": "blas"}, 17),                               # a short last block
])
def test_tiles_past_the_input_read_padding_not_memory(cfg, m):
    """A row block or K step that overhangs x: the register-blocked dot reads x's tile at its
    whole extent, so the tile must be padded, not a view clipped to x (which read past x's end:
    NaN rows, from a fuzz example)."""
    rng = np.random.default_rng(0)
    bw = bcq_quantize(rng.standard_normal((16, 16)).astype(np.float32), 2, 16, "greedy", iters=3)
    x = _poisoned_tail(rng, m, 16)
    y = ops.lut_gemm(x, bw, backend="numba", config=cfg)
    np.testing.assert_allclose(y, dequant_reference(x, bw), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"q{v[0]}-g{v[1]}-{v[2]}-mu{v[3]['MU']}-{v[3].get('FORM', 'lut')}")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.sampled_from([1, 2, 3, 5]), groups=st.integers(1, 3), n=st.sampled_from([1, 7, 33, 70]),
       seed=st.integers(0, 2**16))
def test_lut_gemm_matches_dequantized_reference(backend, variant, m, groups, n, seed):
    bits, group, method, cfg = variant
    rng = np.random.default_rng(seed)
    k = groups * group
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bw = bcq_quantize(w, bits, group, method, iters=3)
    y = ops.lut_gemm(x, bw, backend=backend, config=cfg)
    assert y.shape == (m, n) and y.dtype == np.float32
    ref = dequant_reference(x, bw)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * max(np.abs(ref).max(), 1.0))


def test_sign_packing_roundtrip_with_ragged_groups():
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((3, 30, 5)) < 0.5, -1.0, 1.0)
    packed = pack_signs(signs, 10)                     # groups of 10 rows: 2 bytes each, 6 pad bits
    assert packed.shape == (3, 3 * 2, 5)
    np.testing.assert_array_equal(unpack_signs(packed, 30, 10), signs)
    assert np.all(packed[:, 1::2, :] < 4)              # pad bits of each group stay zero


def test_uniform_int_in_bcq_form_is_exact():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 16)).astype(np.float32)
    for sym in (True, False):
        qw = quantize(w, 4, 32, sym)
        bw = bcq_from_uniform(qw)
        assert bw.beta is not None and bw.alpha.shape == (4, 2, 16)
        np.testing.assert_allclose(bw.dequantize(), qw.dequantize(), atol=1e-5)
        x = rng.standard_normal((2, 64))
        np.testing.assert_allclose(dequant_reference(x, bw), x @ qw.dequantize(), rtol=1e-5, atol=1e-4)


def test_quantizer_quality_ordering():
    """Alternating refines greedy (never worse); more bits never hurt; errors are sane."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 64)).astype(np.float32)
    prev = {}
    for bits in (1, 2, 3):
        err = {m: relative_error(w, bcq_quantize(w, bits, 64, m).dequantize()) for m in ("greedy", "alternating")}
        assert err["alternating"] <= err["greedy"] + 1e-6
        assert 0 < err["alternating"] < 1
        if prev:
            assert err["greedy"] < prev["greedy"] and err["alternating"] < prev["alternating"]
        prev = err
    # greedy 1-bit is the optimal binary code: alpha = mean |w|, error sqrt(1 - 2/pi) for a Gaussian
    one = relative_error(w, bcq_quantize(w, 1, 256, "greedy").dequantize())
    assert abs(one - np.sqrt(1 - 2 / np.pi)) < 0.03


def test_bcq_rejects_bad_input():
    with pytest.raises(tc.InputError, match="not a multiple of group_size"):
        bcq_quantize(np.zeros((100, 4), np.float32), 3, 64)
    with pytest.raises(tc.InputError, match="bits must be 1..4"):
        bcq_quantize(np.zeros((64, 4), np.float32), 5, 64)
    with pytest.raises(tc.InputError, match="method"):
        bcq_quantize(np.zeros((64, 4), np.float32), 2, 64, "kmeans")
    bw = bcq_quantize(np.ones((64, 4), np.float32), 2, 32)
    with pytest.raises(tc.InputError, match="K=64"):
        ops.lut_gemm(np.ones((1, 60), np.float32), bw)
    with pytest.raises(tc.InputError, match="BCQWeight"):
        ops.lut_gemm(np.ones((1, 64), np.float32), np.ones((64, 4), np.float32))
    with pytest.raises(tc.ConfigError):
        ops.lut_gemm(np.ones((1, 64), np.float32), bw, config={"MU": 3})


def test_registry_spec_roundtrip():
    spec = ops.REGISTRY["lut_gemm"]
    shape = {"M": 3, "N": 40, "K": 36, "group_size": 12, "bits": 3, "method": "uniform"}
    inputs = spec.make_inputs(shape, "float32", np.random.default_rng(0))
    out = spec.run(inputs, config=VARIANTS[0][3])
    np.testing.assert_allclose(out, spec.reference(inputs), rtol=1e-4, atol=1e-3)
    _, fn, grid = spec.launch_ir({"M": 1, "N": 256, "K": 256}, "float32", {"BM": 1, "BN": 128, "MU": 4})
    assert grid == (1, 2) and any(op.kind == "gather" for op in fn.walk())
