"""The Triton backend: tile IR rendered as ``@triton.jit`` source, launched on CUDA arrays,
run on the CPU through Triton's interpreter for host arrays, and compiled offline for
sm_80/sm_89/sm_90 without a GPU to report shared memory, registers and spills."""
from .offline import ARCH_LIMITS, CompileReport, compile_offline, parse_arch
from .runner import BACKEND, NUM_STAGES, NUM_WARPS, TritonBackend
from .space import backend_options, compile_constraint, space_constraints, space_params


def render(fn, options: dict | None = None) -> str:
    """Generated Triton source for ``fn`` (options default to the backend's)."""
    return BACKEND.render(fn, BACKEND.resolve_options(options or {}, fn.name, list(fn.constexprs)))


def describe(fn, options: dict | None = None, arch: str | int | None = None) -> str:
    """What ``tilec show --backend triton [--arch sm_XX]`` prints: the generated source and,
    for an arch, the offline compile's resources."""
    text = render(fn, options)
    if arch is not None:
        text += "\n# " + compile_offline(fn, options, arch).summary() + "\n"
    return text


__all__ = [
    "ARCH_LIMITS",
    "BACKEND",
    "NUM_STAGES",
    "NUM_WARPS",
    "CompileReport",
    "TritonBackend",
    "backend_options",
    "compile_constraint",
    "compile_offline",
    "describe",
    "parse_arch",
    "render",
    "space_constraints",
    "space_params",
]
