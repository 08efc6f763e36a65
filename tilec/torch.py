"""Torch integration: every op as a ``torch.library`` custom op with a fake (meta)
implementation, so ``torch.compile`` traces through tilec kernels without graph breaks, and
``QuantLinear`` modules (see ``tilec.torch.quantize_linear``) for int4 and LUT-GEMM weights.

    import tilec.torch                  # registers torch.ops.tilec.*
    y = torch.ops.tilec.gemm(a, b, None, "relu", 1.0)

Importing this module needs torch; ``import tilec`` alone never does.
"""
from __future__ import annotations

from typing import Optional

import torch

import ops
from tilec.errors import TilecError

_LIB = "tilec"


@torch.library.custom_op(f"{_LIB}::gemm", mutates_args=())
def gemm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None,
         activation: Optional[str] = None, alpha: float = 1.0) -> torch.Tensor:
    return ops.gemm(a, b, bias=bias, activation=activation, alpha=alpha)


@gemm.register_fake
def _(a, b, bias=None, activation=None, alpha=1.0):
    return a.new_empty((a.shape[0], b.shape[1]))


@torch.library.custom_op(f"{_LIB}::gemv", mutates_args=())
def gemv(a: torch.Tensor, x: torch.Tensor, bias: Optional[torch.Tensor] = None,
         activation: Optional[str] = None, alpha: float = 1.0) -> torch.Tensor:
    return ops.gemv(a, x, bias=bias, activation=activation, alpha=alpha)


@gemv.register_fake
def _(a, x, bias=None, activation=None, alpha=1.0):
    return a.new_empty((a.shape[0],))


# -- attention (forward only: no backward is registered) ----------------------------------------

@torch.library.custom_op(f"{_LIB}::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: Optional[float] = None) -> torch.Tensor:
    return ops.attention(q, k, v, causal=causal, scale=scale)


@attention.register_fake
def _(q, k, v, causal=False, scale=None):
    return q.new_empty(q.shape)


@torch.library.custom_op(f"{_LIB}::attention_lse", mutates_args=())
def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                  scale: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention and its (B, H, Lq) fp32 natural-log log-sum-exp."""
    return ops.attention(q, k, v, causal=causal, scale=scale, return_lse=True)


@attention_lse.register_fake
def _(q, k, v, causal=False, scale=None):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::decode_attention", mutates_args=())
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                     scale: Optional[float] = None) -> torch.Tensor:
    return ops.decode_attention(q, k_cache, v_cache, lengths, scale=scale)


@decode_attention.register_fake
def _(q, k_cache, v_cache, lengths, scale=None):
    return q.new_empty(q.shape)


@torch.library.custom_op(f"{_LIB}::kivi_decode_attention", mutates_args=())
def kivi_decode_attention(q: torch.Tensor, k_codes: torch.Tensor, k_scale: torch.Tensor, k_zero: torch.Tensor,
                          v_codes: torch.Tensor, v_scale: torch.Tensor, v_zero: torch.Tensor, k_res: torch.Tensor,
                          v_res: torch.Tensor, q_len: torch.Tensor, r_len: torch.Tensor, bits: int, group: int,
                          scale: Optional[float] = None) -> torch.Tensor:
    """decode_attention_quantized over a KIVI cache passed field by field (custom ops take
    tensors, not dataclasses): see ``decode_attention_quantized`` below."""
    from ops.kv_quant import QuantizedKV
    residual = k_res.shape[2] - group          # quantize_kv keeps residual + group rows
    cache = QuantizedKV(k_codes, k_scale, k_zero, v_codes, v_scale, v_zero, k_res, v_res, q_len, r_len,
                        bits, group, residual)
    return ops.decode_attention_quantized(q, cache, scale=scale)


@kivi_decode_attention.register_fake
def _(q, *cache_fields_and_options):
    return q.new_empty(q.shape)


def decode_attention_quantized(q: torch.Tensor, cache, scale: Optional[float] = None) -> torch.Tensor:
    """``ops.decode_attention_quantized`` through the custom op, for a cache from
    ``ops.quantize_kv`` (its NumPy arrays are wrapped without a copy; pass one whose fields are
    already tensors, e.g. buffers of a module, to trace it under torch.compile)."""
    fields = [torch.as_tensor(getattr(cache, name)) for name in cache.ARRAYS]
    return torch.ops.tilec.kivi_decode_attention(q, *fields, cache.bits, cache.group, scale)


# -- quantized linear layers --------------------------------------------------------------------
# A torch Linear keeps W as (out, in); the quantized ops take W as (K, N) = (in, out), so
# y = x @ W^T is x @ Wq with Wq quantized from W^T. The packed arrays live in module buffers
# (zero-copy views of the NumPy arrays) and reach the kernels through custom ops.

def _host(t: torch.Tensor):
    return t.detach().contiguous().numpy()


@torch.library.custom_op(f"{_LIB}::int_linear", mutates_args=())
def int_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
               bits: int, group_size: int) -> torch.Tensor:
    from ops.quant_format import QuantizedWeight, QuantLayout
    k, n = qweight.shape[0], qweight.shape[1] * (8 // bits)
    qw = QuantizedWeight(_host(qweight), _host(scales), None if zeros is None else _host(zeros), (k, n),
                         QuantLayout(bits=bits, group_size=group_size, symmetric=zeros is None))
    return torch.from_numpy(ops.quant_gemm(_host(x.float()), qw))


@int_linear.register_fake
def _(x, qweight, scales, zeros, bits, group_size):
    return x.new_empty((x.shape[0], qweight.shape[1] * (8 // bits)), dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::lut_linear", mutates_args=())
def lut_linear(x: torch.Tensor, bits: torch.Tensor, alpha: torch.Tensor, beta: Optional[torch.Tensor],
               group_size: int, in_features: int) -> torch.Tensor:
    from ops.bcq import BCQLayout, BCQWeight
    q, _, n = bits.shape
    bw = BCQWeight(_host(bits), _host(alpha), None if beta is None else _host(beta), (in_features, n),
                   BCQLayout(bits=q, group_size=group_size, method="stored", has_offset=beta is not None))
    return torch.from_numpy(ops.lut_gemm(_host(x.float()), bw))


@lut_linear.register_fake
def _(x, bits, alpha, beta, group_size, in_features):
    return x.new_empty((x.shape[0], bits.shape[2]), dtype=torch.float32)


class QuantLinear(torch.nn.Module):
    """``nn.Linear`` with its weight stored as group-wise int4/int8 codes (``method="int4"``,
    ``"int8"``) or as binary codes for LUT-GEMM (``method="lut"``, ``bits`` sign planes).
    Build one with :meth:`from_linear`; the forward pass runs tilec kernels through custom ops,
    so it works under ``torch.compile``."""

    def __init__(self, in_features: int, out_features: int, method: str, group_size: int,
                 tensors: dict[str, Optional[torch.Tensor]], bias: Optional[torch.Tensor]):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.method, self.group_size = method, group_size
        for name, t in tensors.items():
            self.register_buffer(name, t)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, method: str = "int4", group_size: int = 128,
                    bits: int = 3, bcq_method: str = "alternating", symmetric: bool = True) -> "QuantLinear":
        w = linear.weight.detach().float().t().contiguous().numpy()      # (in, out) = (K, N)
        if method in ("int4", "int8"):
            qw = ops.quantize(w, bits=int(method[3:]), group_size=group_size, symmetric=symmetric)
            tensors = {"qweight": torch.from_numpy(qw.qweight), "scales": torch.from_numpy(qw.scales),
                       "zeros": None if qw.zeros is None else torch.from_numpy(qw.zeros)}
        elif method == "lut":
            bw = ops.bcq_quantize(w, bits=bits, group_size=group_size, method=bcq_method)
            tensors = {"bits": torch.from_numpy(bw.bits), "alpha": torch.from_numpy(bw.alpha),
                       "beta": None if bw.beta is None else torch.from_numpy(bw.beta)}
        else:
            raise TilecError(f"QuantLinear method must be 'int4', 'int8' or 'lut', got {method!r}")
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(linear.in_features, linear.out_features, method, group_size, tensors, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.method == "lut":
            y = torch.ops.tilec.lut_linear(flat, self.bits, self.alpha, self.beta, self.group_size,
                                           self.in_features)
        else:
            y = torch.ops.tilec.int_linear(flat, self.qweight, self.scales, self.zeros, int(self.method[3:]),
                                           self.group_size)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, method={self.method}, " \
               f"group_size={self.group_size}"


def quantize_linear(linear: torch.nn.Linear, method: str = "int4", **kwargs) -> QuantLinear:
    """One call from an ``nn.Linear`` to a tilec quantized layer."""
    return QuantLinear.from_linear(linear, method, **kwargs)


__all__ = ["gemm", "gemv", "attention", "attention_lse", "decode_attention", "kivi_decode_attention",
           "decode_attention_quantized", "int_linear", "lut_linear", "QuantLinear", "quantize_linear"]
