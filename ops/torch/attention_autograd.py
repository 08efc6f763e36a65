"""Autograd for ``torch.ops.tilec.attention``, ``attention_lse`` and ``attention_varlen``: the
FlashAttention-2 backward (``ops.attention_backward`` / ``ops.attention_varlen_backward``) as
the custom ops ``tilec::attention_backward`` / ``tilec::attention_varlen_backward`` with fake
implementations, so ``torch.compile(fullgraph=True)`` traces forward and backward.

``attention_lse`` saves q, k, v, the mask, its output and its log-sum-exp, and takes the
gradient of both outputs. ``attention`` returns no LSE, so its autograd kernel runs the forward
as ``attention_lse`` and saves that: the backward recomputes nothing. ``attention_varlen`` does
the same through ``tilec::attention_varlen_lse`` (defined here). Masks get no gradient: a mask
that requires one is refused rather than silently given none.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

import ops

_LIB = "tilec"


@torch.library.custom_op(f"{_LIB}::attention_backward", mutates_args=())
def attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                       do: torch.Tensor, dlse: Optional[torch.Tensor] = None, causal: bool = False,
                       scale: Optional[float] = None, mask: Optional[torch.Tensor] = None,
                       window: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of attention; ``dlse`` is the gradient of the log-sum-exp output, if any."""
    return ops.attention_backward(q, k, v, o, lse, do.contiguous(), causal=causal, scale=scale, mask=mask,
                                  window=window, dlse=None if dlse is None else dlse.contiguous())


@attention_backward.register_fake
def _(q, k, v, o, lse, do, dlse=None, causal=False, scale=None, mask=None, window=None):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _no_mask_gradient(mask) -> None:
    if mask is not None and mask.requires_grad:
        raise NotImplementedError("tilec attention gives no gradient to the mask; pass mask.detach() "
                                  "(or use torch's scaled_dot_product_attention for a learned bias)")


def _setup_lse(ctx, inputs, output):
    q, k, v, causal, scale, mask, window = (*inputs, None, None)[:7]
    _no_mask_gradient(mask)
    ctx.causal, ctx.scale, ctx.window = causal, scale, window
    ctx.save_for_backward(q, k, v, mask, *output)


def _backward_lse(ctx, do, dlse):
    q, k, v, mask, o, lse = ctx.saved_tensors
    do = torch.zeros_like(o) if do is None else do
    dq, dk, dv = torch.ops.tilec.attention_backward(q, k, v, o, lse, do, dlse, ctx.causal, ctx.scale, mask,
                                                    ctx.window)
    return dq, dk, dv, None, None, None, None


torch.library.register_autograd(f"{_LIB}::attention_lse", _backward_lse, setup_context=_setup_lse)


@torch.library.custom_op(f"{_LIB}::attention_varlen_lse", mutates_args=())
def attention_varlen_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                         cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool = False,
                         scale: Optional[float] = None,
                         window: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_varlen and its (H, total_q) fp32 log-sum-exp (-inf where a row sees no key)."""
    return ops.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal,
                                scale=scale, window=window, return_lse=True)


@attention_varlen_lse.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False, scale=None, window=None):
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::attention_varlen_backward", mutates_args=())
def attention_varlen_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                              lse: torch.Tensor, do: torch.Tensor, dlse: Optional[torch.Tensor],
                              cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, max_seqlen_q: int,
                              max_seqlen_k: int, causal: bool = False, scale: Optional[float] = None,
                              window: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ops.attention_varlen_backward(q, k, v, o, lse, do.contiguous(), cu_seqlens_q, cu_seqlens_k,
                                         max_seqlen_q, max_seqlen_k, causal=causal, window=window, scale=scale,
                                         dlse=None if dlse is None else dlse.contiguous())


@attention_varlen_backward.register_fake
def _(q, k, v, o, lse, do, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False, scale=None,
      window=None):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_varlen(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window = (*inputs, False, None, None)[:10]
    ctx.args = (max_q, max_k, causal, scale, window)
    ctx.save_for_backward(q, k, v, cu_q, cu_k, *output)


def _backward_varlen(ctx, do, dlse):
    q, k, v, cu_q, cu_k, o, lse = ctx.saved_tensors
    do = torch.zeros_like(o) if do is None else do
    dq, dk, dv = torch.ops.tilec.attention_varlen_backward(q, k, v, o, lse, do, dlse, cu_q, cu_k, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None


torch.library.register_autograd(f"{_LIB}::attention_varlen_lse", _backward_varlen, setup_context=_setup_varlen)


# ``attention`` and ``attention_varlen`` have no LSE output to save, so their autograd kernels
# are the forwards as ``attention_lse`` / ``attention_varlen_lse`` (whose autograd is above)
# keeping only the output: AOTAutograd traces through them, and the backward recomputes
# nothing. The LSE costs 1 / head_dim of the output's stores, also without grad.
_IMPL = torch.library.Library(_LIB, "IMPL")


def _attention_autograd(q, k, v, causal=False, scale=None, mask=None, window=None):
    return torch.ops.tilec.attention_lse(q, k, v, causal, scale, mask, window)[0]


def _attention_varlen_autograd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                               scale=None, window=None):
    return torch.ops.tilec.attention_varlen_lse(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                                causal, scale, window)[0]


with warnings.catch_warnings():    # replaces the kernels custom_op put there, which have no backward
    warnings.simplefilter("ignore", UserWarning)
    _IMPL.impl("attention", _attention_autograd, "Autograd")
    _IMPL.impl("attention_varlen", _attention_varlen_autograd, "Autograd")
