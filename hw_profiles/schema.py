"""The profile schema: what a hardware profile holds, and the checks that turn a TOML table
into a ``Profile`` or into a ``ProfileError`` that names the file, the key and the problem.

Figures that a cost model reads need a source (``[sources]``, keyed by the figure's dotted
path): a profile says where each number came from, in the tag style of
``hardware-facts.md`` ([V] vendor, [S] secondary, [D] derived, [E] estimate, [M] measured).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilec.errors import TilecError

KINDS = ("gpu", "cpu", "npu", "mcu")
BACKENDS = ("numba", "triton", "cuda")
SCOPES = ("cu", "shared", "dram")
# peak_flops keys: element types the compute units take as inputs ("tf32": fp32 on tensor cores)
FLOP_DTYPES = ("float64", "float32", "tf32", "float16", "bfloat16", "float8", "int8", "int4")
# share of the dynamic power budget (TDP - idle) spent on arithmetic at peak, when a profile
# gives no energy per flop: the rest goes to moving data (an assumption, tagged [E])
ARITH_POWER_SHARE = 0.5


class ProfileError(TilecError):
    """A profile that does not follow the schema: ``file``, ``key`` and ``problem``."""

    def __init__(self, file: str, key: str, problem: str):
        self.file, self.key, self.problem = str(file), key, problem
        super().__init__(f"hardware profile {file}: key '{key}': {problem}")


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    capacity_bytes: int            # per instance (per compute unit when scope is "cu")
    bandwidth_bytes_per_s: float   # aggregate over the whole device
    energy_j_per_byte: float
    scope: str                     # "cu": private to a compute unit, "shared": on-chip shared, "dram": off-chip


@dataclass(frozen=True, eq=False)
class Profile:
    name: str
    kind: str
    arch: str
    backends: tuple[str, ...]
    compute_units: int
    clock_hz: float
    peak_flops: dict[str, float]
    memory: tuple[MemoryLevel, ...]
    local_memory_bytes: int
    max_threads_per_block: int | None
    registers_per_thread: int | None
    idle_power_w: float
    tdp_w: float
    sources: dict[str, str]
    energy_j_per_flop: dict[str, float] = field(default_factory=dict)
    vendor: str = ""
    description: str = ""
    warp_size: int | None = None
    registers_per_cu: int | None = None
    max_threads_per_cu: int | None = None
    max_programs_per_cu: int | None = None
    local_memory_per_cu_bytes: int | None = None
    matrix_unit: tuple[int, int, int] | None = None
    simd_width_bits: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def level(self, name: str) -> MemoryLevel:
        for m in self.memory:
            if m.name.lower() == name.lower():
                return m
        raise TilecError(f"profile {self.name} has no memory level {name!r}; it has {[m.name for m in self.memory]}")

    @property
    def dram(self) -> MemoryLevel:
        """Main memory: the last level with scope "dram" (else the last level)."""
        drams = [m for m in self.memory if m.scope == "dram"]
        return drams[-1] if drams else self.memory[-1]

    def peak(self, dtype: str) -> float | None:
        """Peak flop/s for inputs of ``dtype`` (None when the target cannot compute in it)."""
        return self.peak_flops.get(dtype)

    def flop_energy(self, dtype: str) -> float:
        return self.energy_j_per_flop.get(dtype, max(self.energy_j_per_flop.values(), default=0.0))


# -- validation -----------------------------------------------------------------------------
_REQUIRED = {
    "name": str, "kind": str, "arch": str, "backends": list, "compute_units": int, "clock_hz": float,
    "peak_flops": dict, "memory": list, "local_memory_bytes": int, "idle_power_w": float, "tdp_w": float,
    "sources": dict,
}
_OPTIONAL = {
    "vendor": str, "description": str, "max_threads_per_block": int, "registers_per_thread": int,
    "energy_j_per_flop": dict, "warp_size": int, "registers_per_cu": int, "max_threads_per_cu": int,
    "max_programs_per_cu": int, "local_memory_per_cu_bytes": int, "matrix_unit": list,
    "simd_width_bits": int, "notes": dict,
}
_LEVEL_KEYS = {"name": str, "capacity_bytes": int, "bandwidth_bytes_per_s": float,
               "energy_j_per_byte": float, "scope": str}
# figures a cost model reads: each needs a source
_SOURCED = ("compute_units", "clock_hz", "local_memory_bytes", "idle_power_w", "tdp_w")


def _typed(file: str, key: str, value: Any, want: type) -> Any:
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(file, key, f"expected a number, got {value!r}")
        return float(value)
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(file, key, f"expected an integer, got {value!r}")
        return value
    if not isinstance(value, want):
        raise ProfileError(file, key, f"expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def _positive(file: str, key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ProfileError(file, key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def profile_from_dict(data: dict, file: str, expected_name: str | None = None) -> Profile:
    """Check ``data`` (a parsed TOML document) against the schema and build the ``Profile``."""
    for key in data:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise ProfileError(file, key, f"unknown key; allowed: {sorted(_REQUIRED) + sorted(_OPTIONAL)}")
    for key, want in _REQUIRED.items():
        if key not in data:
            raise ProfileError(file, key, "missing (required)")
    vals = {k: _typed(file, k, v, (_REQUIRED | _OPTIONAL)[k]) for k, v in data.items()}
    name = vals["name"]
    if expected_name is not None and name != expected_name:
        raise ProfileError(file, "name", f"is {name!r} but the file is named {expected_name}.toml")
    if vals["kind"] not in KINDS:
        raise ProfileError(file, "kind", f"{vals['kind']!r} is not one of {list(KINDS)}")
    for i, b in enumerate(vals["backends"]):
        if b not in BACKENDS:
            raise ProfileError(file, f"backends[{i}]", f"{b!r} is not one of {list(BACKENDS)}")
    for key in ("compute_units", "clock_hz", "local_memory_bytes", "tdp_w"):
        _positive(file, key, vals[key])
    _positive(file, "idle_power_w", vals["idle_power_w"], allow_zero=True)
    if vals["idle_power_w"] > vals["tdp_w"]:
        raise ProfileError(file, "idle_power_w", f"{vals['idle_power_w']} W exceeds tdp_w {vals['tdp_w']} W")
    for key in ("max_threads_per_block", "registers_per_thread", "warp_size", "registers_per_cu",
                "max_threads_per_cu", "max_programs_per_cu", "local_memory_per_cu_bytes", "simd_width_bits"):
        if key in vals:
            _positive(file, key, vals[key])

    sources = {}
    for k, v in vals["sources"].items():
        sources[k] = _typed(file, f"sources.{k}", v, str)
    peak = _number_table(file, "peak_flops", vals["peak_flops"])
    if not peak:
        raise ProfileError(file, "peak_flops", "empty: give at least one dtype's peak flop/s")
    energy = _number_table(file, "energy_j_per_flop", vals.get("energy_j_per_flop", {}), allow_zero=True)
    for dtype, p in peak.items():
        if dtype not in energy:
            energy[dtype] = ARITH_POWER_SHARE * (vals["tdp_w"] - vals["idle_power_w"]) / p
            sources.setdefault(f"energy_j_per_flop.{dtype}",
                               f"[D] {ARITH_POWER_SHARE} x (tdp_w - idle_power_w) / peak_flops.{dtype} (tilec default)")
    memory = tuple(_level(file, i, m) for i, m in enumerate(vals["memory"]))
    if not memory:
        raise ProfileError(file, "memory", "empty: give at least the main memory level")
    names = [m.name for m in memory]
    if len(set(names)) != len(names):
        raise ProfileError(file, "memory", f"duplicate level names in {names}")

    matrix_unit = None
    if "matrix_unit" in vals:
        mu = vals["matrix_unit"]
        if len(mu) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in mu):
            raise ProfileError(file, "matrix_unit", f"expected [m, n, k] positive integers, got {mu!r}")
        matrix_unit = tuple(mu)

    needed = list(_SOURCED) + [f"peak_flops.{d}" for d in peak] + \
        [f"memory.{m.name}.{f}" for m in memory for f in ("capacity_bytes", "bandwidth_bytes_per_s", "energy_j_per_byte")]
    for key in needed:
        if key not in sources and _family(key) not in sources:
            raise ProfileError(file, f"sources.{key}", "missing: every figure a cost model reads needs a source tag "
                                                       "(e.g. \"[V] vendor datasheet\", \"[E] estimate\")")
    return Profile(
        name=name, kind=vals["kind"], arch=vals["arch"], backends=tuple(vals["backends"]),
        compute_units=vals["compute_units"], clock_hz=vals["clock_hz"], peak_flops=peak, memory=memory,
        local_memory_bytes=vals["local_memory_bytes"], max_threads_per_block=vals.get("max_threads_per_block"),
        registers_per_thread=vals.get("registers_per_thread"), idle_power_w=vals["idle_power_w"],
        tdp_w=vals["tdp_w"], sources=sources, energy_j_per_flop=energy, vendor=vals.get("vendor", ""),
        description=vals.get("description", ""), warp_size=vals.get("warp_size"),
        registers_per_cu=vals.get("registers_per_cu"), max_threads_per_cu=vals.get("max_threads_per_cu"),
        max_programs_per_cu=vals.get("max_programs_per_cu"),
        local_memory_per_cu_bytes=vals.get("local_memory_per_cu_bytes"), matrix_unit=matrix_unit,
        simd_width_bits=vals.get("simd_width_bits"), notes=vals.get("notes", {}), path=str(file))


def _family(key: str) -> str:
    """``memory.HBM.capacity_bytes`` may be sourced once as ``memory.HBM``."""
    return key.rsplit(".", 1)[0]


def _number_table(file: str, key: str, table: dict, allow_zero: bool = False) -> dict[str, float]:
    out = {}
    for dtype, v in table.items():
        if dtype not in FLOP_DTYPES:
            raise ProfileError(file, f"{key}.{dtype}", f"unknown dtype; use one of {list(FLOP_DTYPES)}")
        out[dtype] = _typed(file, f"{key}.{dtype}", v, float)
        _positive(file, f"{key}.{dtype}", out[dtype], allow_zero)
    return out


def _level(file: str, i: int, m: Any) -> MemoryLevel:
    where = f"memory[{i}]"
    if not isinstance(m, dict):
        raise ProfileError(file, where, f"expected a table ([[memory]]), got {m!r}")
    label = f"memory[{i}]" if "name" not in m else f"memory.{m['name']}"
    for key in m:
        if key not in _LEVEL_KEYS:
            raise ProfileError(file, f"{label}.{key}", f"unknown key; allowed: {sorted(_LEVEL_KEYS)}")
    for key in _LEVEL_KEYS:
        if key not in m:
            raise ProfileError(file, f"{label}.{key}", "missing (required)")
    vals = {k: _typed(file, f"{label}.{k}", m[k], t) for k, t in _LEVEL_KEYS.items()}
    if vals["scope"] not in SCOPES:
        raise ProfileError(file, f"{label}.scope", f"{vals['scope']!r} is not one of {list(SCOPES)}")
    for key in ("capacity_bytes", "bandwidth_bytes_per_s"):
        _positive(file, f"{label}.{key}", vals[key])
    _positive(file, f"{label}.energy_j_per_byte", vals["energy_j_per_byte"], allow_zero=True)
    return MemoryLevel(**vals)


def load_file(path: str | os.PathLike, expected_name: str | None = None) -> Profile:
    """Parse and check one TOML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ProfileError(str(path), "-", f"cannot read the file: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(str(path), "-", f"not valid TOML: {e}") from None
    return profile_from_dict(data, str(path), expected_name)
