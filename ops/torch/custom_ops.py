"""Every op as a ``torch.library`` custom op with a fake (meta) implementation, so
``torch.compile`` traces through tilec kernels without graph breaks."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

import ops
from ops._common import needs_custom_op

_LIB = "tilec"
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int8, torch.uint8, torch.int32, torch.int64,
                 torch.bool)


def numpy_views(*tensors: Any) -> list:
    """Zero-copy NumPy views of CPU tensors when NumPy can hold them all (else the tensors as they
    are): the op then takes its NumPy call path, whose launch hands the arrays on as they are
    (tensors are turned into views once per argument and call there)."""
    if all(not isinstance(t, torch.Tensor) or (t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES)
           for t in tensors):
        return [t.detach().numpy() if isinstance(t, torch.Tensor) else t for t in tensors]
    return list(tensors)


def _back(out: Any) -> Any:
    """An op's NumPy result(s) as tensors sharing their memory."""
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, tuple):
        return tuple(_back(o) for o in out)
    return out


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def dispatch_free(*args: Any) -> bool:
    """Whether a call on ``args`` may run an op's implementation directly, skipping torch's
    dispatcher, which then adds only its own cost (30-40 us a call): eager mode, autograd not
    recording, plain CPU tensors. Tracing (torch.compile, export, jit) and tensor subclasses
    keep the custom op."""
    tensors = [t for t in args if isinstance(t, torch.Tensor)]
    return not (needs_custom_op(torch, tensors) or torch.jit.is_tracing()) and \
        all(type(t) in _PLAIN and t.device.type == "cpu" for t in tensors)


class KeepsHostViews:
    """Mixed into layers that keep NumPy views of their tensors for eager calls (``_host_views``):
    copies and pickles leave them out (a deepcopy would copy each weight once more, as NumPy);
    the next call makes them again."""

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_host_views", None)
        return state


def run(impl, op, *args: Any) -> Any:
    """``impl(*args)`` where the dispatcher adds nothing (``dispatch_free``), else the custom op."""
    return impl(*args) if dispatch_free(*args) else op(*args)


def gemm_impl(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None,
              activation: Optional[str] = None, alpha: float = 1.0) -> torch.Tensor:
    a, b, bias = numpy_views(a, b, bias)
    return _back(ops.gemm(a, b, bias=bias, activation=activation, alpha=alpha))


gemm = torch.library.custom_op(f"{_LIB}::gemm", gemm_impl, mutates_args=())


@gemm.register_fake
def _(a, b, bias=None, activation=None, alpha=1.0):
    return a.new_empty((a.shape[0], b.shape[1]))


@torch.library.custom_op(f"{_LIB}::gemv", mutates_args=())
def gemv(a: torch.Tensor, x: torch.Tensor, bias: Optional[torch.Tensor] = None,
         activation: Optional[str] = None, alpha: float = 1.0) -> torch.Tensor:
    a, x, bias = numpy_views(a, x, bias)
    return _back(ops.gemv(a, x, bias=bias, activation=activation, alpha=alpha))


@gemv.register_fake
def _(a, x, bias=None, activation=None, alpha=1.0):
    return a.new_empty((a.shape[0],))


# -- attention (forward only: no backward is registered) ----------------------------------------

# Masks, windows and packed batches follow ops.attention / ops.attention_varlen: mask bool
# (True = attend) or additive, window [left, right] (-1: unbounded). New arguments come after
# the old ones, with defaults, so existing positional calls keep their meaning.

@torch.library.custom_op(f"{_LIB}::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: Optional[float] = None, mask: Optional[torch.Tensor] = None,
              window: Optional[list[int]] = None) -> torch.Tensor:
    q, k, v, mask = numpy_views(q, k, v, mask)
    return _back(ops.attention(q, k, v, causal=causal, scale=scale, mask=mask, window=window))


@attention.register_fake
def _(q, k, v, causal=False, scale=None, mask=None, window=None):
    return q.new_empty(q.shape)


@torch.library.custom_op(f"{_LIB}::attention_lse", mutates_args=())
def attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                  scale: Optional[float] = None, mask: Optional[torch.Tensor] = None,
                  window: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attention and its (B, H, Lq) fp32 natural-log log-sum-exp (-inf where a row sees no key)."""
    q, k, v, mask = numpy_views(q, k, v, mask)
    return _back(ops.attention(q, k, v, causal=causal, scale=scale, mask=mask, window=window, return_lse=True))


@attention_lse.register_fake
def _(q, k, v, causal=False, scale=None, mask=None, window=None):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::attention_varlen", mutates_args=())
def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool = False,
                     scale: Optional[float] = None, window: Optional[list[int]] = None) -> torch.Tensor:
    """ops.attention_varlen on packed (total, H, D) tensors, as flash_attn_varlen_func."""
    q, k, v, cu_seqlens_q, cu_seqlens_k = numpy_views(q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _back(ops.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                      causal=causal, scale=scale, window=window))


@attention_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False, scale=None, window=None):
    return q.new_empty(q.shape)


@torch.library.custom_op(f"{_LIB}::decode_attention", mutates_args=())
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                     scale: Optional[float] = None) -> torch.Tensor:
    q, k_cache, v_cache, lengths = numpy_views(q, k_cache, v_cache, lengths)
    return _back(ops.decode_attention(q, k_cache, v_cache, lengths, scale=scale))


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
    q, k_codes, k_scale, k_zero, v_codes, v_scale, v_zero, k_res, v_res, q_len, r_len = numpy_views(
        q, k_codes, k_scale, k_zero, v_codes, v_scale, v_zero, k_res, v_res, q_len, r_len)
    residual = k_res.shape[2] - group          # quantize_kv keeps residual + group rows
    cache = QuantizedKV(k_codes, k_scale, k_zero, v_codes, v_scale, v_zero, k_res, v_res, q_len, r_len,
                        bits, group, residual)
    return _back(ops.decode_attention_quantized(q, cache, scale=scale))


@kivi_decode_attention.register_fake
def _(q, *cache_fields_and_options):
    return q.new_empty(q.shape)


def decode_attention_quantized(q: torch.Tensor, cache, scale: Optional[float] = None) -> torch.Tensor:
    """``ops.decode_attention_quantized`` through the custom op, for a cache from
    ``ops.quantize_kv`` (its NumPy arrays are wrapped without a copy; pass one whose fields are
    already tensors, e.g. buffers of a module, to trace it under torch.compile)."""
    fields = [torch.as_tensor(getattr(cache, name)) for name in cache.ARRAYS]
    return torch.ops.tilec.kivi_decode_attention(q, *fields, cache.bits, cache.group, scale)
