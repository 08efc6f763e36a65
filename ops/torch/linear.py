"""``Linear``: a drop-in ``nn.Linear`` whose forward runs tilec's GEMM through the custom op."""
from __future__ import annotations

import torch

from ops.torch import custom_ops
from tilec.errors import InputError


class Linear(torch.nn.Linear):
    """``nn.Linear`` (same parameters, same ``state_dict``) computing ``x @ W^T + b`` with
    ``torch.ops.tilec.gemm``: any leading batch dimensions, fp32 / fp16 / bf16 (input, weight
    and bias of one dtype; fp32 accumulation), gradients for input, weight and bias."""

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "Linear":
        """A tilec Linear sharing ``linear``'s parameters (no copy)."""
        layer = cls.__new__(cls)
        torch.nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise InputError(f"Linear: input has {x.shape[-1]} features, the layer takes {self.in_features}")
        args = (x.reshape(-1, self.in_features), self.weight.t(), self.bias, None, 1.0)
        y = custom_ops.run(custom_ops.gemm_impl, torch.ops.tilec.gemm, *args)
        return y.reshape(*x.shape[:-1], self.out_features)
