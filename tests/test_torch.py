"""Ops on Torch CPU tensors, and through torch.compile with no graph break (torch optional)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is optional: pip install torch (CPU build) to run these")

import ops  # noqa: E402
import tilec as tc  # noqa: E402
import ops.torch  # noqa: E402,F401  (registers torch.ops.tilec.*)


def _ref(a, b):
    return a.double() @ b.double()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_gemm_on_torch_tensors_returns_torch(dtype, tol):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 19, generator=g).to(dtype)
    b = torch.randn(19, 23, generator=g).to(dtype)
    c = ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    assert isinstance(c, torch.Tensor) and c.dtype == dtype and c.shape == (37, 23)
    torch.testing.assert_close(c.double(), _ref(a, b), rtol=tol, atol=tol * 5)


def test_non_contiguous_torch_views_are_read_in_place():
    a = torch.randn(30, 50)[:, ::2]
    b = torch.randn(40, 25).t()
    c = ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    torch.testing.assert_close(c.double(), _ref(a, b), rtol=1e-4, atol=1e-4)


def test_gemv_on_torch_matches_numpy_result():
    a = torch.randn(65, 130)
    x = torch.randn(130)
    y = ops.gemv(a, x)
    np.testing.assert_allclose(y.numpy(), ops.gemv(a.numpy(), x.numpy()), rtol=1e-6)


def test_mixed_libraries_name_both():
    with pytest.raises(tc.TilecError, match="a is a torch array on cpu, b is a numpy array on cpu"):
        ops.gemm(torch.ones(2, 2), np.ones((2, 2), np.float32))


def test_custom_op_compiles_without_graph_break():
    def block(a, b, bias):
        h = torch.ops.tilec.gemm(a, b, bias, "relu", 1.0)
        return torch.ops.tilec.gemv(h, a[0, : h.shape[1]].contiguous(), None, None, 2.0)

    a, b, bias = torch.randn(8, 16), torch.randn(16, 8), torch.randn(8)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # fullgraph: a break raises
    out = compiled(a, b, bias)
    h = torch.relu(a.double() @ b.double() + bias.double())
    torch.testing.assert_close(out.double(), 2.0 * h @ a[0, :8].double(), rtol=1e-4, atol=1e-4)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        a, b = torch.empty(5, 7), torch.empty(7, 3)
        assert torch.ops.tilec.gemm(a, b, None, None, 1.0).shape == (5, 3)
        assert torch.ops.tilec.gemv(a, torch.empty(7), None, None, 1.0).shape == (5,)


@pytest.mark.parametrize("method,tol", [("int4", 0.2), ("int8", 0.02), ("lut", 0.3)])
def test_quantize_linear_in_one_call(method, tol):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    layer = ops.torch.quantize_linear(linear, method, group_size=64)
    x = torch.randn(5, 256)
    got = layer(x)
    want = linear(x).detach()
    assert got.shape == (5, 96)
    # against the layer's own dequantized weight: only kernel rounding separates them
    if method == "lut":
        from ops.bcq import BCQLayout, BCQWeight
        w = BCQWeight(layer.bits.numpy(), layer.alpha.numpy(), None, (256, 96),
                      BCQLayout(3, 64, "stored", False)).dequantize()
    else:
        from ops.quant_format import QuantizedWeight, QuantLayout
        zeros = None if layer.zeros is None else layer.zeros.numpy()
        w = QuantizedWeight(layer.qweight.numpy(), layer.scales.numpy(), zeros, (256, 96),
                            QuantLayout(int(method[3:]), 64, zeros is None)).dequantize()
    exact = x.double() @ torch.from_numpy(w).double() + linear.bias.double()
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4)
    # and quantization keeps it near the float layer
    assert (got - want).norm() / want.norm() < tol


def test_quantized_mlp_under_torch_compile():
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    qmlp = torch.nn.Sequential(ops.torch.quantize_linear(mlp[0], "int4", group_size=32), torch.nn.GELU(),
                               ops.torch.quantize_linear(mlp[2], "lut", group_size=32))
    x = torch.randn(3, 128)
    eager = qmlp(x)
    compiled = torch.compile(qmlp, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)


def test_act_quant_layers_under_torch_compile_fullgraph():
    """The integer-dot form (act_quant) compiles whole: its k-quad copy of the weight is a
    non-persistent buffer made at conversion and at load_state_dict, not in the traced forward."""
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    qmlp = torch.nn.Sequential(ops.torch.quantize_linear(mlp[0], "int4", group_size=32, act_quant="int8"),
                               torch.nn.GELU(), ops.torch.quantize_linear(mlp[2], "int8", group_size=32,
                                                                          act_quant="int8"))
    assert not any("quad" in key for key in qmlp.state_dict())          # derived, not saved
    x = torch.randn(5, 128)
    eager = qmlp(x)
    torch.testing.assert_close(torch.compile(qmlp, fullgraph=True, backend="aot_eager")(x), eager)
    # a layer built empty and loaded from a saved one computes the same, compiled
    q = ops.torch.QuantLinear
    loaded = torch.nn.Sequential(q(128, 64, "int4", 32, zeros=True, act_quant="int8"), torch.nn.GELU(),
                                 q(64, 32, "int8", 32, zeros=True, act_quant="int8"))
    loaded.load_state_dict(qmlp.state_dict())
    torch.testing.assert_close(torch.compile(loaded, fullgraph=True, backend="aot_eager")(x), eager)


def _attention_ref(q, k, v, causal, lengths=None):
    """float64 softmax attention with GQA; causal aligned to the end; ``lengths`` (decode) keeps
    the first lengths[b] keys of sequence b, the new tokens being the last q.shape[2] of them."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    lq, lk = s.shape[-2:]
    rows = torch.arange(lq)[:, None]
    cols = torch.arange(lk)[None, :]
    n = torch.full((q.shape[0],), lk) if lengths is None else lengths.long()
    visible = cols[None] < n[:, None, None]
    if causal or lengths is not None:
        visible = visible & (cols[None] <= rows[None] + (n[:, None, None] - lq))
    s = s.masked_fill(~visible[:, None], float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def test_attention_ops_trace_without_graph_break():
    """Prefill (causal, GQA, odd lengths) and a decode step in one compiled block."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 7, 24, generator=g)
    k, v = torch.randn(2, 2, 11, 24, generator=g), torch.randn(2, 2, 11, 24, generator=g)
    lengths = torch.tensor([5, 11], dtype=torch.int32)

    def block(q, k, v, lengths):
        prefill = torch.ops.tilec.attention(q, k, v, True, None)
        step = torch.ops.tilec.decode_attention(q[:, :, -2:].contiguous(), k, v, lengths, None)
        return prefill, step

    prefill, step = torch.compile(block, fullgraph=True, backend="aot_eager")(q, k, v, lengths)
    torch.testing.assert_close(prefill.double(), _attention_ref(q, k, v, True)[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step.double(), _attention_ref(q[:, :, -2:], k, v, True, lengths)[0],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_attention_lse_op_matches_logsumexp(dtype, tol):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g).to(dtype) for n in (5, 9, 9))
    out, lse = torch.ops.tilec.attention_lse(q, k, v, False, None)
    want, want_lse = _attention_ref(q, k, v, False)
    assert out.dtype == dtype and lse.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-4, atol=1e-4)


def test_kivi_decode_through_custom_op_under_compile():
    rng = np.random.default_rng(4)
    k, v = (rng.standard_normal((1, 2, 150, 32)).astype(np.float32) for _ in range(2))
    lengths = np.array([141], np.int32)
    cache = ops.quantize_kv(k, v, lengths, bits=2, group=32, residual=16)
    q = torch.from_numpy(rng.standard_normal((1, 4, 1, 32)).astype(np.float32))
    # the dequantized cache is the NumPy inverse of the packed layout, not the kernel
    kd, vd, lens = cache.dequantize()
    want = _attention_ref(q, torch.from_numpy(kd), torch.from_numpy(vd), True, torch.from_numpy(lens))[0]
    eager = ops.torch.decode_attention_quantized(q, cache)
    torch.testing.assert_close(eager.double(), want, rtol=1e-3, atol=1e-3)
    fields = [torch.from_numpy(getattr(cache, n)) for n in cache.ARRAYS]
    step = torch.compile(lambda q, *f: torch.ops.tilec.kivi_decode_attention(q, *f, 2, 32, None),
                         fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(step(q, *fields), eager)


def test_attention_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q, kv = torch.empty(2, 4, 3, 16, dtype=torch.bfloat16), torch.empty(2, 2, 8, 16, dtype=torch.bfloat16)
        assert torch.ops.tilec.attention(q, kv, kv, False, None).shape == (2, 4, 3, 16)
        out, lse = torch.ops.tilec.attention_lse(q, kv, kv, True, None)
        assert out.dtype == torch.bfloat16 and lse.shape == (2, 4, 3) and lse.dtype == torch.float32
        assert torch.ops.tilec.decode_attention(q, kv, kv, torch.empty(2, dtype=torch.int32), None).shape \
            == (2, 4, 3, 16)
        u8, i32 = torch.uint8, torch.int32
        fields = [torch.empty(2, 2, 16, 16, dtype=u8), torch.empty(2, 2, 2, 16), torch.empty(2, 2, 2, 16),
                  torch.empty(2, 2, 16, 16, dtype=u8), torch.empty(2, 2, 32), torch.empty(2, 2, 32),
                  kv, kv, torch.empty(2, dtype=i32), torch.empty(2, dtype=i32)]
        assert torch.ops.tilec.kivi_decode_attention(q, *fields, 2, 32, None).shape == (2, 4, 3, 16)


@pytest.mark.parametrize("op", ["gemm", "gemv"])
def test_calls_on_cpu_tensors_keep_their_plan(op, monkeypatch):
    """A repeated eager call on torch CPU tensors plans once, like one on NumPy arrays (planning
    every call cost ~90 us); the tensors' and the arrays' calls keep plans of their own and
    each returns its caller's type."""
    import importlib
    from ops._common import CallPlans
    module = importlib.import_module(f"ops.{op}")
    monkeypatch.setattr(module, "_plans", CallPlans())          # none kept from earlier tests
    planned = []
    real = module._plan
    monkeypatch.setattr(module, "_plan", lambda *a: planned.append(type(a[0])) or real(*a))
    torch.manual_seed(3)
    a, b = torch.randn(6, 64), torch.randn(64, 10) if op == "gemm" else torch.randn(64)
    fn = getattr(ops, op)
    want = a.double() @ b.double()
    for _ in range(3):
        got = fn(a, b)
        assert type(got) is torch.Tensor
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert planned == [torch.Tensor]
    assert type(fn(a.numpy(), b.numpy())) is np.ndarray and planned == [torch.Tensor, np.ndarray]
    fn(a[:5], b)                                  # another shape: a plan of its own
    assert planned == [torch.Tensor, np.ndarray, torch.Tensor]
    a.requires_grad_()                            # autograd records: the custom op, not a kept plan
    assert fn(a, b).grad_fn is not None and len(planned) == 3
