"""The Triton backend's launch options, apart from the runner so that the offline compiler
and the tuning space read them without importing the runner."""
from __future__ import annotations

from ..base import Option, resolve_options

NUM_WARPS = (1, 2, 4, 8, 16)
NUM_STAGES = (1, 2, 3, 4, 5)

OPTIONS = {
    "num_warps": Option(4, NUM_WARPS, "warps per program (threads = 32 x num_warps)"),
    "num_stages": Option(3, NUM_STAGES, "software-pipelining depth of loops over loads"),
    "fp32_dot": Option("ieee", ("ieee", "tf32", "tf32x3"),
                       "precision of tl.dot on fp32 tiles: exact (ieee) or tensor-core TF32 (faster, ~1e-3)"),
}


def resolve(fn, given: dict) -> dict:
    """Every option for ``fn``: the given ones checked, the rest at their defaults."""
    return resolve_options("triton", OPTIONS, given, fn.name, list(fn.constexprs))
