"""Torch modules: the float Linear, QuantLinear's weight / state_dict / device moves, whole-model
conversion of a transformers BERT, and ops.* inside torch.compile (torch optional)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is optional: pip install torch (CPU build) to run these")

import ops  # noqa: E402
import ops.torch  # noqa: E402,F401
import tilec as tc  # noqa: E402
from ops.torch import Linear, QuantLinear, linear_model, quantize_model  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_linear_matches_nn_linear_with_batch_dims(dtype, tol):
    torch.manual_seed(0)
    ref = torch.nn.Linear(40, 24).to(dtype)
    layer = Linear.from_linear(ref)
    x = torch.randn(3, 5, 40).to(dtype)
    y = layer(x)
    want = x.double() @ ref.weight.double().t() + ref.bias.double()
    assert y.shape == (3, 5, 24) and y.dtype == dtype
    torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol * 4)
    assert layer.weight is ref.weight                        # shared, not copied
    assert list(layer.state_dict()) == list(ref.state_dict())


def test_linear_without_bias_and_errors():
    layer = Linear(16, 8, bias=False)
    x = torch.randn(16)                                     # no batch dims at all
    torch.testing.assert_close(layer(x), layer.weight @ x, rtol=1e-5, atol=1e-5)
    with pytest.raises(tc.InputError, match="17 features"):
        layer(torch.randn(2, 17))


class _SeenOps(TorchDispatchMode):
    """The names of the ops that pass torch's dispatcher while it is active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layer", ["linear", "int4", "int8 act_quant", "lut"])
def test_layers_skip_the_dispatcher_only_where_it_adds_nothing(layer):
    """Inference on CPU tensors runs the implementation directly (no dispatcher cost); with
    autograd recording the custom op runs, and both give the layer's product."""
    torch.manual_seed(1)
    ref = torch.nn.Linear(64, 24)
    if layer == "linear":
        mod, op = Linear.from_linear(ref), "tilec.gemm"
    elif layer == "lut":
        mod, op = ops.torch.quantize_linear(ref, "lut", group_size=32), "tilec.lut_linear"
    else:
        act_quant = "int8" if layer.endswith("act_quant") else None
        mod, op = ops.torch.quantize_linear(ref, layer[:4], group_size=32, act_quant=act_quant), "tilec.int_linear"
    x = torch.randn(5, 64)
    with torch.no_grad(), _SeenOps() as direct:
        y0 = mod(x)
    assert not any(name.startswith(op) for name in direct.names)
    with _SeenOps() as recorded:
        y1 = mod(x.requires_grad_())                               # recorded: through the custom op
    assert any(name.startswith(op) for name in recorded.names) and y1.grad_fn is not None
    torch.testing.assert_close(y1.detach(), y0)
    if layer != "int8 act_quant":                               # inputs rounded: its bound has a test of its own
        want = x.detach().double() @ mod.weight.detach().double().t() + ref.bias.detach().double()
        torch.testing.assert_close(y0.double(), want, rtol=1e-4, atol=1e-4)


def test_linear_follows_its_parameters_storage():
    """The eager path keeps NumPy views of W^T and the bias: in-place updates show through,
    and a replaced parameter is picked up."""
    torch.manual_seed(2)
    layer = Linear.from_linear(torch.nn.Linear(32, 16))
    x = torch.randn(3, 32)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(2)
        torch.testing.assert_close(layer(x), x @ layer.weight.t() + layer.bias)
        layer.weight = torch.nn.Parameter(torch.randn(16, 32))
        layer.bias = torch.nn.Parameter(torch.randn(16))
        torch.testing.assert_close(layer(x), x @ layer.weight.t() + layer.bias)


@pytest.mark.parametrize("layer", ["linear", "int4 act_quant"])
def test_copies_and_pickles_leave_the_eager_views_out(layer, tmp_path):
    """The NumPy views an eager call keeps are not copied with the layer (a deepcopy would
    hold each weight twice) nor pickled; the copy makes its own on its first call."""
    torch.manual_seed(4)
    ref = torch.nn.Linear(64, 32)
    mod = Linear.from_linear(ref) if layer == "linear" else \
        ops.torch.quantize_linear(ref, "int4", group_size=32, act_quant="int8")
    x = torch.randn(3, 64)
    with torch.no_grad():
        want = mod(x)
        assert "_host_views" in mod.__dict__
        twin = copy.deepcopy(mod)
        assert "_host_views" not in twin.__dict__
        torch.save(mod, tmp_path / "layer.pt")
        loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
        assert "_host_views" not in loaded.__dict__
        torch.testing.assert_close(twin(x), want)
        torch.testing.assert_close(loaded(x), want)
        twin.bias.add_(1.0)                                   # the copy's views are its own
        torch.testing.assert_close(twin(x), want + 1.0)
        torch.testing.assert_close(mod(x), want)


def test_linear_model_swaps_every_linear_but_skipped():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)))
    x = torch.randn(6, 8)
    want = model(x)
    names = linear_model(model, skip=["2.1"])
    assert names == ["0", "2.0"]
    assert type(model[0]) is Linear and type(model[2][1]) is torch.nn.Linear
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def _dequantized(layer: QuantLinear) -> torch.Tensor:
    """The layer's weight rebuilt by the NumPy formats, independent of the property."""
    from ops.bcq import BCQLayout, BCQWeight
    from ops.quant_format import QuantizedWeight, QuantLayout
    k, n = layer.in_features, layer.out_features
    if layer.method == "lut":
        beta = None if layer.beta is None else layer.beta.numpy()
        w = BCQWeight(layer.bits.numpy(), layer.alpha.numpy(), beta, (k, n),
                      BCQLayout(layer.bits.shape[0], layer.group_size, "stored", beta is not None)).dequantize()
    else:
        zeros = None if layer.zeros is None else layer.zeros.numpy()
        w = QuantizedWeight(layer.qweight.numpy(), layer.scales.numpy(), zeros, (k, n),
                            QuantLayout(int(layer.method[3:]), layer.group_size, zeros is None)).dequantize()
    return torch.from_numpy(w).t()


FORMS = [("int4", {}), ("int8", {"symmetric": False}), ("lut", {"bits": 2}), ("lut", {"bcq_method": "uniform"})]


@pytest.mark.parametrize("method,kwargs", FORMS)
def test_quantlinear_weight_and_state_dict_round_trip(method, kwargs):
    from safetensors.torch import load, save
    torch.manual_seed(2)
    linear = torch.nn.Linear(64, 48)
    layer = ops.torch.quantize_linear(linear, method, group_size=32, **kwargs)
    w = layer.weight
    assert w.shape == linear.weight.shape and w.dtype == torch.float32
    torch.testing.assert_close(w, _dequantized(layer), rtol=0, atol=0)
    assert (w - linear.weight).norm() / linear.weight.norm() < 0.3
    assert f"method={method}" in repr(layer) and "group_size=32" in repr(layer)

    blob = save(layer.state_dict())                          # plain tensors: no pickle anywhere
    offsets = layer.beta if method == "lut" else layer.zeros
    fresh = QuantLinear(64, 48, method, 32, planes=kwargs.get("bits", 3), zeros=offsets is not None)
    fresh.load_state_dict(load(blob))
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)
    want = x.double() @ w.double().t() + linear.bias.double()
    torch.testing.assert_close(layer(x).double(), want, rtol=1e-4, atol=1e-4)


def test_quantlinear_moves_and_casts_keep_working():
    torch.manual_seed(3)
    layer = ops.torch.quantize_linear(torch.nn.Linear(64, 32), "int4", group_size=32)
    x = torch.randn(4, 64)
    fp32 = layer(x)
    half = copy.deepcopy(layer).to(torch.bfloat16)         # scales and bias become bf16
    y = half(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), fp32, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(layer.to("cpu")(x), fp32)


def test_quantlinear_rejects_bad_forms():
    with pytest.raises(tc.InputError, match="method"):
        ops.torch.quantize_linear(torch.nn.Linear(64, 32), "int3")
    with pytest.raises(tc.InputError, match="multiple of group_size"):
        ops.torch.quantize_linear(torch.nn.Linear(48, 32), "int4", group_size=32)
    with pytest.raises(tc.InputError, match="method"):
        quantize_model(torch.nn.Sequential(torch.nn.Linear(64, 32)), "fp8")


@pytest.mark.parametrize("method", ["int4", "int8"])
def test_quantlinear_act_quant_is_held_to_its_bound_and_follows_reloaded_codes(method):
    from ops.quant_q8 import act_quant_bound
    torch.manual_seed(7)
    lin = torch.nn.Linear(256, 48)
    layer = QuantLinear.from_linear(lin, method, group_size=64, act_quant="int8")
    exact = QuantLinear.from_linear(lin, method, group_size=64)
    assert "act_quant=int8" in repr(layer) and "act_quant" not in repr(exact)
    x = torch.randn(2, 3, 256)
    got, want = layer(x), exact(x)
    assert got.shape == (2, 3, 48)
    bits = int(method[3:])
    qw = ops.quantize(lin.weight.detach().t().contiguous().numpy(), bits, 64)   # the layer's own codes
    np.testing.assert_array_equal(qw.dequantize(), exact.weight.detach().t().numpy())
    bound = act_quant_bound(x.reshape(-1, 256).numpy(), qw)
    diff = (got - want).reshape(-1, 48).detach().numpy()
    assert np.all(np.abs(diff) <= bound * (1 + 1e-4) + 1e-5) and np.abs(diff).max() > 0   # quantized, bounded
    # codes loaded in place (a saved layer, another weight): the k-quad copy is made again
    other = QuantLinear.from_linear(torch.nn.Linear(256, 48), method, group_size=64)
    layer.load_state_dict(other.state_dict())
    assert torch.allclose(layer(x), other(x), atol=0.5) and not torch.allclose(layer(x), got, atol=1e-3)


def test_quantlinear_act_quant_rejects_forms_it_cannot_read():
    with pytest.raises(tc.InputError, match="not lut"):
        ops.torch.quantize_linear(torch.nn.Linear(64, 32), "lut", act_quant="int8")
    with pytest.raises(tc.InputError, match="multiple of 8"):
        ops.torch.quantize_linear(torch.nn.Linear(64, 32), "int4", group_size=4, act_quant="int8")
    with pytest.raises(tc.InputError, match="act_quant must be one of"):
        quantize_model(torch.nn.Sequential(torch.nn.Linear(64, 32)), "int4", group_size=32, act_quant="int4")
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    assert quantize_model(model, "int8", group_size=32, act_quant="int8") == ["0", "2"]
    assert all(model[i].act_quant == "int8" for i in (0, 2))


def test_quantize_model_takes_tilec_float_layers_too():
    """A model first swapped to tilec fp32 (linear_model) quantizes like the torch model."""
    torch.manual_seed(5)
    plain = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
    swapped = copy.deepcopy(plain)
    assert linear_model(swapped) == ["0", "2"]
    assert quantize_model(swapped, "int4", group_size=32) == ["0", "2"]
    assert quantize_model(plain, "int4", group_size=32) == ["0", "2"]
    assert all(isinstance(m[i], QuantLinear) for m in (plain, swapped) for i in (0, 2))
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), plain(x), rtol=0, atol=0)


def _bert(layers=2):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=128, vocab_size=100, max_position_embeddings=32)
    torch.manual_seed(4)
    return transformers.BertModel(cfg).eval()


@pytest.mark.parametrize("method", ["int4", "lut"])
def test_quantize_model_bert_matches_float_model_with_dequantized_weights(method):
    model = _bert()
    quant = copy.deepcopy(model)
    names = quantize_model(quant, method, group_size=32, skip=["pooler*"])
    assert len(names) == 12 and not any(n.startswith("pooler") for n in names)
    assert all(isinstance(quant.get_submodule(n), QuantLinear) for n in names)
    dequant = copy.deepcopy(model)
    for n in names:
        dequant.get_submodule(n).weight.data.copy_(quant.get_submodule(n).weight)
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got, want = quant(ids).last_hidden_state, dequant(ids).last_hidden_state
        floating = model(ids).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), floating.flatten(1)).min()
    assert cos > 0.9                                         # quantized, but still the same model


def test_linear_model_bert_matches_torch():
    model = _bert(1)
    tilec_model = copy.deepcopy(model)
    assert len(linear_model(tilec_model)) == 7
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(tilec_model(ids).last_hidden_state, model(ids).last_hidden_state,
                                   rtol=1e-4, atol=1e-4)


class _GemmBlock(torch.nn.Module):
    """Calls ops.* directly, as a user's module would."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(16, 12))
        self.b = torch.nn.Parameter(torch.randn(12))

    def forward(self, x, q):
        h = ops.gemm(x, self.w, bias=self.b, activation="relu")
        return ops.gemv(h, self.b.detach(), alpha=0.5), ops.attention(q, q, q, causal=True)


def test_ops_calls_inside_torch_compile_fullgraph_route_to_custom_ops():
    block = _GemmBlock()
    x, q = torch.randn(5, 16), torch.randn(1, 2, 6, 16)
    with torch.no_grad():
        eager = block(x, q)
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(x, q)
    h = torch.relu(x.double() @ block.w.double() + block.b.double())
    torch.testing.assert_close(compiled[0].double(), 0.5 * h @ block.b.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])
    # the custom op has no config argument: asking for one where the op is routed there is an error
    with pytest.raises(tc.InputError, match="config"):
        ops.gemm(x.requires_grad_(), block.w, config={"BM": 16})
