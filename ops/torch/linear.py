"""``Linear``: a drop-in ``nn.Linear`` whose forward runs tilec's GEMM through the custom op."""
from __future__ import annotations

import numpy as np
import torch

import ops
from ops.torch import custom_ops
from tilec.errors import InputError


class Linear(custom_ops.KeepsHostViews, torch.nn.Linear):
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
        flat, w, b = x.reshape(-1, self.in_features), self.weight, self.bias
        host = self._host(w, b) if custom_ops.dispatch_free(flat, w, b) else None
        if host is not None and flat.dtype == w.dtype:
            y = torch.from_numpy(ops.gemm(flat.detach().numpy(), host[0], bias=host[1]))
        else:
            y = custom_ops.run(custom_ops.gemm_impl, torch.ops.tilec.gemm, flat, w.t(), b, None, 1.0)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _host(self, w: torch.Tensor, b) -> tuple | None:
        """NumPy views of W^T and the bias for eager calls, made again only when a parameter's
        storage changes (they alias it, so in-place updates show through); None for dtypes
        NumPy cannot hold. Making them on every call was ~1/4 of a one-row call's Python work."""
        key = (w.data_ptr(), w.dtype, w.shape, w.stride(), None if b is None else b.data_ptr())
        cached = self.__dict__.get("_host_views")
        if cached is None or cached[0] != key:
            views = custom_ops.numpy_views(w.t(), b)
            cached = self.__dict__["_host_views"] = (key, views if isinstance(views[0], np.ndarray) else None)
        return cached[1]
