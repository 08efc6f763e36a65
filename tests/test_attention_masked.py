"""Masked, windowed and packed (varlen) attention on every backend against float64 NumPy
references that materialize the masked scores: bool and additive masks of every broadcast
shape, fully masked rows (zeros, LSE -inf), zero lengths, head sizes from 8, GQA; masked
tiles are skipped (NaN keys there never reach the output); the block map; offline compiles."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops import attn_masks
from ops.attention import attention, reference
from ops.attention_varlen import attention_varlen
from ops.attention_varlen import reference as varlen_reference
from ops.attn_checks import head_tile
from ops.backends_for_tests import BACKENDS
from tilec.errors import InputError

HEAD_DIMS = [8, 24, 32, 80, 128]
MASKS = ["none", "keypad", "bool_rows", "additive_shared", "bool_heads"]


def _cfg(d):
    return {"BM": 16, "BN": 32, "BD": head_tile(d, "triton")}


def _qkv(rng, b, h, hkv, lq, lk, d):
    return (rng.standard_normal((b, h, lq, d)).astype(np.float32),
            rng.standard_normal((b, hkv, lk, d)).astype(np.float32),
            rng.standard_normal((b, hkv, lk, d)).astype(np.float32))


def _mask(kind, rng, b, h, lq, lk):
    """A mask of ``kind`` with a fully masked row (or batch) wherever there is room."""
    if kind == "none":
        return None
    if kind == "keypad":                                  # (B, 1, 1, Lk); the first batch sees nothing
        lens = rng.integers(0, lk + 1, b)
        lens[0] = 0
        return np.arange(lk)[None, None, None, :] < lens[:, None, None, None]
    if kind == "bool_rows":                               # (B, 1, Lq, Lk)
        m = rng.random((b, 1, lq, lk)) < 0.6
        m[:, :, ::3] = False
        return m
    if kind == "additive_shared":                         # (Lq, Lk): finite biases, -inf and finfo.min
        m = rng.standard_normal((lq, lk)).astype(np.float32)
        m[rng.random((lq, lk)) < 0.3] = -np.inf
        m[rng.random((lq, lk)) < 0.2] = np.finfo(np.float32).min
        m[::4] = -np.inf
        return m
    m = rng.random((b, h, lq, lk)) < 0.5                  # (B, H, Lq, Lk)
    m[:, :, 1::5] = False
    return m


def _check(out, lse, want, want_lse):
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=3e-5)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(want_lse))
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[fin], want_lse[fin], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.sampled_from([1, 2]),
       lq=st.sampled_from([0, 1, 2, 17, 32]), lk=st.sampled_from([0, 1, 7, 31, 64]),
       d=st.sampled_from(HEAD_DIMS), kind=st.sampled_from(MASKS), causal=st.booleans(),
       window=st.sampled_from([None, (3, 0), (5, 2), (-1, 4)]), seed=st.integers(0, 2**16))
def test_masked_matches_reference(backend, b, hkv, group, lq, lk, d, kind, causal, window, seed):
    if causal and lq > lk:
        lq = lk
    rng = np.random.default_rng(seed)
    h = hkv * group
    q, k, v = _qkv(rng, b, h, hkv, lq, lk, d)
    mask = _mask(kind, rng, b, h, lq, lk)
    out, lse = attention(q, k, v, causal=causal, mask=mask, window=window, return_lse=True,
                         backend=backend, config=_cfg(d))
    want, want_lse = reference({"q": q, "k": k, "v": v, "causal": causal, "mask": mask, "window": window},
                               return_lse=True)
    assert out.shape == q.shape and lse.shape == (b, h, lq)
    _check(out, lse, want, want_lse)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=8)
@given(lens=st.lists(st.sampled_from([0, 1, 2, 5, 13, 31, 40]), min_size=1, max_size=4),
       extra=st.lists(st.sampled_from([0, 0, 3, 17]), min_size=4, max_size=4), hkv=st.integers(1, 2),
       group=st.sampled_from([1, 3]), d=st.sampled_from(HEAD_DIMS), causal=st.booleans(),
       window=st.sampled_from([None, (4, 0), (2, 3)]), seed=st.integers(0, 2**16))
def test_varlen_matches_reference(backend, lens, extra, hkv, group, d, causal, window, seed):
    """Packed sequences (some empty, some with more keys than queries: a KV prefix) against one
    dense reference per sequence."""
    lens_q = np.array(lens)
    lens_k = lens_q + np.array(extra[:len(lens)])
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    rng = np.random.default_rng(seed)
    h = hkv * group
    q = rng.standard_normal((cu_q[-1], h, d)).astype(np.float32)
    k, v = (rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32) for _ in range(2))
    out, lse = attention_varlen(q, k, v, cu_q, cu_k, int(lens_q.max()), int(lens_k.max()), causal=causal,
                                window=window, return_lse=True, backend=backend, config=_cfg(d))
    want, want_lse = varlen_reference(q, k, v, cu_q, cu_k, causal=causal, window=window, return_lse=True)
    assert out.shape == q.shape and lse.shape == (h, cu_q[-1])
    _check(out, lse, want, want_lse)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_tiles_are_skipped(backend):
    """Keys past each sequence's length hold NaN: a key-padding mask's fully masked tiles are
    never loaded nor multiplied (one NaN there would poison the row), partial tiles are masked."""
    rng = np.random.default_rng(5)
    lens = np.array([32, 64, 7])                         # tile-aligned, full, and a partial tile
    q, k, v = _qkv(rng, 3, 2, 1, 40, 96, 32)
    mask = np.arange(96)[None, None, None, :] < lens[:, None, None, None]
    clean_k, clean_v = k.copy(), v.copy()
    for i, n in enumerate(lens):
        k[i, :, -(-n // 32) * 32:] = np.nan
        v[i, :, -(-n // 32) * 32:] = np.nan
    out = attention(q, k, v, mask=mask, backend=backend, config={"BM": 16, "BN": 32, "BD": 32})
    assert np.isfinite(out).all()
    want = reference({"q": q, "k": clean_k, "v": clean_v, "mask": mask})
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=3e-5)


def test_block_map_against_brute_force():
    rng = np.random.default_rng(1)
    m = attn_masks.additive_mask(rng.random((2, 1, 37, 70)) < 0.97, 2, 3, 37, 70)
    m[0, 0, :16, :] = -np.inf
    m[1, 0, 16:32, 32:64] = 0
    bmap = attn_masks.block_map(m, 16, 32)
    assert bmap.shape == (2, 1, 3, 3)
    for i, j in np.ndindex(3, 3):
        tile = m[:, :, 16 * i:16 * i + 16, 32 * j:32 * j + 32]
        want = np.where(np.isneginf(tile).all((2, 3)), attn_masks.SKIP,
                        np.where((tile == 0).all((2, 3)), attn_masks.FULL, attn_masks.PARTIAL))
        np.testing.assert_array_equal(bmap[:, :, i, j], want)
    assert (bmap[0, 0, 0] == attn_masks.SKIP).all() and bmap[1, 0, 1, 1] == attn_masks.FULL


def test_zero_lengths_and_empty_rows():
    q, k, v = _qkv(np.random.default_rng(2), 2, 2, 2, 5, 0, 8)
    out, lse = attention(q, k, v, return_lse=True)
    assert (out == 0).all() and np.isneginf(lse).all()
    q0 = np.zeros((2, 2, 0, 8), np.float32)
    out, lse = attention(q0, k, v, return_lse=True)
    assert out.shape == (2, 2, 0, 8) and lse.shape == (2, 2, 0)


@pytest.mark.parametrize("d", [8, 9, 40, 80, 96, 112, 136, 200, 256])
def test_every_head_dim_on_the_default_config(d):
    q, k, v = _qkv(np.random.default_rng(d), 1, 2, 1, 19, 45, d)
    mask = np.arange(45)[None, :] < 30
    out = attention(q, k, v, mask=mask, causal=True)
    np.testing.assert_allclose(out, reference({"q": q, "k": k, "v": v, "causal": True, "mask": mask}),
                               rtol=2e-4, atol=3e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"mask": np.ones((3, 1, 1, 7), bool)}, "does not broadcast"),
    ({"mask": np.ones((2, 7), np.int32)}, "bool"),
    ({"mask": np.full((1, 7), np.nan, np.float32)}, "NaN"),
    ({"window": (1, 2, 3)}, "window"),
])
def test_bad_masks_and_windows(kwargs, message):
    z = np.zeros((2, 1, 4, 8), np.float32)
    with pytest.raises(InputError, match=message):
        attention(z, np.zeros((2, 1, 7, 8), np.float32), np.zeros((2, 1, 7, 8), np.float32), **kwargs)


def test_bad_cu_seqlens():
    q = np.zeros((5, 2, 16), np.float32)
    with pytest.raises(InputError, match="cu_seqlens_q"):
        attention_varlen(q, q, q, np.array([0, 3, 4]), np.array([0, 3, 5]), 3, 3)
    with pytest.raises(InputError, match="max_seqlen"):
        attention_varlen(q, q, q, np.array([0, 3, 5]), np.array([0, 3, 5]), 2, 3)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("extra", [{"mask": 3}, {"mask": 15, "window": True, "causal": True}, {"spans": True}],
                         ids=["keypad", "full-mask-window-causal", "varlen"])
@pytest.mark.parametrize("d", [32, 80, 128])
def test_masked_fp16_kernel_compiles_for_sm80_without_spills(extra, d):
    import ops
    from tilec.backends.triton import compile_offline
    spec = ops.REGISTRY["attention"]
    shape = {"B": 4, "H": 8, "Hkv": 8, "Lq": 1024, "Lk": 1024, "D": d, **extra}
    cfg = spec.default_config(shape, "triton")
    _kernel, fn, _grid = spec.launch_ir(shape, "float16", cfg)
    report = compile_offline(fn, {k: cfg[k] for k in ("num_warps", "num_stages")}, "sm_80")
    assert report.feasible and report.spills_bytes == 0, report.problems()


GPU_EXTRAS = [{"mask": 3}, {"mask": 15, "window": True, "causal": True}, {"spans": True}]
GPU_IDS = ["keypad", "full-mask-window-causal", "varlen"]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("extra", GPU_EXTRAS, ids=GPU_IDS)
@pytest.mark.parametrize("arch", ["sm_80", "sm_89", "sm_90"])
def test_masked_kernels_compile_with_triton_for_every_arch_without_spills(extra, arch):
    import ops
    from tilec.backends.triton import compile_offline
    spec = ops.REGISTRY["attention"]
    shape = {"B": 4, "H": 8, "Hkv": 8, "Lq": 1024, "Lk": 1024, "D": 64, **extra}
    cfg = spec.default_config(shape, "triton")
    fn = spec.launch_ir(shape, "float16", cfg)[1]
    report = compile_offline(fn, {k: cfg[k] for k in ("num_warps", "num_stages")}, arch)
    assert report.feasible and report.spills_bytes == 0, report.problems()


@pytest.mark.parametrize("extra", GPU_EXTRAS, ids=GPU_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_masked_kernels_compile_with_nvrtc_for_every_arch_without_spills(extra, dtype):
    import ops
    from tilec.backends import get
    from tilec.backends.cuda import offline
    from tilec.backends.cuda.limits import ARCHS
    if offline.available() is not None:
        pytest.skip(str(offline.available()))
    spec, be = ops.REGISTRY["attention"], get("cuda")
    shape = {"B": 4, "H": 8, "Hkv": 8, "Lq": 1024, "Lk": 1024, "D": 64, **extra}
    cfg = spec.default_config(shape, "cuda")
    fn = spec.launch_ir(shape, dtype, cfg)[1]
    options = {k: v for k, v in cfg.items() if k in be.options}
    for arch in ARCHS:
        report = be.compile_offline(fn, options, arch)
        assert report.spills_bytes == 0 and report.stack_bytes == 0, (arch, report)
