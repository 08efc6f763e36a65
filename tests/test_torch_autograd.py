"""Autograd through the custom ops: every registered formula against torch's own gradients
(tilec kernels run fp32 / fp16 / bf16, not float64, so gradcheck's finite differences are
replaced by torch autograd of the same math in float64)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is optional: pip install torch (CPU build) to run these")

import ops  # noqa: E402
import ops.torch  # noqa: E402,F401
import tilec as tc  # noqa: E402

F = torch.nn.functional
ACTS = {None: lambda z: z, "relu": torch.relu, "gelu": F.gelu,
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "silu": F.silu}


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


def _grads_close(got_out, want_out, got_in, want_in, tol=1e-5):
    g = torch.randn(want_out.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = torch.autograd.grad(got_out, got_in, g.float())
    want = torch.autograd.grad(want_out, want_in, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


def _double(*ts):
    return [t.detach().double().requires_grad_() for t in ts]


@pytest.mark.parametrize("act", list(ACTS))
def test_gemm_gradients(act):
    a, b, bias = _leaves((13, 7), (7, 5), (5,))
    out = torch.ops.tilec.gemm(a, b, bias, act, 0.75)
    ad, bd, biasd = _double(a, b, bias)
    _grads_close(out, ACTS[act](0.75 * ad @ bd + biasd), (a, b, bias), (ad, bd, biasd))


@pytest.mark.parametrize("act", [None, "gelu"])
def test_gemv_gradients(act):
    a, x, bias = _leaves((11, 6), (6,), (11,), seed=1)
    out = torch.ops.tilec.gemv(a, x, bias, act, 1.5)
    ad, xd, biasd = _double(a, x, bias)
    _grads_close(out, ACTS[act](1.5 * ad @ xd + biasd), (a, x, bias), (ad, xd, biasd))


def test_only_needed_gradients_and_no_bias():
    a, b = _leaves((4, 3), (3, 2), seed=2)
    b.requires_grad_(False)
    (ga,) = torch.autograd.grad(torch.ops.tilec.gemm(a, b, None, None, 1.0).sum(), (a,))
    torch.testing.assert_close(ga, torch.ones(4, 2) @ b.t())


def test_ops_gemm_on_tensors_that_require_grad_is_differentiable():
    a, b = _leaves((6, 5), (5, 4), seed=3)
    out = ops.gemm(a, b, activation="silu")
    ad, bd = _double(a, b)
    _grads_close(out, F.silu(ad @ bd), (a, b), (ad, bd))


def test_linear_module_gradients_with_batch_dims():
    torch.manual_seed(4)
    ref = torch.nn.Linear(10, 6).double()
    layer = ops.torch.Linear(10, 6)
    with torch.no_grad():
        layer.weight.copy_(ref.weight)
        layer.bias.copy_(ref.bias)
    (x,) = _leaves((2, 3, 10), seed=4)
    (xd,) = _double(x)
    _grads_close(layer(x), ref(xd), (x, layer.weight, layer.bias), (xd, ref.weight, ref.bias))


def test_linear_backward_under_torch_compile():
    layer = ops.torch.Linear(8, 4)
    (x,) = _leaves((3, 8), seed=5)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    gx, gw = torch.autograd.grad(compiled(x).square().sum(), (x, layer.weight))
    ex, ew = torch.autograd.grad(F.linear(x, layer.weight, layer.bias).square().sum(), (x, layer.weight))
    torch.testing.assert_close(gx, ex, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ew, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["int4", "lut"])
def test_quantlinear_input_gradient_frozen_weight(method):
    torch.manual_seed(6)
    layer = ops.torch.quantize_linear(torch.nn.Linear(64, 24), method, group_size=32)
    assert not any(p.requires_grad for p in layer.parameters()) and not list(layer.parameters())
    (x,) = _leaves((2, 5, 64), seed=6)
    (xd,) = _double(x)
    w = layer.weight.double()
    _grads_close(layer(x), xd @ w.t() + layer.bias.double(), (x,), (xd,), tol=1e-4)


def test_quantlinear_act_quant_passes_the_input_gradient_straight_through():
    torch.manual_seed(8)
    lin = torch.nn.Linear(64, 24)
    q8 = ops.torch.quantize_linear(lin, "int4", group_size=32, act_quant="int8")
    exact = ops.torch.quantize_linear(lin, "int4", group_size=32)
    (x,) = _leaves((2, 5, 64), seed=8)
    g = torch.randn(2, 5, 24)
    (gx8,) = torch.autograd.grad(q8(x), x, g)
    (gx,) = torch.autograd.grad(exact(x), x, g)
    torch.testing.assert_close(gx8, gx, rtol=0, atol=0)       # the activation rounding: straight through
    assert not torch.equal(q8(x), exact(x))                   # while the forward is quantized


def test_forward_only_ops_give_a_clear_error_on_backward():
    q, k, v = _leaves((1, 2, 1, 16), (1, 2, 5, 16), (1, 2, 5, 16), seed=7)
    out = torch.ops.tilec.decode_attention(q, k, v, torch.tensor([5], dtype=torch.int32), None)
    with pytest.raises(tc.TilecError, match="forward only"):
        out.sum().backward()