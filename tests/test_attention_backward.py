"""ops.attention_backward and autograd through torch.ops.tilec.attention / attention_lse,
against torch autograd of a float64 materialized softmax: every backend, MHA/GQA, causal or
not, lengths 1 and primes, scale, the LSE's own gradient, gradcheck, 16-bit inputs measured
against torch's own 16-bit error, torch.compile(fullgraph=True), sm_80 compiles, bad input."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from ops.attention import attention
from ops.attention_bwd import attention_backward, default_config
from ops.backends_for_tests import BACKENDS
from tilec.errors import InputError

torch = pytest.importorskip("torch", reason="the float64 reference is torch autograd")
import ops.torch  # noqa: E402,F401  (registers torch.ops.tilec.* and their autograd)

# one tile config for the property tests: every shape reuses the same few compiled kernels
CFG = {"BM": 16, "BN": 16, "BD": 32}


def torch_reference(q, k, v, do, causal=False, scale=None, dtype=torch.float64, dlse=None):
    """(o, lse, dq, dk, dv) by torch autograd through softmax(scale q k^T) v in ``dtype``."""
    q, k, v = (torch.as_tensor(np.asarray(x, np.float32)).to(dtype).requires_grad_() for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ kr.transpose(-1, -2)).float().to(dtype) * scale
    lq, lk = q.shape[2], k.shape[2]
    if causal:
        visible = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
        s = s.masked_fill(~visible, -math.inf)
    lse = torch.logsumexp(s.float(), -1)
    o = torch.softmax(s.float(), -1).to(dtype) @ vr
    loss = (o * torch.as_tensor(np.asarray(do, np.float32)).to(dtype)).sum()
    if dlse is not None:
        loss = loss + (lse * torch.as_tensor(dlse)).sum()
    loss.backward()
    return o.detach(), lse.detach(), q.grad, k.grad, v.grad


def _inputs(rng, b, h, hkv, lq, lk, d, dtype="float32"):
    from ops._testing import random_array
    return (random_array((b, h, lq, d), dtype, rng), random_array((b, hkv, lk, d), dtype, rng),
            random_array((b, hkv, lk, d), dtype, rng), random_array((b, h, lq, d), dtype, rng))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.sampled_from([1, 2]),
       lq=st.sampled_from([1, 2, 13, 16, 37]), lk=st.sampled_from([1, 7, 16, 41]),
       d=st.sampled_from([16, 24, 32]), causal=st.booleans(), split=st.booleans(), seed=st.integers(0, 2**16))
def test_gradients_match_float64_autograd(backend, b, hkv, group, lq, lk, d, causal, split, seed):
    """On numba both forms: the per-head kernel (its default in fp32) and the split kernels."""
    if causal and lq > lk:
        lq = lk
    rng = np.random.default_rng(seed)
    q, k, v, do = _inputs(rng, b, hkv * group, hkv, lq, lk, d)
    o, lse = attention(q, k, v, causal=causal, return_lse=True, backend=backend, config=CFG)
    cfg = {**CFG, "DQ": "split" if split else "per_head"} if backend == "numba" else CFG
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, causal=causal, backend=backend, config=cfg)
    _, _, *want = torch_reference(q, k, v, do, causal)
    for got, ref, x in zip((dq, dk, dv), want, (q, k, v)):
        assert got.shape == x.shape and got.dtype == x.dtype
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_default_tiles_long_sequences_gqa_and_scale(causal):
    """The CPU default's 128-row tiles: lengths past a tile, a prime, unequal lengths, GQA, scale."""
    rng = np.random.default_rng(5)
    q, k, v, do = _inputs(rng, 1, 4, 2, 131, 263, 64)
    assert default_config({"Lq": 131, "Lk": 263, "D": 64}, "numba")["BM"] == 128
    o, lse = attention(q, k, v, causal=causal, scale=0.3, return_lse=True)
    got = attention_backward(q, k, v, o, lse, do, causal=causal, scale=0.3)
    _, _, *want = torch_reference(q, k, v, do, causal, scale=0.3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


def test_zero_length_queries_give_zero_key_gradients():
    q, k, v, do = _inputs(np.random.default_rng(0), 1, 2, 1, 0, 9, 16)
    o, lse = attention(q, k, v, return_lse=True)
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, config=CFG)
    assert dq.shape == (1, 2, 0, 16) and not dk.any() and not dv.any()


@pytest.mark.parametrize("causal", [False, True])
def test_huge_logits_stay_finite(causal):
    """Scores near 1e7 against zero-padded key rows: exp(0 - LSE) would overflow unmasked."""
    rng = np.random.default_rng(2)
    q, k, v, do = _inputs(rng, 1, 2, 1, 21, 37, 16)
    q, k = q * 1e3, k * 1e3
    o, lse = attention(q, k, v, causal=causal, return_lse=True, config=CFG)
    for mode in ("per_head", "split"):
        grads = attention_backward(q, k, v, o, lse, do, causal=causal, config={**CFG, "DQ": mode})
        assert all(np.isfinite(g).all() for g in grads), mode


def test_autograd_through_both_ops_and_the_lse_gradient():
    rng = np.random.default_rng(3)
    q, k, v, do = _inputs(rng, 2, 4, 2, 13, 16, 32)   # the defaults here are CFG: no new compiles
    dlse = rng.standard_normal((2, 4, 13)).astype(np.float32)
    for causal in (False, True):
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        out = torch.ops.tilec.attention(tq, tk, tv, causal, None)
        out.backward(torch.from_numpy(do))
        _, _, *want = torch_reference(q, k, v, do, causal)
        for t, w in zip((tq, tk, tv), want):
            torch.testing.assert_close(t.grad.double(), w, rtol=1e-4, atol=1e-4)
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        out, lse = torch.ops.tilec.attention_lse(tq, tk, tv, causal, 0.5)
        ((out * torch.from_numpy(do)).sum() + (lse * torch.from_numpy(dlse)).sum()).backward()
        _, _, *want = torch_reference(q, k, v, do, causal, scale=0.5, dlse=dlse)
        for t, w in zip((tq, tk, tv), want):
            torch.testing.assert_close(t.grad.double(), w, rtol=1e-4, atol=1e-4)


def test_gradcheck():
    """Finite differences of the tilec forward against the tilec backward. The kernels take
    fp32 at most, so the steps and tolerances are fp32's (a wrong gradient is off by O(1))."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 32, generator=g, requires_grad=True)
    k = torch.randn(1, 1, 7, 32, generator=g, requires_grad=True)
    v = torch.randn(1, 1, 7, 32, generator=g, requires_grad=True)
    for causal in (False, True):
        assert torch.autograd.gradcheck(lambda q, k, v: torch.ops.tilec.attention(q, k, v, causal, None),
                                        (q, k, v), eps=1e-2, atol=2e-3, rtol=2e-2, nondet_tol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_error_within_twice_torchs_own(backend, dtype):
    """FlashAttention's criterion: the 16-bit gradients' error against float64 is at most
    twice that of the same math in torch at that dtype (plus a floor)."""
    rng = np.random.default_rng(4)
    q, k, v, do = _inputs(rng, 1, 4, 2, 40, 77, 32, dtype)
    o, lse = attention(q, k, v, causal=True, return_lse=True, backend=backend, config=CFG)
    got = attention_backward(q, k, v, o, lse, do, causal=True, backend=backend, config=CFG)
    _, _, *exact = torch_reference(q, k, v, do, True)
    _, _, *low = torch_reference(q, k, v, do, True, dtype=getattr(torch, dtype))
    for g, e, lo, x in zip(got, exact, low, (q, k, v)):
        assert g.dtype == x.dtype
        ours = np.abs(np.asarray(g, np.float64) - e.numpy()).max()
        theirs = (lo.double() - e).abs().max().item()
        assert ours <= 2 * theirs + 1e-3, (ours, theirs)


def test_torch_compile_fullgraph_forward_and_backward():
    def loss(q, k, v):
        o = torch.ops.tilec.attention(q, k, v, True, None)
        o2, lse = torch.ops.tilec.attention_lse(o, k, v, False, None)
        return (o2 * o2).sum() + lse.sum()

    g = torch.Generator().manual_seed(1)
    args = [torch.randn(*s, generator=g, requires_grad=True) for s in ((1, 2, 9, 32), (1, 1, 13, 32), (1, 1, 13, 32))]
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*args), args)
    want = torch.autograd.grad(loss(*args), args)   # eager, through the same custom ops
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ref = [x.detach().double().requires_grad_() for x in args]

    def sdpa_loss(q, k, v):
        end_aligned = torch.arange(13)[None, :] <= torch.arange(9)[:, None] + 4   # SDPA's is_causal is top-left
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=end_aligned, enable_gqa=True)
        s = o @ k[0, 0].T / math.sqrt(32)
        return (torch.softmax(s, -1) @ v[0, 0]).square().sum() + torch.logsumexp(s, -1).sum()
    for a, b in zip(got, torch.autograd.grad(sdpa_loss(*ref), ref)):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("d", [64, 128])
def test_16bit_default_compiles_for_sm80_without_spills(dtype, d):
    from ops import attention_bwd as ab
    from tilec.backends.triton import compile_offline
    cfg = default_config({"D": d, "Lq": 1024, "Lk": 1024}, "triton")
    options = {n: cfg[n] for n in ("num_warps", "num_stages")}
    for causal in (False, True):
        shape = {"B": 1, "H": 4, "Hkv": 2, "Lq": 64, "Lk": 64, "D": d, "causal": causal}
        for kernel, products in (("dkdv", 4), ("dq", 3)):
            _k, fn, _grid = ab.launch_ir(shape, dtype, cfg, kernel)
            dots = [op for op in fn.walk() if op.kind == "dot"]   # 16-bit operands, fp32 accumulation
            assert len(dots) == products
            assert all(op.operands[0].dtype.name == dtype and op.result.dtype.name == "float32" for op in dots)
            report = compile_offline(fn, options, "sm_80")
            assert report.spills_bytes == 0 and report.feasible, (kernel, causal, report.ptxas_log)


@pytest.mark.parametrize("make, message", [
    (lambda q, k, v, o, lse, do: (q, k, v, o[:, :, :-1], lse, do), "o must have shape"),
    (lambda q, k, v, o, lse, do: (q, k, v, o, lse[..., :-1], do), "lse must have shape"),
    (lambda q, k, v, o, lse, do: (q, k, v, o, lse.astype(np.float16), do), "lse must be float32"),
    (lambda q, k, v, o, lse, do: (q, k, v, o, lse, do.astype(np.float16)), "do must be float32"),
    (lambda q, k, v, o, lse, do: (q, k[..., :8], v[..., :8], o, lse, do), "k/v must be"),
])
def test_bad_inputs(make, message):
    q, k, v, do = _inputs(np.random.default_rng(0), 1, 2, 1, 4, 5, 16)
    o, lse = attention(q, k, v, return_lse=True, config=CFG)
    with pytest.raises(InputError, match=message):
        ops.attention_backward(*make(q, k, v, o, lse, do))
