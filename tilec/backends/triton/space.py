"""The Triton backend's part of a tuning space: num_warps and num_stages, and the rule that
Triton tiles have power-of-two extents."""
from __future__ import annotations

from autotune.space import Param

from .renderer import is_pow2
from .runner import NUM_STAGES, NUM_WARPS


def space_params(warps: tuple = NUM_WARPS, stages: tuple = NUM_STAGES) -> list[Param]:
    """Params to ``Space.extend`` an op's space with for this backend."""
    return [Param("num_warps", tuple(warps), "warps per program (threads = 32 x num_warps)"),
            Param("num_stages", tuple(stages), "software-pipelining depth of loops over loads")]


def power_of_two_tiles(tile_names: tuple[str, ...]):
    """A constraint: the named tile parameters must be powers of two (Triton's tl.arange)."""
    def check(config: dict, profile=None) -> str | None:
        bad = [f"{n}={config[n]}" for n in tile_names if isinstance(config.get(n), int) and not is_pow2(config[n])]
        return f"triton tiles need power-of-two extents: {', '.join(bad)}" if bad else None
    return check


def space_constraints(tile_names: tuple[str, ...]) -> list:
    return [power_of_two_tiles(tile_names)]
