"""Fuzz of bad (and odd but valid) arguments over every public op: each call either returns
what a float64 NumPy reference of the same arguments gives, or raises tilec.InputError /
TilecError. Any other exception, or a result that differs from the reference (uninitialized
memory, a wrong broadcast), fails.

One argument per example is spoiled: dtype, rank, a dimension, the array library (a Torch
tensor among NumPy arrays, or all Torch), not an array at all, a layout (Fortran order, a
strided view: valid, must compute right), NaN/inf (valid: must propagate as the reference
does), a config; sizes include 0. Small shapes and few examples: compiles dominate, and each
op's valid calls share one config so they share compiled kernels."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import ops
import tilec as tc

try:                         # optional: without it the fuzz keeps to NumPy arrays
    import torch
except ImportError:
    torch = None

EXAMPLES = int(os.environ.get("TILEC_FUZZ_EXAMPLES", "12"))
SIZES = st.sampled_from([0, 1, 2, 3, 5, 17])
MUTATIONS = ("none", "dtype", "rank", "dim", "not_array", "layout", "nonfinite", "config") + \
    (("library", "torch") if torch is not None else ())
BAD_CONFIGS = ["junk", {"BM": 16.0}, {"NOPE": 1}, {"BD": 7}, [1, 2], {"dot": "fast"}]

fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)


def _arr(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _spoil(draw, rng, arrays: dict, name: str, kind: str):
    """``arrays`` with ``name`` spoiled by ``kind`` (other kinds: the arrays as they are)."""
    out = dict(arrays)
    x = out[name]
    if kind == "dtype":
        out[name] = x.astype(draw(st.sampled_from([np.int32, np.float64, np.uint8, np.bool_, np.complex64,
                                                   np.float16])))
    elif kind == "rank":
        out[name] = x[None] if draw(st.booleans()) or x.ndim < 2 else x.reshape(-1)
    elif kind == "dim" and x.ndim:
        axis = draw(st.integers(0, x.ndim - 1))
        out[name] = np.concatenate([x, x.take([0] * 1, axis=axis) if x.shape[axis] else
                                    np.zeros(x.shape[:axis] + (1,) + x.shape[axis + 1:], x.dtype)], axis=axis)
    elif kind == "library":
        out[name] = torch.from_numpy(np.ascontiguousarray(x))
    elif kind == "torch":
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
               for k, v in out.items()}
    elif kind == "not_array":
        out[name] = draw(st.sampled_from([None, "x", 3.0, x.tolist()]))
    elif kind == "layout" and x.ndim:
        if draw(st.booleans()):
            out[name] = np.asfortranarray(x)
        else:                                        # a strided view of the same values
            wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
            wide[..., ::2] = x
            out[name] = wide[..., ::2]
    elif kind == "nonfinite" and x.size and x.dtype.kind == "f":
        y = x.copy()
        y.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        out[name] = y
    return out


def _host(x) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.float().numpy()
    return np.asarray(x, np.float64)


def _check(call, reference, atol=1e-4, rtol=1e-4):
    """The op's answer is the reference's, or it raised a TilecError."""
    try:
        got = call()
    except tc.TilecError as e:
        event(f"raised {type(e).__name__}: {str(e)[:70]}")
        return None
    event("computed")
    want = reference()
    got = _host(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], atol=atol, rtol=rtol)
    # where the reference is NaN or infinite, so is the answer (not an uninitialized number)
    assert not np.isfinite(got[~finite]).any()
    return got


def _config(draw, valid: dict, kind: str):
    return draw(st.sampled_from(BAD_CONFIGS)) if kind == "config" else valid


def _tolerance(arrays) -> dict:
    halves = (np.float16,) if torch is None else (np.float16, torch.float16)
    low = any(getattr(v, "dtype", None) in halves for v in arrays.values())
    return {"atol": 2e-2, "rtol": 2e-2} if low else {}


@fuzz
@given(st.data())
def test_fuzz_gemm_and_gemv(data):
    draw = data.draw
    m, n, k = draw(SIZES), draw(SIZES), draw(SIZES)
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(MUTATIONS))
    if draw(st.booleans()):
        arrays = _spoil(draw, rng, {"a": _arr(rng, (m, k)), "b": _arr(rng, (k, n)), "bias": _arr(rng, (n,))},
                        draw(st.sampled_from(["a", "b", "bias"])), kind)
        config = _config(draw, {"BM": 16, "BN": 16, "BK": 16}, kind)
        alpha = draw(st.sampled_from([1.0, -0.5, 2]))
        _check(lambda: ops.gemm(arrays["a"], arrays["b"], bias=arrays["bias"], alpha=alpha, config=config),
               lambda: alpha * (_host(arrays["a"]) @ _host(arrays["b"])) + _host(arrays["bias"]),
               **_tolerance(arrays))
    else:
        arrays = _spoil(draw, rng, {"a": _arr(rng, (m, k)), "x": _arr(rng, (k,))},
                        draw(st.sampled_from(["a", "x"])), kind)
        config = _config(draw, {"BM": 4, "BK": 64}, kind)
        _check(lambda: ops.gemv(arrays["a"], arrays["x"], config=config),
               lambda: _host(arrays["a"]) @ _host(arrays["x"]), **_tolerance(arrays))


@fuzz
@given(st.data())
def test_fuzz_quantized_gemms(data):
    draw = data.draw
    m, k, n = draw(SIZES), draw(st.sampled_from([0, 16, 32])), draw(st.sampled_from([0, 8, 16]))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(MUTATIONS))
    w = _arr(rng, (k, n))
    if draw(st.booleans()):
        try:
            weight = ops.quantize(w, bits=draw(st.sampled_from([4, 8])), group_size=16 if k else 1,
                                  symmetric=draw(st.booleans()))
        except tc.InputError:
            return
        dense = weight.dequantize()
        arrays = _spoil(draw, rng, {"x": _arr(rng, (m, k))}, "x", kind)
        config = _config(draw, {"BM": 4, "BNB": 16}, kind)
        _check(lambda: ops.quant_gemm(arrays["x"], weight, config=config),
               lambda: _host(arrays["x"]) @ _host(dense), atol=1e-3, rtol=1e-3)
    else:
        try:
            weight = ops.bcq_quantize(w, bits=2, group_size=16 if k else 1)
        except tc.InputError:
            return
        dense = weight.dequantize()
        arrays = _spoil(draw, rng, {"x": _arr(rng, (m, k))}, "x", kind)
        config = _config(draw, {"BM": 4, "BN": 32, "MU": 8}, kind)
        _check(lambda: ops.lut_gemm(arrays["x"], weight, config=config),
               lambda: _host(arrays["x"]) @ _host(dense), atol=1e-3, rtol=1e-3)


def _attention_reference(q, k, v, scale=None):
    q, k, v = _host(q), _host(k), _host(v)
    group = q.shape[1] // max(k.shape[1], 1)
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    if k.shape[2] == 0:
        return np.zeros(q.shape)
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * (scale or 1 / math.sqrt(q.shape[-1]))
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(-1, keepdims=True))
        return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)


@fuzz
@given(st.data())
def test_fuzz_attention_and_decode(data):
    draw = data.draw
    b, hkv, group, lq, lk = draw(st.sampled_from([0, 1, 2])), draw(st.sampled_from([1, 2])), \
        draw(st.sampled_from([1, 2])), draw(SIZES), draw(SIZES)
    d = 16
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(MUTATIONS))
    h = hkv * group
    if draw(st.booleans()):
        arrays = _spoil(draw, rng, {"q": _arr(rng, (b, h, lq, d)), "k": _arr(rng, (b, hkv, lk, d)),
                                    "v": _arr(rng, (b, hkv, lk, d))}, draw(st.sampled_from(["q", "k", "v"])), kind)
        config = _config(draw, {"BM": 16, "BN": 16}, kind)
        _check(lambda: ops.attention(arrays["q"], arrays["k"], arrays["v"], config=config),
               lambda: _attention_reference(arrays["q"], arrays["k"], arrays["v"]), **_tolerance(arrays))
    else:
        t = max(1, min(lq, 2))
        lens = rng.integers(t, max(lk, t) + 1, size=b).astype(np.int32)
        arrays = _spoil(draw, rng, {"q": _arr(rng, (b, h, t, d)), "k": _arr(rng, (b, hkv, lk, d)),
                                    "v": _arr(rng, (b, hkv, lk, d)), "lengths": lens},
                        draw(st.sampled_from(["q", "k", "v", "lengths"])), kind)
        config = _config(draw, {"NS": 1}, kind)

        def reference():
            q, k, v, lengths = (arrays[n] for n in ("q", "k", "v", "lengths"))
            out = np.zeros(q.shape)
            for i, n in enumerate(np.asarray(lengths).tolist()):
                # the T new tokens are the last T of the n cached ones: token j sees n - T + j + 1 keys
                for j in range(q.shape[2]):
                    out[i, :, j:j + 1] = _attention_reference(q[i:i + 1, :, j:j + 1], k[i:i + 1, :, :n - q.shape[2] + j + 1],
                                                              v[i:i + 1, :, :n - q.shape[2] + j + 1])[0]
            return out
        _check(lambda: ops.decode_attention(arrays["q"], arrays["k"], arrays["v"], arrays["lengths"],
                                            config=config), reference, **_tolerance(arrays))


@settings(fuzz, max_examples=max(1, EXAMPLES * 2 // 3))     # its decode kernel is the slowest compile
@given(st.data())
def test_fuzz_quantized_kv_cache(data):
    draw = data.draw
    b, hkv, cap = draw(st.sampled_from([0, 1, 2])), draw(st.sampled_from([1, 2])), draw(st.sampled_from([0, 1, 16, 40]))
    d = 16
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    kind = draw(st.sampled_from(MUTATIONS))
    arrays = _spoil(draw, rng, {"k": _arr(rng, (b, hkv, cap, d)), "v": _arr(rng, (b, hkv, cap, d))},
                    draw(st.sampled_from(["k", "v"])), kind)
    try:
        cache = ops.quantize_kv(arrays["k"], arrays["v"], bits=2, group=16, residual=4)
    except tc.TilecError:
        return
    kk, vv, lengths = cache.dequantize()
    assert np.array_equal(lengths, np.full(b, cap))
    ref_k = _host(arrays["k"])
    for i in range(b):                       # the residual tokens are kept exactly
        n = int(cache.q_len[i])
        np.testing.assert_array_equal(kk[i, :, n:cap], ref_k[i, :, n:cap].astype(np.float32))
    q = _arr(rng, (b, 2 * hkv, 1, d))
    config = _config(draw, {"NS": 1, "NG": 1}, draw(st.sampled_from(["none", "config"])))
    _check(lambda: ops.decode_attention_quantized(q, cache, config=config),
           lambda: _attention_reference(q, kk[:, :, :cap], vv[:, :, :cap]), atol=1e-3, rtol=1e-3)
    new = _spoil(draw, rng, {"k": _arr(rng, (b, hkv, 1, d)), "v": _arr(rng, (b, hkv, 1, d))},
                 draw(st.sampled_from(["k", "v"])), draw(st.sampled_from(MUTATIONS)))
    try:
        ops.append_kv(cache, new["k"], new["v"])
    except tc.TilecError:
        return
    # it fitted (an empty batch always does), and every sequence holds one more token
    assert b == 0 or cap + 1 <= cache.capacity
    assert np.array_equal(cache.q_len + cache.r_len, np.full(b, cap + 1))


@pytest.mark.parametrize("call", [
    lambda w: ops.quantize(w, bits=4, group_size=16),
    lambda w: ops.bcq_quantize(w, bits=2, group_size=16),
])
@fuzz
@given(st.data())
def test_fuzz_weight_quantizers(call, data):
    draw = data.draw
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    w = _spoil(draw, rng, {"w": _arr(rng, (draw(st.sampled_from([0, 16, 32])), draw(st.sampled_from([0, 8]))))},
               "w", draw(st.sampled_from(MUTATIONS)))["w"]
    try:
        qw = call(w)
    except tc.TilecError:
        return
    dense = qw.dequantize()
    assert dense.shape == np.shape(w) and np.all(np.isfinite(dense))
