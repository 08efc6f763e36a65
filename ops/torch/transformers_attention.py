"""A "tilec" attention implementation for Hugging Face transformers (5.x).

    import ops.torch.transformers_attention          # registers "tilec"
    model = BertModel(config, attn_implementation="tilec")   # or config._attn_implementation = "tilec"

It registers ``attention_forward`` with transformers' ``AttentionInterface`` and the SDPA mask
builder with its ``AttentionMaskInterface`` under the same name, so models hand it the very
masks they hand SDPA: a boolean (B, 1, Lq, Lk) mask (padding, causal, sliding window,
packed sequences) or None where ``is_causal`` says it all. The call goes through the
``torch.ops.tilec.attention`` custom op, so ``torch.compile(fullgraph=True)`` traces it.
One difference from SDPA: a query row whose keys are all masked (a left-padded position)
gets zeros, where SDPA's result depends on the kernel it picked.
"""
from __future__ import annotations

from typing import Optional

import torch

import ops.torch.custom_ops  # noqa: F401  (defines torch.ops.tilec.attention)

NAME = "tilec"


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
                      is_causal: Optional[bool] = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: (B, H, Lq, D) query, (B, Hkv, Lk, D) key and
    value (grouped heads are read in place, not repeated); returns (B, Lq, H, D) and no weights."""
    if dropout:
        raise ValueError("the tilec attention implementation has no dropout: call model.eval() "
                         "or set the attention dropout to 0")
    for name in ("softcap", "position_bias", "sinks", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(f"the tilec attention implementation does not support `{name}`; use 'sdpa' or 'eager'")
    q_length = query.shape[2]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # as sdpa_attention_forward decides it: with no mask, a prefill of a causal layer is causal
    # (aligned to the start: keys past the queries, an empty static cache's, are cut)
    is_causal = bool(q_length > 1 and attention_mask is None and is_causal)
    if is_causal and key.shape[2] > q_length:
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    out = torch.ops.tilec.attention(query, key, value, is_causal, scaling, attention_mask, None)
    return out.transpose(1, 2).contiguous(), None


def register(name: str = NAME) -> None:
    """Register the implementation (and SDPA's boolean masks for it) under ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


register()
