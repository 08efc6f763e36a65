"""The Triton backend: render, compile and launch.

Where the arrays live decides how a kernel runs: CUDA arrays (Torch or CuPy) go through
``triton.jit`` on the GPU; host arrays (NumPy, CPU Torch) go through Triton's interpreter,
which executes the very same generated source with NumPy on the CPU. The interpreter is
entered per call (no ``TRITON_INTERPRET`` needed), so one process can do both.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from ...errors import TilecError
from ...ir import Function
from ..base import Backend, Compiled
from . import source as src
from .interop import TensorArg, tensor_arg
from .interpreter import compiled_library, host_interpreter
from .options import NUM_STAGES, NUM_WARPS, OPTIONS  # noqa: F401 (re-exported)
from .renderer import kernel_symbol, render


class TritonBackend(Backend):
    name = "triton"
    device = "cuda"
    extra = "triton"
    options = OPTIONS

    def accepts(self, device: str) -> bool:
        return True  # CUDA arrays on the GPU; host arrays through Triton's CPU interpreter

    def missing(self) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "the triton backend needs the triton package: pip install 'tilec[triton]'"
        return None

    def render(self, fn: Function, options: dict) -> str:
        return render(fn, options)

    def space_params(self):
        from .space import space_params
        return space_params()

    def compile_offline(self, fn: Function, options: dict, arch: str):
        from .offline import compile_offline
        return compile_offline(fn, options, arch)

    def compile(self, fn: Function, options: dict) -> Compiled:
        reason = self.missing()
        if reason:
            raise TilecError(reason)
        source = self.render(fn, options)
        symbol = kernel_symbol(fn)
        src.use_tilec_cache_for_triton()
        module, path = src.load(symbol, source)
        python_fn = src.python_function(module, symbol)
        kernels: dict[str, Any] = {}

        def interpreted_fn():
            host_source = render(fn, options, interpreter=True)
            if host_source == source:
                return python_fn
            return src.python_function(src.load(symbol, host_source)[0], symbol)

        def run(grid: tuple[int, int, int], args: list[Any]) -> None:
            flat = []
            device = "cpu"
            for a in args:
                if isinstance(a, TensorArg):
                    flat += a.flat()
                    device = a.device if a.device != "cpu" else device
                else:
                    flat.append(a)
            if device != "cpu":
                if "gpu" not in kernels:
                    from triton.runtime.jit import JITFunction
                    kernels["gpu"] = JITFunction(python_fn)
                with _on_device(int(device.split(":")[1])), compiled_library():
                    kernels["gpu"][grid](*flat, num_warps=options["num_warps"], num_stages=options["num_stages"],
                                         enable_fp_fusion=True)
            else:
                if "interp" not in kernels:
                    kernels["interp"] = host_interpreter(interpreted_fn())
                kernels["interp"](grid, flat)

        return Compiled(source, run, {"path": str(path), "symbol": symbol})

    def prepare(self, arg: Any, name: str) -> Any:
        if isinstance(arg, (int, float, bool)) or not hasattr(arg, "shape"):
            return arg
        return tensor_arg(arg, name)


def _on_device(index: int):
    """Make the arrays' GPU current for the launch (Triton launches on the current device)."""
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.device(index)
    except ImportError:
        pass
    import cupy
    return cupy.cuda.Device(index)


BACKEND = TritonBackend()
