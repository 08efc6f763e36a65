"""C spellings of tilec dtypes: storage types, the register ("work") type tiles compute in,
literals and the conversions between them. 16-bit floats are stored as ``__half`` /
``__nv_bfloat16`` and computed in fp32, as the IR asks."""
from __future__ import annotations

import math
import struct

from ...dtypes import DType

STORAGE = {"float32": "float", "float64": "double", "float16": "__half", "bfloat16": "__nv_bfloat16",
           "int8": "signed char", "int16": "short", "int32": "int", "int64": "long long",
           "uint8": "unsigned char", "uint16": "unsigned short", "uint32": "unsigned int", "bool": "bool"}
SIXTEEN = {"float16", "bfloat16"}

# C++ words a kernel parameter or value name must not take
RESERVED = {"auto", "bool", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
            "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "return",
            "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
            "volatile", "while", "class", "new", "delete", "this", "template", "typename", "namespace", "using",
            "operator", "private", "public", "protected", "virtual", "friend", "true", "false", "nullptr",
            "threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "tc_smem", "wmma", "nvcuda", "e", "lane",
            "warp", "min", "max", "abs", "exp", "log", "sqrt", "pow", "floor", "ceil", "sin", "cos", "tanh", "erf",
            "asm", "and", "or", "not", "xor", "bitand", "bitor", "compl", "export", "mutable",
            "static_assert", "thread_local", "alignas", "alignof", "decltype", "noexcept", "constexpr"}


def storage(dtype: DType) -> str:
    return STORAGE[dtype.name]


def work(dtype: DType) -> str:
    """The register type: fp32 for 16-bit floats, the storage type otherwise."""
    return "float" if dtype.name in SIXTEEN else STORAGE[dtype.name]


def accumulator(dtype: DType) -> str:
    """``dot`` accumulates in fp32, or int32 for integer inputs (fp64 stays fp64)."""
    if dtype.name == "float64":
        return "double"
    return "float" if dtype.is_float else "int"


def to_work(expr: str, dtype: DType) -> str:
    if dtype.name == "float16":
        return f"__half2float({expr})"
    if dtype.name == "bfloat16":
        return f"__bfloat162float({expr})"
    return expr


def to_storage(expr: str, dtype: DType) -> str:
    if dtype.name == "float16":
        return f"__float2half_rn({expr})"
    if dtype.name == "bfloat16":
        return f"__float2bfloat16_rn({expr})"
    return expr


def literal(value, dtype: DType) -> str:
    if dtype.kind == "bool":
        return "true" if value else "false"
    if dtype.is_float:
        v = float(value)
        if dtype.name == "float64":
            if not math.isfinite(v):
                bits = struct.unpack("<Q", struct.pack("<d", v))[0]
                return f"__longlong_as_double({bits:#x}LL)"
            return repr(v)
        if math.isnan(v) or abs(v) > 3.4028234663852886e38:
            bits = struct.unpack("<I", struct.pack("<f", v))[0]
            return f"__int_as_float({bits:#x})"
        text = repr(v)
        return text + ("f" if ("." in text or "e" in text) else ".0f")
    v = int(value)
    if dtype.name == "int64":
        return f"({v + 1}LL - 1LL)" if v == -2**63 else f"{v}LL"
    if dtype.kind == "uint":
        return f"{v}u"
    if v == -2**31:
        return "(-2147483647 - 1)"
    return str(v)


def lowest(dtype: DType) -> str:
    """The identity of ``max`` for this type."""
    if dtype.is_float:
        return literal(float("-inf"), dtype)
    if dtype.kind == "bool":
        return "false"
    if dtype.kind == "uint":
        return "0u"
    return literal(-(2 ** (dtype.bits - 1)), dtype)


def highest(dtype: DType) -> str:
    """The identity of ``min`` for this type."""
    if dtype.is_float:
        return literal(float("inf"), dtype)
    if dtype.kind == "bool":
        return "true"
    return literal(2 ** (dtype.bits - (0 if dtype.kind == "uint" else 1)) - 1, dtype)
