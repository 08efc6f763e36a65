"""Quantized linear layers: ``QuantLinear`` keeps an ``nn.Linear``'s weight as group-wise
int4/int8 codes or LUT-GEMM binary codes and runs tilec kernels through custom ops."""
from __future__ import annotations

from typing import Optional

import torch

import ops
from tilec.errors import TilecError

_LIB = "tilec"


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
                    bits: int = 3, bcq_method: str = "alternating", symmetric: bool = False,
                    calibration=None) -> "QuantLinear":
        """``calibration``: the layer's input activations (..., in_features), for GPTQ codes."""
        w = linear.weight.detach().float().t().contiguous().numpy()      # (in, out) = (K, N)
        if isinstance(calibration, torch.Tensor):
            calibration = _host(calibration.float())
        if method in ("int4", "int8"):
            qw = ops.quantize(w, bits=int(method[3:]), group_size=group_size, symmetric=symmetric,
                              calibration=calibration)
            tensors = {"qweight": torch.from_numpy(qw.qweight), "scales": torch.from_numpy(qw.scales),
                       "zeros": None if qw.zeros is None else torch.from_numpy(qw.zeros)}
        elif method == "lut":
            bw = ops.bcq_quantize(w, bits=bits, group_size=group_size, method=bcq_method, calibration=calibration)
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

