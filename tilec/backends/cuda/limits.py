"""Per-architecture limits a config must respect before anything is compiled.

Up to 48 KiB the shared-memory arena is declared statically (so ptxas reports it and the
estimate can be checked against it); above that it is dynamic shared memory, which a block
may use up to the architecture's opt-in limit (163 KiB on sm_80, 99 KiB on sm_86/sm_89,
227 KiB on sm_90). Figures from ``shared/reference/hardware-facts.md`` ([nvidia.common],
[nvidia.sm_XX]), which cites the CUDA C++ Programming Guide, Compute Capabilities (Table 27,
sections 20.7.3/20.8.3). When hardware profiles carry these figures, ``limits_for`` reads them.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...errors import ConfigError

ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
STATIC_SMEM_PER_BLOCK = 48 * 1024       # CPG 20.7.3: above 48 KB needs dynamic smem + opt-in
MAX_THREADS_PER_BLOCK = 1024            # CPG Table 27
OPTIN_SMEM_PER_BLOCK_KB = {"sm_80": 163, "sm_86": 99, "sm_89": 99, "sm_90": 227}  # CPG max_smem_per_block_kb
_SOURCE = ("CUDA C++ Programming Guide, Compute Capabilities (Table 27; sections 20.7.3/20.8.3), as recorded in "
           "shared/reference/hardware-facts.md")


class Limits(NamedTuple):
    smem_per_block_bytes: int   # shared memory one block may use (dynamic opt-in included)
    max_threads: int
    source: str


def _field(profile: Any, name: str) -> Any:
    return profile.get(name) if isinstance(profile, dict) else getattr(profile, name, None)


def limits_for(arch: str, profile: Any = None) -> Limits:
    """Per-block limits for ``arch``; from a hardware profile when one is given (its
    ``max_threads_per_block`` and ``local_memory_bytes``)."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown CUDA architecture {arch!r}; tilec targets {', '.join(ARCHS)}")
    if profile is not None:
        threads, smem = _field(profile, "max_threads_per_block"), _field(profile, "local_memory_bytes")
        name = _field(profile, "name") or "(unnamed)"
        if threads is not None and smem is not None:
            return Limits(int(smem), int(threads),
                          f"hardware profile {name} (max_threads_per_block={threads}, local_memory_bytes={smem})")
    kb = OPTIN_SMEM_PER_BLOCK_KB[arch]
    return Limits(kb * 1024, MAX_THREADS_PER_BLOCK,
                  f"{arch} limits table in tilec/backends/cuda/limits.py ([nvidia.{arch}] max_smem_per_block_kb = "
                  f"{kb}, [nvidia.common] max_threads_per_block = {MAX_THREADS_PER_BLOCK}), from the {_SOURCE}")


def check(arch: str, threads: int, smem_bytes: int, what: str, profile: Any = None) -> None:
    """Raise ConfigError naming the limit and where it came from when a config cannot launch."""
    lim = limits_for(arch, profile)
    if threads > lim.max_threads:
        raise ConfigError(f"{what}: threads={threads} exceeds the limit of {lim.max_threads} threads per block "
                          f"on {arch} (source: {lim.source})")
    if smem_bytes > lim.smem_per_block_bytes:
        raise ConfigError(f"{what}: needs {smem_bytes} bytes of shared memory per block, over the limit of "
                          f"{lim.smem_per_block_bytes} bytes on {arch} (source: {lim.source}); use smaller tiles")
