"""The attention backward under masks, sliding windows and packed (varlen) batches, on every
backend, against torch autograd of a float64 materialized masked softmax: bool and additive
masks of several broadcast shapes with fully masked rows (zero gradients, never NaN), windows
with and without causal, GQA, lengths 0, 1 and primes; masked tiles skipped (NaN keys there
never reach a gradient); gradcheck; torch autograd and torch.compile(fullgraph=True) through
the masked and varlen ops; offline sm_80/89/90 compiles of the 16-bit kernels without spills."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops import attn_masks
from ops.attention import attention
from ops.attention_bwd import attention_backward, attention_varlen_backward
from ops.attention_varlen import attention_varlen
from ops.backends_for_tests import BACKENDS
from tilec.errors import InputError

torch = pytest.importorskip("torch", reason="the float64 reference is torch autograd")
import ops.torch  # noqa: E402,F401  (registers torch.ops.tilec.* and their autograd)

CFG = {"BM": 16, "BN": 16, "BD": 32}
MASKS = ["none", "keypad", "bool_rows", "additive_shared", "bool_heads"]
WINDOWS = [None, (3, 0), (5, 2), (-1, 4)]


def torch_reference(q, k, v, do, causal=False, mask=None, window=None, scale=None):
    """(dq, dk, dv) by float64 torch autograd through the materialized masked softmax; a row
    that sees no key has output 0 (so zero gradients), as the op defines."""
    q, k, v = (torch.as_tensor(np.asarray(x, np.float64)).requires_grad_() for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ kr.transpose(-1, -2) * scale
    lq, lk = q.shape[2], k.shape[2]
    pos, cols = torch.arange(lq)[:, None] + (lk - lq), torch.arange(lk)[None, :]
    visible = torch.ones(lq, lk, dtype=torch.bool)
    if causal:
        visible &= cols <= pos
    win = attn_masks.window_bounds(window)
    if win is not None:
        visible &= (cols >= pos - win[0]) & (cols <= pos + win[1])
    s = s.masked_fill(~visible, -math.inf)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask))
        if m.dtype == torch.bool:
            s = s.masked_fill(~m, -math.inf)
        else:
            m = m.double()
            s = s + m.masked_fill(m <= -1e30, -math.inf)
    if lk == 0:                                           # no key: the output is zeros
        return [np.zeros(x.shape) for x in (q, k, v)]
    top = s.detach().amax(-1, keepdim=True)
    seen = torch.isfinite(top)
    e = torch.exp(s - torch.where(seen, top, 0.0))
    o = e / torch.where(seen, e.sum(-1, keepdim=True), 1.0) @ vr
    (o * torch.as_tensor(np.asarray(do, np.float64))).sum().backward()
    return [x.grad.numpy() for x in (q, k, v)]


def _arrays(rng, *shapes):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _mask(kind, rng, b, h, lq, lk):
    """A mask of ``kind`` with fully masked rows wherever there is room."""
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


def _close(got, want, like):
    for g, w, x in zip(got, want, like):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.sampled_from([1, 2]),
       lq=st.sampled_from([0, 1, 2, 13, 17]), lk=st.sampled_from([0, 1, 7, 31]), d=st.sampled_from([8, 16, 24]),
       kind=st.sampled_from(MASKS), causal=st.booleans(), window=st.sampled_from(WINDOWS),
       split=st.booleans(), seed=st.integers(0, 2**16))
def test_masked_gradients_match_float64_autograd(backend, b, hkv, group, lq, lk, d, kind, causal, window, split,
                                                 seed):
    """On numba both forms: the per-head kernel (its fp32 default) and the split kernels."""
    if causal and lq > lk:
        lq = lk
    rng = np.random.default_rng(seed)
    h = hkv * group
    q, k, v, do = _arrays(rng, (b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, d), (b, h, lq, d))
    mask = _mask(kind, rng, b, h, lq, lk)
    o, lse = attention(q, k, v, causal=causal, mask=mask, window=window, return_lse=True, backend=backend,
                       config=CFG)
    cfg = {**CFG, "DQ": "split" if split else "per_head"} if backend == "numba" else CFG
    got = attention_backward(q, k, v, o, lse, do, causal=causal, mask=mask, window=window, backend=backend,
                             config=cfg)
    _close(got, torch_reference(q, k, v, do, causal, mask, window), (q, k, v))


def _packed(rng, lens_q, lens_k, h, hkv, d):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q, do = _arrays(rng, (cu_q[-1], h, d), (cu_q[-1], h, d))
    k, v = _arrays(rng, (cu_k[-1], hkv, d), (cu_k[-1], hkv, d))
    return q, k, v, do, cu_q, cu_k


def varlen_reference(q, k, v, do, cu_q, cu_k, causal, window):
    """One dense float64 torch reference per sequence, packed back."""
    grads = [np.zeros(x.shape) for x in (q, k, v)]
    for i in range(cu_q.size - 1):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        heads = [x[s].transpose(1, 0, 2)[None] for x, s in ((q, qs), (k, ks), (v, ks), (do, qs))]
        for g, s, r in zip(grads, (qs, ks, ks), torch_reference(*heads, causal, None, window)):
            g[s] = r[0].transpose(1, 0, 2)
    return grads


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lens=st.lists(st.sampled_from([0, 1, 2, 5, 13, 31]), min_size=1, max_size=4),
       extra=st.lists(st.sampled_from([0, 0, 3, 17]), min_size=4, max_size=4), hkv=st.integers(1, 2),
       group=st.sampled_from([1, 3]), d=st.sampled_from([8, 16]), causal=st.booleans(),
       window=st.sampled_from([None, (4, 0), (2, 3)]), split=st.booleans(), seed=st.integers(0, 2**16))
def test_varlen_gradients_match_float64_autograd(backend, lens, extra, hkv, group, d, causal, window, split, seed):
    """Packed sequences, some empty, some with a KV prefix (more keys than queries)."""
    lens_q = np.array(lens)
    lens_k = lens_q + np.array(extra[:len(lens)])
    rng = np.random.default_rng(seed)
    q, k, v, do, cu_q, cu_k = _packed(rng, lens_q, lens_k, hkv * group, hkv, d)
    args = (cu_q, cu_k, int(lens_q.max()), int(lens_k.max()))
    o, lse = attention_varlen(q, k, v, *args, causal=causal, window=window, return_lse=True, backend=backend,
                              config=CFG)
    cfg = {**CFG, "DQ": "split" if split else "per_head"} if backend == "numba" else CFG
    got = attention_varlen_backward(q, k, v, o, lse, do, *args, causal=causal, window=window, backend=backend,
                                    config=cfg)
    _close(got, varlen_reference(q, k, v, do, cu_q, cu_k, causal, window), (q, k, v))


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_tiles_are_skipped(backend):
    """Keys past each sequence's length hold NaN: the backward never loads nor multiplies a
    fully masked tile (one NaN would poison dQ and the tile's dK, dV), and masks the partial ones."""
    rng = np.random.default_rng(5)
    lens = np.array([32, 48, 7])                          # tile-aligned, whole, and a partial tile
    q, k, v, do = _arrays(rng, (3, 2, 40, 16), (3, 1, 48, 16), (3, 1, 48, 16), (3, 2, 40, 16))
    mask = np.arange(48)[None, None, None, :] < lens[:, None, None, None]
    o, lse = attention(q, k, v, mask=mask, return_lse=True, backend=backend, config=CFG)
    want = torch_reference(q, k, v, do, mask=mask)
    for i, n in enumerate(lens):
        k[i, :, -(-n // 16) * 16:] = np.nan
        v[i, :, -(-n // 16) * 16:] = np.nan
    for split in (False, True) if backend == "numba" else (True,):
        cfg = {**CFG, "DQ": "split" if split else "per_head"} if backend == "numba" else CFG
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, mask=mask, backend=backend, config=cfg)
        keep = (np.arange(48) < (-(-lens // 16) * 16)[:, None])[:, None, :, None]   # tiles that hold real keys
        assert np.isfinite(dq).all() and np.isfinite(np.where(keep, dk, 0)).all()
        np.testing.assert_allclose(dq, want[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.where(keep, dv, 0), np.where(keep, want[2], 0), rtol=1e-4, atol=1e-4)


def test_default_tiles_window_and_keypad():
    """The CPU default's 128-row tiles over more than one tile: a sliding window with causal
    and a key-padding mask, GQA."""
    rng = np.random.default_rng(7)
    q, k, v, do = _arrays(rng, (2, 4, 139, 32), (2, 2, 263, 32), (2, 2, 263, 32), (2, 4, 139, 32))
    mask = np.arange(263)[None, None, None, :] < np.array([263, 150])[:, None, None, None]
    for kw in ({"causal": True, "window": (40, 0)}, {"mask": mask}):
        o, lse = attention(q, k, v, return_lse=True, **kw)
        _close(attention_backward(q, k, v, o, lse, do, **kw), torch_reference(q, k, v, do, **kw), (q, k, v))


def test_mask_without_its_forward_gives_nan_free_zeros():
    """A row masked whole: the LSE is -inf, its dQ is 0, and it adds nothing to dK, dV."""
    rng = np.random.default_rng(1)
    q, k, v, do = _arrays(rng, (1, 1, 5, 16), (1, 1, 6, 16), (1, 1, 6, 16), (1, 1, 5, 16))
    mask = np.ones((5, 6), bool)
    mask[2] = False
    o, lse = attention(q, k, v, mask=mask, return_lse=True, config=CFG)
    assert np.isneginf(lse[0, 0, 2])
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, mask=mask, config=CFG)
    assert not dq[0, 0, 2].any()
    keep = [0, 1, 3, 4]
    _, dk2, dv2 = attention_backward(q[:, :, keep], k, v, o[:, :, keep], lse[:, :, keep], do[:, :, keep],
                                     mask=mask[keep], config=CFG)
    np.testing.assert_allclose(dk, dk2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dv, dv2, rtol=1e-5, atol=1e-6)


def test_gradcheck_masked_windowed_and_varlen():
    """Finite differences of the tilec forward against the tilec backward (numba). The kernels
    take fp32 at most, so steps and tolerances are fp32's (a wrong gradient is off by O(1))."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 5, 16, generator=g, requires_grad=True)
    k = torch.randn(2, 1, 7, 16, generator=g, requires_grad=True)
    v = torch.randn(2, 1, 7, 16, generator=g, requires_grad=True)
    keypad = torch.arange(7)[None, None, None, :] < torch.tensor([7, 4])[:, None, None, None]
    bias = torch.randn(5, 7, generator=g)
    for extra in ((False, None, keypad, None), (True, None, None, [2, 0]), (False, 0.5, bias, [1, 3])):
        assert torch.autograd.gradcheck(lambda q, k, v: torch.ops.tilec.attention(q, k, v, *extra),
                                        (q, k, v), eps=1e-2, atol=2e-3, rtol=2e-2, nondet_tol=1e-6)
    cu = torch.tensor([0, 3, 3, 7], dtype=torch.int32)
    qp, kp, vp = (torch.randn(7, 2, 16, generator=g, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda q, k, v: torch.ops.tilec.attention_varlen(q, k, v, cu, cu, 4, 4, True, None, [2, -1]),
        (qp, kp, vp), eps=1e-2, atol=2e-3, rtol=2e-2, nondet_tol=1e-6)


def test_torch_compile_fullgraph_masked_and_varlen():
    """Forward and backward traced whole through the masked op and the varlen op; gradients
    equal eager's and float64 torch autograd's."""
    g = torch.Generator().manual_seed(2)
    q, do = (torch.randn(2, 4, 9, 16, generator=g) for _ in range(2))
    k, v = (torch.randn(2, 2, 13, 16, generator=g) for _ in range(2))
    keypad = torch.arange(13)[None, None, None, :] < torch.tensor([13, 6])[:, None, None, None]
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 6, 13], dtype=torch.int32)

    def loss(q, k, v):
        o = torch.ops.tilec.attention(q, k, v, False, None, keypad, [3, 2])
        packed = o[0].transpose(0, 1).reshape(9, 4, 16)   # batch 0's rows as two packed sequences
        o2 = torch.ops.tilec.attention_varlen(packed, k[1].transpose(0, 1), v[1].transpose(0, 1), cu_q, cu_k, 5, 7,
                                              True, None, None)
        return (o * do).sum() + o2.square().sum()

    args = [x.clone().requires_grad_() for x in (q, k, v)]
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*args), args)
    want = torch.autograd.grad(loss(*args), args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the masked op alone against float64 autograd
    grads = torch.autograd.grad((torch.ops.tilec.attention(*args, False, None, keypad, [3, 2]) * do).sum(), args)
    for a, b in zip(grads, torch_reference(q, k, v, do, mask=keypad.numpy(), window=(3, 2))):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-4)


def test_mask_needing_a_gradient_is_refused():
    q = torch.zeros(1, 1, 4, 16, requires_grad=True)
    bias = torch.zeros(4, 4, requires_grad=True)
    with pytest.raises(NotImplementedError, match="no gradient to the mask"):
        torch.ops.tilec.attention(q, q, q, False, None, bias, None)


@pytest.mark.parametrize("make, message", [
    (lambda q, k, v, o, lse, do: {"mask": np.ones((3, 5), bool)}, "does not broadcast"),
    (lambda q, k, v, o, lse, do: {"window": ("a", 1)}, "window must be"),
])
def test_bad_masks_and_windows(make, message):
    q, k, v, do = _arrays(np.random.default_rng(0), (1, 2, 4, 16), (1, 1, 5, 16), (1, 1, 5, 16), (1, 2, 4, 16))
    o, lse = attention(q, k, v, return_lse=True, config=CFG)
    with pytest.raises(InputError, match=message):
        attention_backward(q, k, v, o, lse, do, **make(q, k, v, o, lse, do))


def test_bad_varlen_inputs():
    rng = np.random.default_rng(0)
    q, k, v, do, cu_q, cu_k = _packed(rng, np.array([3, 2]), np.array([3, 2]), 2, 1, 16)
    o, lse = attention_varlen(q, k, v, cu_q, cu_k, 3, 3, return_lse=True, config=CFG)
    with pytest.raises(InputError, match="lse must have shape"):
        attention_varlen_backward(q, k, v, o, lse[:, :-1], do, cu_q, cu_k, 3, 3)
    with pytest.raises(InputError, match="cu_seqlens_k"):
        attention_varlen_backward(q, k, v, o, lse, do, cu_q, np.array([0, 3, 4]), 3, 3)


# one shape per backward form: a key-padding mask, a full mask with window and causal, varlen
COMPILE_FORMS = [{"mask": 3}, {"mask": 15, "window": True, "causal": True}, {"spans": True}]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("extra", COMPILE_FORMS, ids=["keypad", "mask-window-causal", "varlen"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_triton_compiles_for_every_arch_without_spills(extra, dtype):
    from ops import attention_bwd as ab
    from tilec.backends.triton import compile_offline
    shape = {"B": 4, "H": 8, "Hkv": 2, "Lq": 1024, "Lk": 1024, "D": 64, **extra}
    cfg = ab.default_config(shape, "triton")
    options = {n: cfg[n] for n in ("num_warps", "num_stages")}
    for kernel in ("dkdv", "dq"):
        _k, fn, _grid = ab.launch_ir(shape, dtype, cfg, kernel)
        dots = [op for op in fn.walk() if op.kind == "dot"]   # 16-bit operands, fp32 accumulation
        assert all(op.operands[0].dtype.name == dtype and op.result.dtype.name == "float32" for op in dots)
        for arch in ("sm_80", "sm_89", "sm_90"):
            report = compile_offline(fn, options, arch)
            assert report.feasible and report.spills_bytes == 0, (kernel, arch, report.problems())


@pytest.mark.parametrize("extra", COMPILE_FORMS, ids=["keypad", "mask-window-causal", "varlen"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_cuda_compiles_for_every_arch_without_spills(extra, dtype):
    from ops import attention_bwd as ab
    from tilec.backends import get
    from tilec.backends.cuda import offline
    if offline.available() is not None:
        pytest.skip(str(offline.available()))
    be = get("cuda")
    shape = {"B": 4, "H": 8, "Hkv": 2, "Lq": 1024, "Lk": 1024, "D": 64, **extra}
    cfg = ab.default_config(shape, "cuda")
    options = {n: v for n, v in cfg.items() if n in be.options}
    for kernel in ("dkdv", "dq"):
        _k, fn, _grid = ab.launch_ir(shape, dtype, cfg, kernel)
        for arch in ("sm_80", "sm_89", "sm_90"):
            report = be.compile_offline(fn, options, arch)
            assert report.spills_bytes == 0 and report.stack_bytes == 0, (kernel, arch, report)
