"""Autograd for ``torch.ops.tilec.attention`` and ``attention_lse``: the FlashAttention-2
backward (``ops.attention_backward``) as the custom op ``tilec::attention_backward`` with a
fake implementation, so ``torch.compile(fullgraph=True)`` traces forward and backward.

``attention_lse`` saves q, k, v, its output and its log-sum-exp, and takes the gradient of
both outputs. ``attention`` returns no LSE, so its autograd kernel runs the forward as
``attention_lse`` and saves that: the backward recomputes nothing. Arguments after
(q, k, v, causal, scale), e.g. masks a later version adds, get no gradient; while they are
set and a gradient is wanted, the op refuses rather than ignore them.
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
                       scale: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of attention; ``dlse`` is the gradient of the log-sum-exp output, if any."""
    return ops.attention_backward(q, k, v, o, lse, do.contiguous(), causal=causal, scale=scale,
                                  dlse=None if dlse is None else dlse.contiguous())


@attention_backward.register_fake
def _(q, k, v, o, lse, do, dlse=None, causal=False, scale=None):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _no_extras(extra, kwargs) -> None:
    if any(x is not None for x in (*extra, *kwargs.values())):
        raise NotImplementedError("tilec attention backward supports causal and scale only; the extra "
                                  "arguments given (masks, windows) have no backward yet")


def _setup_lse(ctx, inputs, output):
    q, k, v, causal, scale, *extra = inputs
    ctx.causal, ctx.scale, ctx.extra = causal, scale, len(extra)
    _no_extras(extra, {})
    ctx.save_for_backward(q, k, v, *output)


def _backward_lse(ctx, do, dlse):
    q, k, v, o, lse = ctx.saved_tensors
    do = torch.zeros_like(o) if do is None else do
    dq, dk, dv = torch.ops.tilec.attention_backward(q, k, v, o, lse, do, dlse, ctx.causal, ctx.scale)
    return (dq, dk, dv, None, None, *([None] * ctx.extra))


torch.library.register_autograd(f"{_LIB}::attention_lse", _backward_lse, setup_context=_setup_lse)


# ``attention`` has no LSE output to save, so its autograd kernel is the forward as
# ``attention_lse`` (whose autograd is above) keeping only the output: AOTAutograd traces
# through it, and the backward recomputes nothing. The LSE costs 1 / head_dim of the output's
# stores, also without grad.
_IMPL = torch.library.Library(_LIB, "IMPL")


def _attention_autograd(q, k, v, causal=False, scale=None, *extra, **kwargs):
    if any(x is not None for x in (*extra, *kwargs.values())):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            _no_extras(extra, kwargs)
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.tilec.attention(q, k, v, causal, scale, *extra, **kwargs)
    return torch.ops.tilec.attention_lse(q, k, v, causal, scale)[0]


with warnings.catch_warnings():    # replaces the kernel custom_op put there, which has no backward
    warnings.simplefilter("ignore", UserWarning)
    _IMPL.impl("attention", _attention_autograd, "Autograd")
