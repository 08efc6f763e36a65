"""Torch integration: every op as a ``torch.library`` custom op (``torch.ops.tilec.*``) with a
fake implementation, so ``torch.compile`` traces through tilec kernels; autograd formulas for
the GEMM-family ops; modules that swap into ``nn.Module`` models.

    import ops.torch                    # registers torch.ops.tilec.*
    y = torch.ops.tilec.gemm(a, b, None, "relu", 1.0)
    ops.torch.linear_model(model)       # every nn.Linear -> tilec GEMM
    ops.torch.quantize_model(model, "int4", group_size=128)

It lives above the compiler (``tilec`` imports nothing from ``ops``); importing it needs torch,
``import ops`` alone never does.
"""
from ops.torch.custom_ops import (attention, attention_lse, attention_varlen, decode_attention,  # noqa: F401
                                  decode_attention_quantized, gemm, gemv, kivi_decode_attention)
from ops.torch import attention_autograd  # noqa: F401  (autograd of attention, attention_lse)
from ops.torch.quant_linear import QuantLinear, int_linear, lut_linear, quantize_linear  # noqa: F401
from ops.torch.linear import Linear  # noqa: F401
from ops.torch.convert import linear_model, quantize_model  # noqa: F401
from ops.torch import autograd as _autograd  # noqa: F401,E402  (registers the backward formulas)

__all__ = ["gemm", "gemv", "attention", "attention_lse", "attention_varlen", "decode_attention",
           "kivi_decode_attention", "decode_attention_quantized", "int_linear", "lut_linear", "QuantLinear",
           "quantize_linear", "Linear", "linear_model", "quantize_model"]
