"""The op library. Each op module holds its DSL kernel(s), grid, tunable space, NumPy
reference and flops/bytes formulas; ``REGISTRY`` lists them for the tuner, benchmarks and CLI."""
from __future__ import annotations

from . import attention as _attention_mod
from . import decode as _decode_mod
from . import gemm as _gemm_mod
from . import gemv as _gemv_mod
from . import kv_quant as _kv_quant_mod
from . import lut_gemm as _lut_gemm_mod
from . import quant as _quant_mod
from .attention import attention
from .attention_bwd import attention_backward, attention_varlen_backward
from .attention_varlen import attention_varlen
from .bcq import BCQLayout, BCQWeight, bcq_from_uniform, bcq_quantize
from .decode import decode_attention
from .gemm import gemm
from .gemv import gemv
from .kv_quant import QuantizedKV, append_kv, decode_attention_quantized, quantize_kv
from .lut_gemm import lut_gemm
from .quant import quant_gemm
from .quant_format import QuantizedWeight, QuantLayout, quantize
from .spec import OpSpec

REGISTRY: dict[str, OpSpec] = {
    "gemm": _gemm_mod.SPEC,
    "gemv": _gemv_mod.SPEC,
    "quant_gemm": _quant_mod.SPEC,
    "lut_gemm": _lut_gemm_mod.SPEC,
    "attention": _attention_mod.SPEC,
    "decode_attention": _decode_mod.SPEC,
    "decode_attention_quantized": _kv_quant_mod.SPEC,
}

__all__ = ["gemm", "gemv", "quant_gemm", "quantize", "QuantizedWeight", "QuantLayout", "lut_gemm",
           "bcq_quantize", "bcq_from_uniform", "BCQWeight", "BCQLayout", "attention", "attention_backward",
           "attention_varlen", "attention_varlen_backward", "decode_attention", "quantize_kv", "append_kv",
           "decode_attention_quantized", "QuantizedKV", "REGISTRY", "OpSpec"]
