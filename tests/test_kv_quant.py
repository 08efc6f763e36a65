"""KIVI cache: quantization error within half a step, the packed layout, the residual split,
and decoding straight from the packed cache against decoding the dequantized cache."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from ops.backends_for_tests import BACKENDS
from ops.decode import reference as decode_reference
from ops.kv_quant import append_kv, decode_attention_quantized, default_config, quantize_kv, unpack_host
from tilec.errors import InputError


def _kv(rng, b, hkv, cap, d):
    return (rng.standard_normal((b, hkv, cap, d)).astype(np.float32),
            rng.standard_normal((b, hkv, cap, d)).astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [2, 4])
def test_quantization_error_and_residual(backend, bits):
    rng = np.random.default_rng(bits)
    k, v = _kv(rng, 2, 2, 150, 32)
    k[:, :, :, 3] *= 20.0                         # an outlier channel: per-channel keys absorb it
    lens = np.array([150, 61], np.int32)
    cache = quantize_kv(k, v, lens, bits=bits, group=32, residual=16, backend=backend)
    assert list(cache.q_len) == [128, 32] and list(cache.r_len) == [22, 29]
    kk, vv, back = cache.dequantize()
    assert (back == lens).all()
    levels = 2 ** bits - 1
    for b, n in enumerate(cache.q_len):
        kg = k[b, :, :n].reshape(2, n // 32, 32, 32)
        k_step = (kg.max(2) - kg.min(2)) / levels               # per group and channel
        k_err = np.abs(kk[b, :, :n] - k[b, :, :n]).reshape(2, n // 32, 32, 32)
        assert (k_err <= k_step[:, :, None, :] / 2 + 1e-5).all()
        v_step = (v[b, :, :n].max(-1) - v[b, :, :n].min(-1)) / levels  # per token
        assert (np.abs(vv[b, :, :n] - v[b, :, :n]) <= v_step[..., None] / 2 + 1e-5).all()
        r = lens[b] - n
        np.testing.assert_array_equal(kk[b, :, n:n + r], k[b, :, n:n + r])   # residual is exact


def test_packed_layout():
    """Byte i of a group holds tokens i, i + G/PB, ... at bit offsets 0, bits, ..."""
    k = np.zeros((1, 1, 32, 32), np.float32)
    k[0, 0, :, 0] = np.arange(32) // 3 % 4       # key channel 0 spans 0..3 in the group: codes = values
    cache = quantize_kv(k, k, bits=2, group=32, residual=0)
    codes = np.asarray(cache.k_codes)[0, 0, :, 0]
    want = [sum(((i + j * 8) // 3 % 4) << (2 * j) for j in range(4)) for i in range(8)]
    assert list(codes) == want
    np.testing.assert_array_equal(unpack_host(np.asarray(cache.k_codes), 2, 32)[0, 0, :, 0], k[0, 0, :, 0])


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# capacities of 3+ key groups, so the 4 splits really split (each split/bits/t variant is a
# ~12 s compile; one split is what examples/attention_block.py decodes with)
@given(data=st.data(), b=st.integers(1, 2), t=st.sampled_from([1, 2]), cap=st.sampled_from([97, 200]),
       bits=st.sampled_from([2, 4]), seed=st.integers(0, 2**16))
def test_decode_from_packed_cache(backend, data, b, t, cap, bits, seed):
    """Split-K over the packed groups (4 splits; the full-precision tail rides with split 0)."""
    splits = 4
    lengths = np.array(data.draw(st.lists(st.integers(t, cap), min_size=b, max_size=b)), np.int32)
    rng = np.random.default_rng(seed)
    k, v = _kv(rng, b, 2, cap, 32)
    q = rng.standard_normal((b, 4, t, 32)).astype(np.float32)
    cache = quantize_kv(k, v, lengths, bits=bits, group=32, residual=8, backend=backend)
    out = decode_attention_quantized(q, cache, backend=backend, config={"BD": 32, "NS": splits})
    kk, vv, lens = cache.dequantize()
    want = decode_reference({"q": q, "k_cache": kk, "v_cache": vv, "lengths": lens})
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-4)
    if bits == 4:  # 4 bits stay close to full precision attention
        exact = decode_reference({"q": q, "k_cache": k, "v_cache": v, "lengths": lengths})
        assert np.abs(out - exact).max() < 0.3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 8e-3)])
def test_16bit_cache(backend, dtype, tol):
    """16-bit keys and values: codes and scales from their fp32 values, a 16-bit residual, the
    output in the input dtype; against decoding the dequantized cache in float64."""
    from ops._testing import random_array
    rng = np.random.default_rng(9)
    k, v = (random_array((2, 2, 70, 32), dtype, rng) for _ in range(2))
    q = random_array((2, 4, 1, 32), dtype, rng)
    cache = quantize_kv(k, v, np.array([70, 40], np.int32), bits=2, group=16, residual=8, backend=backend)
    assert cache.k_res.dtype == k.dtype and list(cache.q_len) == [48, 32]
    out = decode_attention_quantized(q, cache, backend=backend, config={"BD": 32, "NS": 2})
    assert out.dtype == q.dtype
    kk, vv, lens = cache.dequantize()
    want = decode_reference({"q": q, "k_cache": kk, "v_cache": vv, "lengths": lens})
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=tol, atol=tol)


# (NG, bits): one key group per step (scale and zero folded into q) or several (keys
# dequantized; a step then runs past the last quantized group and past a split's end, masked)
@pytest.mark.parametrize("ng,bits", [(1, 4), (1, 2), (4, 4), (8, 2), (32, 4)])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), b=st.integers(1, 3), splits=st.sampled_from([1, 4]), residual=st.sampled_from([0, 5]),
       seed=st.integers(0, 2**16))
def test_steps_of_several_groups(ng, bits, data, b, splits, residual, seed):
    """Groups of 16, a prime capacity and head dim (17: padded to 32), 3 query heads on one KV
    head, lengths down to the single new token; against decoding the dequantized cache."""
    cap, d = 131, 17
    lengths = np.array(data.draw(st.lists(st.integers(1, cap), min_size=b, max_size=b)), np.int32)
    rng = np.random.default_rng(seed)
    k, v = _kv(rng, b, 1, cap, d)
    q = rng.standard_normal((b, 3, 1, d)).astype(np.float32)
    cache = quantize_kv(k, v, lengths, bits=bits, group=16, residual=residual)
    out = decode_attention_quantized(q, cache, config={"NS": splits, "NG": ng})
    kk, vv, lens = cache.dequantize()
    want = decode_reference({"q": q, "k_cache": kk, "v_cache": vv, "lengths": lens})
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-4)


def test_default_steps():
    """The CPU default: steps of 512 tokens, never more groups than the cache has."""
    shape = {"B": 1, "H": 32, "Hkv": 8, "T": 1, "L": 16384, "D": 128}
    steps = [default_config({**shape, "G": g}, "numba")["NG"] for g in (16, 32, 128, 256, 1024)]
    assert steps == [32, 16, 4, 2, 1]
    assert default_config({**shape, "L": 64, "G": 32}, "numba")["NG"] == 2
    assert default_config({**shape, "G": 32}, "triton").get("NG", 1) == 1   # GPUs: one group a step (the kernel default)


def test_bad_parameters():
    k = np.zeros((1, 1, 32, 32), np.float32)
    with pytest.raises(InputError, match="bits"):
        quantize_kv(k, k, bits=3)
    with pytest.raises(InputError, match="group"):
        quantize_kv(k, k, group=24)
    with pytest.raises(InputError, match="lengths"):
        quantize_kv(k, k, np.array([33], np.int32))
    cache = quantize_kv(k, k, bits=2, group=32, residual=0)
    with pytest.raises(InputError, match="new tokens"):
        decode_attention_quantized(np.zeros((1, 1, 40, 32), np.float32), cache)


def _fields(cache):
    return {name: np.asarray(getattr(cache, name)) for name in cache.ARRAYS}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.sampled_from([2, 4]), group=st.sampled_from([16, 32]), residual=st.sampled_from([0, 5, 16]),
       start=st.tuples(st.integers(0, 50), st.integers(0, 50)),
       steps=st.lists(st.integers(0, 40), min_size=1, max_size=10), seed=st.integers(0, 2**16))
def test_appending_equals_quantizing_the_whole_sequences(bits, group, residual, start, steps, seed):
    """Token by token (or in chunks) from a cache of each sequence's prompt: after every append
    each field is byte-identical to quantize_kv of the sequences so far, the bytes past each
    one's end included."""
    rng = np.random.default_rng(seed)
    k, v = _kv(rng, 2, 2, max(start) + sum(steps) + 7, 16)
    pos = np.array(start, np.int32)
    cache = quantize_kv(k, v, pos, bits=bits, group=group, residual=residual)
    for t in steps:
        new_k = np.stack([k[b, :, pos[b]:pos[b] + t] for b in range(2)])
        new_v = np.stack([v[b, :, pos[b]:pos[b] + t] for b in range(2)])
        assert append_kv(cache, new_k, new_v) is cache
        pos += t
        got, want = _fields(cache), _fields(quantize_kv(k, v, pos, bits=bits, group=group, residual=residual))
        for name in got:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} at lengths {pos}")


def test_append_refuses_what_does_not_fit_and_changes_nothing():
    rng = np.random.default_rng(7)
    k, v = _kv(rng, 2, 2, 70, 16)
    cache = quantize_kv(k, v, np.array([60, 10], np.int32), bits=2, group=16, residual=4)   # capacity 64
    before = {n: a.copy() for n, a in _fields(cache).items()}
    with pytest.raises(InputError, match="sequence 0 would hold 100 tokens .* more than the cache's capacity of 70"):
        append_kv(cache, k[:, :, :40], v[:, :, :40])
    with pytest.raises(InputError, match="share a dtype"):
        append_kv(cache, k[:, :, :1].astype(np.float16), v[:, :, :1].astype(np.float16))
    with pytest.raises(InputError, match="kv heads"):
        append_kv(cache, k[:, :1, :1], v[:, :1, :1])
    for name, a in _fields(cache).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)


def test_append_enforces_the_documented_capacity_and_names_its_own_arguments():
    """A cache made from L=128 tokens holds 128 (191 were accepted before: the quantized part
    plus a full residual window); errors name k, v and the cache, never a "q" or "query heads"."""
    rng = np.random.default_rng(9)
    k, v = _kv(rng, 1, 2, 128, 16)
    cache = quantize_kv(k, v, np.zeros(1, np.int32))
    assert cache.capacity == 128
    append_kv(cache, k[:, :, :100], v[:, :, :100])
    append_kv(cache, k[:, :, 100:], v[:, :, 100:])
    assert int(cache.q_len[0] + cache.r_len[0]) == 128
    before = {n: a.copy() for n, a in _fields(cache).items()}
    with pytest.raises(InputError, match="sequence 0 would hold 129 tokens .*capacity of 128"):
        append_kv(cache, k[:, :, :1], v[:, :, :1])
    for name, a in _fields(cache).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)
    small = quantize_kv(k, v, np.zeros(1, np.int32))
    for bad in [(k[:, :1, :1], v[:, :1, :1]), (k[:, :, :1].astype(np.float16), v[:, :, :1].astype(np.float16)),
                (k[:, :, :1], v[:, :, :2]), (k[:, :, :1, :8], v[:, :, :1, :8])]:
        with pytest.raises(InputError) as err:
            append_kv(small, *bad)
        message = str(err.value)
        assert "k" in message and "q " not in message and "query" not in message, message


def test_append_that_fails_midway_leaves_the_cache_as_it_was(monkeypatch):
    """The quantization of the windows fails: no sequence's new group or window may have landed."""
    import ops.kv_quant as kvq
    rng = np.random.default_rng(8)
    k, v = _kv(rng, 2, 2, 80, 16)
    cache = quantize_kv(k, v, np.array([20, 20], np.int32), bits=2, group=16, residual=4)
    before = {n: a.copy() for n, a in _fields(cache).items()}

    def fails(*args, **kwargs):
        raise RuntimeError("compile failed")

    monkeypatch.setattr(kvq, "quantize_kv", fails)
    with pytest.raises(RuntimeError, match="compile failed"):
        append_kv(cache, k[:, :, 20:40], v[:, :, 20:40])          # both sequences quantize a group
    for name, a in _fields(cache).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)


@pytest.mark.parametrize("cfg", [{"BD": 32, "NS": 1}, {"BD": 32, "NS": 2, "num_warps": 16}])
def test_launch_ir_is_the_kernel_the_op_launches(monkeypatch, cfg):
    """`tilec show` and the offline compiles describe the decode kernel through launch_ir: it
    must be the IR the op itself builds for the same shape and config."""
    from ops import kv_quant
    from tilec.printer import format_function
    spec = ops.REGISTRY["decode_attention_quantized"]
    shape = {"B": 2, "H": 4, "Hkv": 2, "T": 1, "L": 300, "D": 32, "G": 32, "R": 8}
    from tilec.runtime import launch
    monkeypatch.setattr(launch, "_compiled", {})   # specialize again even if an earlier test launched it
    built = []
    real_ir = kv_quant.decode_quant_kernel.ir
    monkeypatch.setattr(kv_quant.decode_quant_kernel, "ir",
                        lambda types, constexprs: built.append(real_ir(types, constexprs)) or built[-1])
    inputs = spec.make_inputs(shape, "float32", np.random.default_rng(0))
    spec.run(inputs, config=cfg, backend="triton")
    launched = {format_function(f) for f in built}
    _, fn, grid = spec.launch_ir(shape, "float32", cfg)
    assert format_function(fn) in launched
    assert grid == (cfg["NS"], 2, 2)
