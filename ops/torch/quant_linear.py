"""Quantized linear layers: ``QuantLinear`` keeps an ``nn.Linear``'s weight as group-wise
int4/int8 codes or LUT-GEMM binary codes and runs tilec kernels through custom ops."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

import ops
from ops.torch import custom_ops
from tilec.errors import InputError, TilecError

_LIB = "tilec"
METHODS = ("int4", "int8", "lut")
QUAD_BUFFERS = ("quads", "quad_scales", "quad_zeros")   # ops.quant_q8.quad_form's arrays, for act_quant


# -- quantized linear layers --------------------------------------------------------------------
# A torch Linear keeps W as (out, in); the quantized ops take W as (K, N) = (in, out), so
# y = x @ W^T is x @ Wq with Wq quantized from W^T. The packed arrays live in module buffers
# (zero-copy views of the NumPy arrays) and reach the kernels through custom ops.

def _host(t: torch.Tensor, dtype: Optional[torch.dtype] = None):
    if t.device.type != "cpu":
        raise TilecError(f"QuantLinear runs on the CPU for now; its tensors are on {t.device}")
    return t.detach().to(dtype or t.dtype).contiguous().numpy()


def _int_weight(qweight, scales, zeros, bits: int, group_size: int):
    from ops.quant_format import QuantizedWeight, QuantLayout
    k, n = qweight.shape[0], qweight.shape[1] * (8 // bits)
    return QuantizedWeight(_host(qweight), _host(scales, torch.float32),
                           None if zeros is None else _host(zeros), (k, n),
                           QuantLayout(bits=bits, group_size=group_size, symmetric=zeros is None))


def _lut_weight(bits, alpha, beta, group_size: int, in_features: int):
    from ops.bcq import BCQLayout, BCQWeight
    q, _, n = bits.shape
    return BCQWeight(_host(bits), _host(alpha, torch.float32), None if beta is None else _host(beta, torch.float32),
                     (in_features, n), BCQLayout(bits=q, group_size=group_size, method="stored",
                                                 has_offset=beta is not None))


def int_linear_impl(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                    bits: int, group_size: int, quads: Optional[torch.Tensor] = None,
                    quad_scales: Optional[torch.Tensor] = None,
                    quad_zeros: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``quads``, ``quad_scales``, ``quad_zeros``: the weight as the integer-dot kernel reads it
    (``ops.quant_q8.quad_form``), given for ``act_quant="int8"``: x goes to int8 and the products
    are integer dots."""
    qw = _int_weight(qweight, scales, zeros, bits, group_size)
    if quads is None:
        return torch.from_numpy(ops.quant_gemm(_host(x, torch.float32), qw))
    form = (_host(quads), _host(quad_scales, torch.float32), None if quad_zeros is None else _host(quad_zeros))
    object.__setattr__(qw, "_quad_form", form)               # made once per layer, not per call
    return torch.from_numpy(ops.quant_gemm(_host(x, torch.float32), qw, act_quant="int8"))


int_linear = torch.library.custom_op(f"{_LIB}::int_linear", int_linear_impl, mutates_args=())


@int_linear.register_fake
def _(x, qweight, scales, zeros, bits, group_size, quads=None, quad_scales=None, quad_zeros=None):
    return x.new_empty((x.shape[0], qweight.shape[1] * (8 // bits)), dtype=torch.float32)


def lut_linear_impl(x: torch.Tensor, bits: torch.Tensor, alpha: torch.Tensor, beta: Optional[torch.Tensor],
                    group_size: int, in_features: int) -> torch.Tensor:
    bw = _lut_weight(bits, alpha, beta, group_size, in_features)
    return torch.from_numpy(ops.lut_gemm(_host(x, torch.float32), bw))


lut_linear = torch.library.custom_op(f"{_LIB}::lut_linear", lut_linear_impl, mutates_args=())


@lut_linear.register_fake
def _(x, bits, alpha, beta, group_size, in_features):
    return x.new_empty((x.shape[0], bits.shape[2]), dtype=torch.float32)


def dequantized_int(qweight, scales, zeros, bits: int, group_size: int) -> torch.Tensor:
    """The float32 (K, N) = (in, out) matrix int codes stand for."""
    return torch.from_numpy(_int_weight(qweight, scales, zeros, bits, group_size).dequantize())


def dequantized_lut(bits, alpha, beta, group_size: int, in_features: int) -> torch.Tensor:
    return torch.from_numpy(_lut_weight(bits, alpha, beta, group_size, in_features).dequantize())


def _shapes(method: str, k: int, n: int, group_size: int, planes: int, zeros: bool) -> dict:
    """The buffers a layer of this form holds, as (shape, dtype), or None when absent."""
    groups = k // group_size
    if method == "lut":
        return {"bits": ((planes, groups * -(-group_size // 8), n), torch.uint8),
                "alpha": ((planes, groups, n), torch.float32),
                "beta": ((groups, n), torch.float32) if zeros else None}
    width = int(method[3:])
    return {"qweight": ((k, n * width // 8), torch.uint8), "scales": ((groups, n), torch.float32),
            "zeros": ((groups, n), torch.uint8) if zeros else None}


def check_eligible(in_features: int, out_features: int, method: str, group_size: int,
                   act_quant: Optional[str] = None) -> Optional[str]:
    """Why a layer of this size cannot take this form, or None when it can."""
    if method not in METHODS:
        return f"method must be one of {METHODS}, got {method!r}"
    if act_quant not in ops.quant.ACT_QUANT:
        return f"act_quant must be one of {ops.quant.ACT_QUANT}, got {act_quant!r}"
    if act_quant is not None and method == "lut":
        return "act_quant applies to int4 and int8 layers, not lut"
    if act_quant is not None and isinstance(group_size, int):
        from ops.quant_q8 import group_step
        step = group_step(int(method[3:]))
        if group_size % step:
            return f"act_quant reads codes four bytes per column: group_size={group_size} must be a multiple of " \
                   f"{step} for {method}"
    if not isinstance(group_size, int) or group_size < 1:
        return f"group_size must be a positive int, got {group_size!r}"
    if in_features % group_size:
        return f"in_features={in_features} is not a multiple of group_size={group_size}"
    if method == "int4" and out_features % 2:
        return f"int4 packs two columns per byte: out_features={out_features} must be even"
    return None


class QuantLinear(custom_ops.KeepsHostViews, torch.nn.Module):
    """``nn.Linear`` with its weight stored as group-wise int4/int8 codes (``method="int4"``,
    ``"int8"``) or as binary codes for LUT-GEMM (``method="lut"``, ``planes`` sign planes).

    Build one with :meth:`from_linear` (or ``quantize_linear`` / ``quantize_model``). The
    constructor alone gives a layer of the right form with zero buffers, ready for
    ``load_state_dict`` of a saved one (plain tensors, e.g. from safetensors). ``zeros``: the
    layer keeps zero points (asymmetric int codes) or offsets (LUT ``beta``). ``act_quant="int8"``
    (int layers): inputs are quantized to int8 per row and group and the products are integer
    dots, the decode form of ``ops.quant_gemm`` (faster at few rows; its error bound is in
    ``ops.quant_q8``); the default keeps inputs exact in fp32. The forward pass
    runs tilec kernels through custom ops, so it works under ``torch.compile``; the input gets
    a gradient, the quantized weight stays frozen (bias is a frozen buffer too)."""

    def __init__(self, in_features: int, out_features: int, method: str = "int4", group_size: int = 128,
                 bias: bool = True, planes: int = 3, zeros: bool = False, act_quant: Optional[str] = None):
        super().__init__()
        reason = check_eligible(in_features, out_features, method, group_size, act_quant)
        if reason:
            raise InputError(f"QuantLinear: {reason}")
        self.in_features, self.out_features = in_features, out_features
        self.method, self.group_size, self.act_quant = method, group_size, act_quant
        for name, spec in _shapes(method, in_features, out_features, group_size, planes, zeros).items():
            self.register_buffer(name, None if spec is None else torch.zeros(spec[0], dtype=spec[1]))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._quads_from: tuple = ()          # the (data_ptr, version) of the codes the quad form was made from
        if act_quant:                         # derived, so not saved; kept as buffers so torch.compile reads them
            for name in QUAD_BUFFERS:
                self.register_buffer(name, None, persistent=False)
            self._make_quads()
            self.register_load_state_dict_post_hook(_quads_after_load)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, method: str = "int4", group_size: int = 128,
                    bits: int = 3, bcq_method: str = "alternating", act_quant: Optional[str] = None,
                    **quantize_kwargs) -> "QuantLinear":
        """``bits`` and ``bcq_method`` are for ``"lut"`` (sign planes, ``ops.bcq_quantize``'s
        method); ``act_quant`` as for the constructor; ``quantize_kwargs`` go to ``ops.quantize``
        (int codes: ``symmetric``, ...) or ``ops.bcq_quantize``; tensors among them (e.g.
        calibration activations) as NumPy."""
        reason = check_eligible(linear.in_features, linear.out_features, method, group_size, act_quant)
        if reason:
            raise InputError(f"quantize_linear: {reason}")
        w = linear.weight.detach().to("cpu", torch.float32).t().contiguous().numpy()   # (in, out) = (K, N)
        kwargs = {k: _host(v, torch.float32) if isinstance(v, torch.Tensor) else v
                  for k, v in quantize_kwargs.items()}
        if method == "lut":
            bw = ops.bcq_quantize(w, bits=bits, group_size=group_size, method=bcq_method, **kwargs)
            tensors = {"bits": bw.bits, "alpha": bw.alpha, "beta": bw.beta}
        else:
            qw = ops.quantize(w, bits=int(method[3:]), group_size=group_size, **kwargs)
            tensors = {"qweight": qw.qweight, "scales": qw.scales, "zeros": qw.zeros}
        layer = cls(linear.in_features, linear.out_features, method, group_size, linear.bias is not None,
                    planes=bits, zeros=tensors.get("beta" if method == "lut" else "zeros") is not None,
                    act_quant=act_quant)
        for name, array in tensors.items():
            if array is not None:
                setattr(layer, name, torch.from_numpy(array).contiguous())   # safetensors saves contiguous only
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to("cpu", torch.float32).clone()
        if act_quant:
            layer._make_quads()
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, (out_features, in_features) float32 like ``nn.Linear.weight``
        (a fresh tensor computed on each access; changing it does not change the layer)."""
        if self.method == "lut":
            w = dequantized_lut(self.bits, self.alpha, self.beta, self.group_size, self.in_features)
        else:
            w = dequantized_int(self.qweight, self.scales, self.zeros, int(self.method[3:]), self.group_size)
        return w.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise InputError(f"QuantLinear: input has {x.shape[-1]} features, the layer takes {self.in_features}")
        flat = x.reshape(-1, self.in_features)
        if flat.dtype == torch.float32 and custom_ops.dispatch_free(flat, *self._weight_tensors()):
            return torch.from_numpy(self._eager(flat.detach().numpy())).reshape(*x.shape[:-1], self.out_features)
        if self.method == "lut":
            args = (flat, self.bits, self.alpha, self.beta, self.group_size, self.in_features)
            impl, op = lut_linear_impl, torch.ops.tilec.lut_linear
        else:
            args = (flat, self.qweight, self.scales, self.zeros, int(self.method[3:]), self.group_size,
                    *(self._quad_form() if self.act_quant else ()))
            impl, op = int_linear_impl, torch.ops.tilec.int_linear
        y = custom_ops.run(impl, op, *args)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _weight_tensors(self) -> tuple:
        return (self.bits, self.alpha, self.beta) if self.method == "lut" else (self.qweight, self.scales, self.zeros)

    def _eager(self, x: np.ndarray) -> np.ndarray:
        """x @ W + bias on NumPy views, for eager inference on CPU float32 inputs: the same
        kernels as the custom ops, without rebuilding the weight's description on every call."""
        w, bias = self._host_weight()
        if self.method == "lut":
            y = ops.lut_gemm(x, w)
        else:
            y = ops.quant_gemm(x, w, act_quant=self.act_quant)
        if bias is not None:
            np.add(y, bias, out=y)
        return y

    def _host_weight(self) -> tuple:
        """(the weight as ``ops`` take it, the bias as NumPy), views of the buffers made again
        when a buffer was replaced or changed in place (act_quant's quad form is a copy)."""
        key = tuple((t.data_ptr(), t._version) for t in (*self._weight_tensors(), self.bias) if t is not None)
        cached = self.__dict__.get("_host_views")
        if cached is None or cached[0] != key:
            if self.method == "lut":
                w = _lut_weight(self.bits, self.alpha, self.beta, self.group_size, self.in_features)
            else:
                w = _int_weight(self.qweight, self.scales, self.zeros, int(self.method[3:]), self.group_size)
                if self.act_quant:
                    quads, scales, zeros = self._quad_form()
                    object.__setattr__(w, "_quad_form", (_host(quads), _host(scales, torch.float32),
                                                         None if zeros is None else _host(zeros)))
            bias = None if self.bias is None else _host(self.bias, torch.float32)
            cached = self.__dict__["_host_views"] = (key, (w, bias))
        return cached[1]

    def _quad_form(self) -> tuple:
        """The weight as the integer-dot kernel reads it, for ``act_quant``. Made at construction,
        conversion and ``load_state_dict``; in eager mode made again when codes, scales or zeros
        were replaced or changed in place since. Under ``torch.compile`` the stored form is used
        as it is (dynamo cannot trace the check)."""
        if not torch.compiler.is_compiling() and self._quads_from != self._code_versions():
            self._make_quads()
        return tuple(getattr(self, name) for name in QUAD_BUFFERS)

    def _code_versions(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in (self.qweight, self.scales, self.zeros) if t is not None)

    def _make_quads(self) -> None:
        from ops.quant_q8 import quad_form
        qw = _int_weight(self.qweight, self.scales, self.zeros, int(self.method[3:]), self.group_size)
        for name, array in zip(QUAD_BUFFERS, quad_form(qw)):
            setattr(self, name, None if array is None else torch.from_numpy(array))
        self._quads_from = self._code_versions()

    def extra_repr(self) -> str:
        form = f"planes={self.bits.shape[0]}" if self.method == "lut" else \
            f"{'asymmetric' if self.zeros is not None else 'symmetric'}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"method={self.method}, group_size={self.group_size}, {form}" + \
               (f", act_quant={self.act_quant}" if self.act_quant else "")


def _quads_after_load(module: QuantLinear, _keys) -> None:
    """load_state_dict's post-hook for act_quant layers (a module-level function, so that the
    layer pickles)."""
    module._make_quads()


def quantize_linear(linear: torch.nn.Linear, method: str = "int4", **kwargs) -> QuantLinear:
    """One call from an ``nn.Linear`` to a tilec quantized layer."""
    return QuantLinear.from_linear(linear, method, **kwargs)
