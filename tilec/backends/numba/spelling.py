"""How IR types and constants are spelled in the generated Python (shared by the Numba
renderer's modules)."""
from __future__ import annotations

import struct

import numpy as np

# Working dtype of tiles in this backend: 16-bit floats compute in fp32, rounded at casts.
_WORK = {"float16": "float32", "bfloat16": "float32", "bool": "bool_"}


def np_type(dtype) -> str:
    return "np." + _WORK.get(dtype.name, dtype.name)


def literal(value, dtype) -> str:
    if dtype.kind == "bool":
        return "True" if value else "False"
    if dtype.is_float:
        v = float(value)
        text = "np.inf" if v == float("inf") else "-np.inf" if v == float("-inf") else "np.nan" if v != v else repr(v)
        return f"{np_type(dtype)}({text})"
    return str(int(value))


def bits16(value: float, dtype) -> int:
    if dtype.name == "bfloat16":
        return struct.unpack("<I", struct.pack("<f", value))[0] >> 16
    return int(np.array(value, np.float16).view(np.uint16))
