"""The Triton backend's part of a tuning space: num_warps and num_stages, an optional rule
keeping tile extents at powers of two (others work, padded, but waste lanes), and a
feasibility constraint that compiles each config offline for the profile's GPU."""
from __future__ import annotations

from ...space import Param

from .renderer import is_pow2
from .options import NUM_STAGES, NUM_WARPS


def space_params(warps: tuple = NUM_WARPS, stages: tuple = NUM_STAGES) -> list[Param]:
    """Params to ``Space.extend`` an op's space with for this backend."""
    return [Param("num_warps", tuple(warps), "warps per program (threads = 32 x num_warps)"),
            Param("num_stages", tuple(stages), "software-pipelining depth of loops over loads")]


def power_of_two_tiles(tile_names: tuple[str, ...]):
    """A constraint: the named tile parameters are powers of two. Triton holds other extents
    padded to the next power of two, so e.g. 48 computes 64 lanes; this keeps a search to
    configs without such waste."""
    def check(config: dict, profile=None) -> str | None:
        bad = [f"{n}={config[n]}" for n in tile_names if isinstance(config.get(n), int) and not is_pow2(config[n])]
        return f"triton pads non-power-of-two tiles (wasted lanes): {', '.join(bad)}" if bad else None
    return check


def space_constraints(tile_names: tuple[str, ...]) -> list:
    return [power_of_two_tiles(tile_names)]


def backend_options(config: dict) -> dict:
    """The part of a config that is Triton launch options rather than constexprs."""
    return {k: config[k] for k in ("num_warps", "num_stages", "fp32_dot") if k in config}


def compile_constraint(make_ir, arch_of):
    """A constraint that compiles the config offline for the profile's GPU and rejects it when
    it spills registers or needs more shared memory than the arch has.

    ``make_ir(config)`` gives the kernel's IR for a config (an op's ``launch_ir``);
    ``arch_of(profile)`` gives "sm_80"-like text, or None where the check does not apply.
    Reports are cached on disk, so a space is compiled once per (config, arch)."""
    from .offline import compile_offline

    def check(config: dict, profile=None) -> str | None:
        arch = arch_of(profile) if profile is not None else None
        if arch is None:
            return None
        report = compile_offline(make_ir(config), backend_options(config), arch)
        return "; ".join(report.problems()) or None
    return check
