"""Group-wise int4/int8 weight-only quantization and quant_gemm, against a NumPy reference that
dequantizes explicitly."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
import tilec as tc
from ops.backends_for_tests import BACKENDS
from ops.quant_format import QuantizedWeight, pack_codes, quantize, unpack_codes

quant_mod = importlib.import_module("ops.quant")


def dequant_reference(x: np.ndarray, qw: QuantizedWeight) -> np.ndarray:
    """Independent of the op: unpack every code with plain NumPy, scale, multiply in float64."""
    k, n = qw.shape
    c = qw.config
    per = 8 // c.bits
    codes = np.zeros((k, n), np.int64)
    for j in range(per):
        codes[:, j::per] = (qw.qweight.astype(np.int64) >> (j * c.bits)) & ((1 << c.bits) - 1)
    groups = np.arange(k) // c.group_size
    zero = (1 << (c.bits - 1)) if qw.zeros is None else qw.zeros.astype(np.int64)[groups]
    w = qw.scales.astype(np.float64)[groups] * (codes - zero)
    return np.asarray(x, np.float64) @ w


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_roundtrip_error_is_bounded(bits, symmetric):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 48)).astype(np.float32)
    qw = quantize(w, bits, 64, symmetric)
    assert qw.qweight.dtype == np.uint8 and qw.qweight.shape == (256, 48 * bits // 8)
    assert qw.scales.shape == (4, 48)
    assert (qw.zeros is None) == symmetric
    err = np.abs(qw.dequantize() - w).reshape(4, 64, 48)
    # round to nearest: at most half a step (plus clipping slack for symmetric at the edge)
    assert np.all(err <= qw.scales[:, None, :] * 0.5 + 1e-6)
    np.testing.assert_allclose(dequant_reference(np.eye(256), qw), qw.dequantize(), atol=1e-6)


def test_pack_unpack_inverse():
    rng = np.random.default_rng(2)
    for bits in (4, 8):
        codes = rng.integers(0, 1 << bits, (7, 16)).astype(np.uint8)
        packed = pack_codes(codes, bits)
        assert packed.shape == (7, 16 * bits // 8)
        np.testing.assert_array_equal(unpack_codes(packed, bits), codes)
    # low nibble holds the even column
    assert pack_codes(np.array([[1, 2]], np.uint8), 4)[0, 0] == 0x21


# A few compiled variants (each is one Numba compile); hypothesis varies shapes and data within them.
VARIANTS = [
    dict(bits=4, symmetric=True, group=32, cfg={"BM": 1, "BNB": 16, "UNPACK": "fused"}),
    dict(bits=4, symmetric=False, group=64, cfg={"BM": 4, "BNB": 64, "UNPACK": "tile"}),
    dict(bits=8, symmetric=False, group=32, cfg={"BM": 2, "BNB": 16, "UNPACK": "fused"}),
    dict(bits=8, symmetric=True, group=64, cfg={"BM": 1, "BNB": 64, "UNPACK": "tile"}),
    dict(bits=4, symmetric=False, group=32, cfg={"BM": 4, "BNB": 16, "UNPACK": "dequant", "KG": 2}),
    dict(bits=8, symmetric=True, group=32, cfg={"BM": 2, "BNB": 32, "UNPACK": "dequant", "KG": 1}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"int{v['bits']}-{'sym' if v['symmetric'] else 'asym'}"
                         f"-g{v['group']}-{v['cfg']['UNPACK']}")
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(m=st.sampled_from([1, 2, 3, 5, 8]), groups=st.integers(1, 3), n=st.sampled_from([2, 6, 34, 130, 258]),
       seed=st.integers(0, 2**16))
def test_quant_gemm_matches_dequantized_reference(backend, variant, m, groups, n, seed):
    rng = np.random.default_rng(seed)
    k = groups * variant["group"]
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    qw = quantize(w, variant["bits"], variant["group"], variant["symmetric"])
    y = ops.quant_gemm(x, qw, backend=backend, config=variant["cfg"])
    assert y.shape == (m, n) and y.dtype == np.float32
    ref = dequant_reference(x, qw)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_quant_gemv_vector_input():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((128, 10)).astype(np.float32)
    x = rng.standard_normal(128).astype(np.float32)
    qw = quantize(w, 4, 64, False)
    y = ops.quant_gemm(x, qw, config=VARIANTS[1]["cfg"])
    assert y.shape == (10,)
    np.testing.assert_allclose(y, dequant_reference(x[None], qw)[0], rtol=1e-4, atol=1e-4)


def test_quantize_rejects_bad_input():
    w = np.zeros((100, 8), np.float32)
    with pytest.raises(tc.InputError, match="not a multiple of group_size"):
        quantize(w, 4, 64)
    with pytest.raises(tc.InputError, match="bits"):
        quantize(np.zeros((64, 8), np.float32), 3, 64)
    with pytest.raises(tc.InputError, match="multiple of 2"):
        quantize(np.zeros((64, 7), np.float32), 4, 64)
    with pytest.raises(tc.InputError, match="2-D"):
        quantize(np.zeros(64, np.float32), 4, 64)
    with pytest.raises(tc.InputError, match="NaN"):
        quantize(np.full((64, 2), np.nan, np.float32), 4, 64)


def test_quant_gemm_rejects_bad_input():
    qw = quantize(np.ones((64, 4), np.float32), 4, 32)
    with pytest.raises(tc.InputError, match="K=64"):
        ops.quant_gemm(np.ones((2, 32), np.float32), qw)
    with pytest.raises(tc.InputError, match="QuantizedWeight"):
        ops.quant_gemm(np.ones((2, 64), np.float32), np.ones((64, 4), np.float32))
    with pytest.raises(tc.ConfigError):
        ops.quant_gemm(np.ones((2, 64), np.float32), qw, config={"BNB": 3})


def test_constant_group_and_zero_weight():
    """A group of equal weights (zero range) and an all-zero weight quantize without NaNs."""
    w = np.zeros((128, 4), np.float32)
    w[:64] = 0.5
    for variant in VARIANTS[:2]:
        qw = quantize(w, 4, variant["group"], variant["symmetric"])
        assert np.all(np.isfinite(qw.scales))
        y = ops.quant_gemm(np.ones((1, 128), np.float32), qw, config=variant["cfg"])
        np.testing.assert_allclose(y, np.ones((1, 128)) @ qw.dequantize(), atol=1e-5)


def test_registry_and_spec_roundtrip():
    spec = ops.REGISTRY["quant_gemm"]
    shape = {"M": 2, "N": 16, "K": 128, "group_size": 64, "symmetric": False}
    inputs = spec.make_inputs(shape, "float32", np.random.default_rng(0))
    out = spec.run(inputs, config=VARIANTS[1]["cfg"])
    np.testing.assert_allclose(out, spec.reference(inputs), rtol=1e-4, atol=1e-3)
    assert spec.bytes(shape, "float32") < 4 * 128 * 16  # packed weights move fewer bytes than fp32
    kernel, fn, grid = spec.launch_ir({"M": 8, "N": 256, "K": 256}, "float32", {"BM": 8, "BNB": 64})
    assert grid == (1, 2) and any(op.kind == "load" for op in fn.walk())


@given(columns=st.integers(1, 10_000), rows=st.integers(1, 9))
def test_default_strip_leaves_programs_for_every_thread(columns, rows):
    from ops._common import strip_width
    w = strip_width(512, columns, rows, 64)
    assert w in (64, 128, 256, 512)
    programs = rows * -(-columns // w)
    assert programs >= 4 or w == 64                       # enough programs, or as narrow as allowed
    assert w == 512 or rows * -(-columns // (2 * w)) < 4  # and no wider strip would have done


@pytest.mark.parametrize("k, n", [(384, 384), (384, 1536), (1536, 384), (4096, 4096), (640, 96)])
@pytest.mark.parametrize("bits", [4, 8])
def test_default_dequantized_tile_covers_the_weight_exactly(k, n, bits):
    """At large M the dequantized-tile form's strips and K steps divide the weight: a tile
    overhanging it is dequantized and multiplied in full, for nothing."""
    cfg = quant_mod.default_config({"M": 4096, "N": n, "K": k, "bits": bits, "G": 128 if k % 128 == 0 else 32})
    assert cfg["UNPACK"] == "dequant"
    group = 128 if k % 128 == 0 else 32
    assert (n * bits // 8) % cfg["BNB"] == 0 and k % (group * cfg["KG"]) == 0, cfg


def test_forms_cross_over_at_dequant_from_m():
    shape = {"N": 1536, "K": 384, "bits": 4, "G": 128}
    m0 = quant_mod.DEQUANT_FROM_M
    assert quant_mod.default_config({**shape, "M": 1})["UNPACK"] == "fused"
    assert quant_mod.default_config({**shape, "M": m0 - 1})["UNPACK"] == "tile"
    assert quant_mod.default_config({**shape, "M": m0})["UNPACK"] == "dequant"
    # the BERT-style encoder's shapes at batch 1 x 16 tokens: the unpacked tile
    assert quant_mod.default_config({**shape, "M": 16})["UNPACK"] == "tile"
