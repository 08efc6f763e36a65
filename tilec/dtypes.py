"""Element types of tiles and tensors.

bf16 and fp16 tensors travel as 16-bit storage ("as stored"): backends that lack the type
(NumPy has no bf16, Numba has no fp16) widen them to fp32 on load and narrow on store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import TilecError


@dataclass(frozen=True)
class DType:
    name: str          # "float32", "bfloat16", ...
    short: str         # "f32", "bf16", ... (IR printer)
    bits: int
    kind: str          # "float" | "int" | "uint" | "bool"

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "uint")

    @property
    def numpy(self) -> np.dtype:
        """The NumPy dtype that stores this type (uint16 for bf16)."""
        return np.dtype(_STORAGE[self.name])

    def __repr__(self) -> str:
        return f"tc.{self.name}"


float32 = DType("float32", "f32", 32, "float")
float16 = DType("float16", "f16", 16, "float")
bfloat16 = DType("bfloat16", "bf16", 16, "float")
float64 = DType("float64", "f64", 64, "float")
int8 = DType("int8", "i8", 8, "int")
int16 = DType("int16", "i16", 16, "int")
int32 = DType("int32", "i32", 32, "int")
int64 = DType("int64", "i64", 64, "int")
uint8 = DType("uint8", "u8", 8, "uint")
uint16 = DType("uint16", "u16", 16, "uint")
uint32 = DType("uint32", "u32", 32, "uint")
bool_ = DType("bool", "i1", 8, "bool")

ALL = [float32, float16, bfloat16, float64, int8, int16, int32, int64, uint8, uint16, uint32, bool_]
BY_NAME = {d.name: d for d in ALL} | {d.short: d for d in ALL} | {"bf16": bfloat16, "fp16": float16, "fp32": float32}
_STORAGE = {d.name: d.name for d in ALL} | {"bfloat16": "uint16", "bool": "bool"}


def lookup(name: str | DType) -> DType:
    if isinstance(name, DType):
        return name
    try:
        return BY_NAME[str(name)]
    except KeyError:
        raise TilecError(f"unknown dtype {name!r}; known: {sorted({d.name for d in ALL})}") from None


_FROM_NUMPY: dict[np.dtype, DType] = {}


def from_numpy(dt: np.dtype) -> DType:
    """Map a NumPy dtype to a tilec dtype; ml_dtypes' bfloat16 maps to bfloat16."""
    try:
        return _FROM_NUMPY[dt]   # every launch describes each argument: keep it a dict lookup
    except (KeyError, TypeError):
        pass
    dt = np.dtype(dt)
    if dt.name not in BY_NAME:
        raise TilecError(f"unsupported array dtype {dt}; tilec takes {', '.join(d.name for d in ALL)}")
    _FROM_NUMPY[dt] = BY_NAME[dt.name]
    return BY_NAME[dt.name]


def promote(a: DType, b: DType) -> DType:
    """Result type of a binary op: floats win over ints, wider wins, f16 with bf16 gives f32."""
    if a == b:
        return a
    if a.is_float and b.is_float:
        if a.bits == b.bits:  # f16 vs bf16
            return float32
        return a if a.bits > b.bits else b
    if a.is_float:
        return a
    if b.is_float:
        return b
    if a.kind == "bool":
        return b
    if b.kind == "bool":
        return a
    if a.kind == b.kind:
        return a if a.bits > b.bits else b
    signed, unsigned = (a, b) if a.kind == "int" else (b, a)
    if signed.bits > unsigned.bits:
        return signed
    return {8: int16, 16: int32, 32: int64}.get(unsigned.bits, int64)
