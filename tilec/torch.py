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


__all__ = ["gemm", "gemv"]
