"""Backward formulas for the GEMM-family custom ops (``torch.library.register_autograd``).

gemm / gemv: gradients for every tensor input (a, b, bias; a, x, bias), the fused epilogue
differentiated on its pre-activation (recomputed by one more GEMM for GELU and SiLU; ReLU reads
the output). Quantized linears: the input's gradient through the dequantized weight; the
quantized weight stays frozen (QLoRA-style fine-tuning trains adapters beside it). The
forward-only ops (decoding, packed batches) get a backward that raises a clear error;
attention's own is in attention_autograd.py."""
from __future__ import annotations

import math

import torch

from ops.torch import custom_ops
from ops.torch.quant_linear import dequantized_int, dequantized_lut, int_linear, lut_linear
from tilec.errors import TilecError


def _needs(ctx, count: int) -> tuple:
    """needs_input_grad of the first ``count`` inputs (arguments left at their defaults are
    not in it)."""
    return (tuple(ctx.needs_input_grad) + (False,) * count)[:count]


def _epilogue_grad(grad, out, pre, activation):
    """d act(z) / dz times grad; ``pre()`` recomputes z when the output does not tell."""
    if activation is None:
        return grad
    if activation == "relu":
        return grad * (out > 0).to(grad.dtype)
    z = pre().float()
    if activation == "gelu":
        d = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0)))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    elif activation == "gelu_tanh":
        u = math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)
        th = torch.tanh(u)
        d = 0.5 * (1 + th) + 0.5 * z * (1 - th * th) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * z * z)
    elif activation == "silu":
        s = torch.sigmoid(z)
        d = s * (1.0 + z * (1.0 - s))
    else:
        raise TilecError(f"no backward for the {activation!r} epilogue")
    return (grad.float() * d).to(grad.dtype)


# -- gemm: c = act(alpha * a @ b + bias) ---------------------------------------------------------

def _epilogue_setup(ctx, inputs, output):
    """gemm's and gemv's context alike: (a, b or x, bias) saved, and the output where the
    activation's derivative reads it (ReLU)."""
    a, b, bias, activation, alpha = inputs
    ctx.activation, ctx.alpha = activation, alpha
    ctx.save_for_backward(a, b, bias, output if activation == "relu" else None)


def _gemm_backward(ctx, grad):
    a, b, bias, out = ctx.saved_tensors
    gz = _epilogue_grad(grad, out, lambda: torch.ops.tilec.gemm(a, b, bias, None, ctx.alpha), ctx.activation)
    need_a, need_b, need_bias = _needs(ctx, 3)
    ga = torch.ops.tilec.gemm(gz, b.t(), None, None, ctx.alpha) if need_a else None
    gb = torch.ops.tilec.gemm(a.t(), gz, None, None, ctx.alpha) if need_b else None
    gbias = gz.sum(0, dtype=torch.float32).to(bias.dtype) if need_bias and bias is not None else None
    return ga, gb, gbias, None, None


# -- gemv: y = act(alpha * a @ x + bias) --------------------------------------------------------

def _gemv_backward(ctx, grad):
    a, x, bias, out = ctx.saved_tensors
    gz = _epilogue_grad(grad, out, lambda: torch.ops.tilec.gemv(a, x, bias, None, ctx.alpha), ctx.activation)
    need_a, need_x, need_bias = _needs(ctx, 3)
    ga = (ctx.alpha * torch.outer(gz.float(), x.float())).to(a.dtype) if need_a else None
    gx = torch.ops.tilec.gemv(a.t(), gz, None, None, ctx.alpha) if need_x else None
    gbias = gz.to(bias.dtype) if need_bias and bias is not None else None
    return ga, gx, gbias, None, None


# -- quantized linears: y = x @ W (W frozen) ----------------------------------------------------

def _int_setup(ctx, inputs, output):
    # with act_quant (the quad form given) the input gradient is the exact layer's: the
    # activation rounding passes gradients straight through
    x, qweight, scales, zeros, bits, group_size = inputs[:6]
    ctx.bits, ctx.group_size, ctx.x_dtype = bits, group_size, x.dtype
    ctx.save_for_backward(qweight, scales, zeros)


def _int_backward(ctx, grad):
    w = dequantized_int(*ctx.saved_tensors, ctx.bits, ctx.group_size)            # (K, N)
    gx = torch.ops.tilec.gemm(grad.float().contiguous(), w.t(), None, None, 1.0).to(ctx.x_dtype)
    return gx, None, None, None, None, None, None, None, None


def _lut_setup(ctx, inputs, output):
    x, bits, alpha, beta, group_size, in_features = inputs
    ctx.group_size, ctx.in_features, ctx.x_dtype = group_size, in_features, x.dtype
    ctx.save_for_backward(bits, alpha, beta)


def _lut_backward(ctx, grad):
    w = dequantized_lut(*ctx.saved_tensors, ctx.group_size, ctx.in_features)
    gx = torch.ops.tilec.gemm(grad.float().contiguous(), w.t(), None, None, 1.0).to(ctx.x_dtype)
    return gx, None, None, None, None, None, None


custom_ops.gemm.register_autograd(_gemm_backward, setup_context=_epilogue_setup)
custom_ops.gemv.register_autograd(_gemv_backward, setup_context=_epilogue_setup)
int_linear.register_autograd(_int_backward, setup_context=_int_setup)
lut_linear.register_autograd(_lut_backward, setup_context=_lut_setup)


# -- forward-only ops: a clear error instead of torch's "no autograd formula" -------------------

def _no_backward(name):
    def backward(ctx, *grads):
        raise TilecError(f"torch.ops.tilec.{name} is forward only (no backward is registered for it). Run it "
                         f"under torch.no_grad(), or use torch.ops.tilec.attention, which has one")
    return backward


for _op in (custom_ops.decode_attention, custom_ops.kivi_decode_attention, custom_ops.attention_varlen):
    _op.register_autograd(_no_backward(_op._name))
