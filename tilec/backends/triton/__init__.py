"""The Triton backend: tile IR rendered as ``@triton.jit`` source, launched on CUDA arrays,
run on the CPU through Triton's interpreter for host arrays, and compiled offline for
sm_80/sm_89/sm_90 without a GPU to report shared memory, registers and spills."""
from .offline import ARCH_LIMITS, CompileReport, compile_offline, parse_arch
from .runner import BACKEND, NUM_STAGES, NUM_WARPS, TritonBackend
from .space import space_constraints, space_params


def render(fn, options: dict | None = None) -> str:
    """Generated Triton source for ``fn`` (options default to the backend's)."""
    return BACKEND.render(fn, BACKEND.resolve_options(options or {}, fn.name, list(fn.constexprs)))


__all__ = ["ARCH_LIMITS", "BACKEND", "CompileReport", "NUM_STAGES", "NUM_WARPS", "TritonBackend",
           "compile_offline", "parse_arch", "render", "space_constraints", "space_params"]
