"""The CUDA C backend: renders CUDA C from tile IR, compiles it offline (NVRTC/nvcc) for a
resource report, runs it on a GPU through CuPy when the arrays live there, and on the CPU
through the g++ emulator when they are host arrays (tests and CI)."""
from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import TilecError
from ...ir import Function
from ...runtime.arrays import describe, host_view
from ..base import Backend, Compiled, Option
from . import emulation, gpu, limits, offline
from .args import kernel_arguments
from .offline import CompileReport
from .renderer import CudaRenderer, kernel_symbol
from .resources import estimate_resources

EMULATED_ARCH = "sm_80"   # the limits a CPU-emulated launch is held to


class CudaBackend(Backend):
    name = "cuda"
    device = "cuda"
    extra = "cuda"
    options = {
        "threads": Option(128, (), "threads per block: a power of two from 32 to the arch's limit (1024)"),
        "mma": Option("simt", ("simt", "wmma"), ("tc.dot on CUDA cores (SIMT) or tensor cores via WMMA "
                                                 "(f16/bf16 tiles with 16-multiple extents; others stay SIMT)")),
        "min_blocks": Option(1, (1, 2, 3, 4), "blocks per SM that __launch_bounds__ promises: more caps registers "
                                              "(occupancy) and may make ptxas spill; 1 leaves it free"),
    }

    def accepts(self, device: str) -> bool:
        return True  # CUDA arrays on the GPU; host arrays through the C++ emulator (tests)

    def space_params(self):
        from ...space import Param
        return [Param("threads", (64, 128, 256), "threads per block"),
                Param("mma", ("simt", "wmma"), "tc.dot on CUDA cores or tensor cores (f16/bf16)")]

    def missing(self) -> str | None:
        if gpu.missing() is None or emulation.missing() is None:
            return None
        return f"the cuda backend needs CuPy with a GPU, or g++ for CPU emulation ({gpu.missing()})"

    # -- text and resources ---------------------------------------------------------------------
    def render(self, fn: Function, options: dict) -> str:
        return CudaRenderer(fn, self._full(options)).render()

    def estimate_resources(self, fn: Function, options: dict) -> dict:
        return estimate_resources(fn, self._full(options))

    def check(self, fn: Function, options: dict, arch: str, profile: Any = None) -> dict:
        """The resource estimate, after rejecting configs over the limits of ``arch`` (or of a
        hardware profile) before anything is compiled."""
        options = self._full(options)
        threads = int(options["threads"])
        lim = limits.limits_for(arch, profile)
        limits.check(arch, threads, 0, f"kernel {fn.name}", profile)  # threads first: planning needs them sane
        est = estimate_resources(fn, options)
        limits.check(arch, threads, est["shared_bytes"], f"kernel {fn.name}", profile)
        est["limits"] = lim._asdict()
        return est

    def reasons(self, fn: Function, options: dict, arch: str, profile: Any = None) -> list[str]:
        """Why a config should not be tried on ``arch`` (empty when it should): over a hard limit,
        or so many registers estimated that ptxas would likely spill. For tuner constraints."""
        try:
            est = self.check(fn, options, arch, profile)
        except TilecError as e:
            return [e.message]
        if est["may_spill"]:
            return [f"kernel {fn.name}: ~{est['registers']} registers per thread estimated against a cap of "
                    f"{est['register_cap']} ({est['threads']} threads, min_blocks={self._full(options)['min_blocks']})"
                    f" - likely to spill; use more threads or smaller tiles"]
        return []

    def compile_offline(self, fn: Function, options: dict, arch: str, profile: Any = None) -> CompileReport:
        """Compile for ``arch`` without a GPU; the ptxas report comes back as data."""
        est = self.check(fn, options, arch, profile)
        report = offline.compile_source(self.render(fn, options), arch)
        if est["dynamic_shared"]:
            report = dataclasses.replace(report, dynamic_shared_bytes=est["shared_bytes"])
        return report

    def show(self, fn: Function, options: dict, arch: str | None = None) -> str:
        """The source, then the predicted resources and, for ``arch``, what ptxas reports
        (``tilec show OP --backend cuda --arch sm_XX``)."""
        est = self.estimate_resources(fn, options)
        summary = (f"// estimate: shared memory {est['shared_bytes']} bytes, ~{est['registers']} registers/thread, "
                   f"{est['barriers']} barrier(s), {est['threads']} threads")
        lines = [self.render(fn, options).rstrip(), "", summary]
        if arch is not None:
            rep = self.compile_offline(fn, options, arch)
            lines.append(f"// ptxas ({rep.compiler}, {arch}): {rep.registers} registers, {rep.spills_bytes} bytes "
                         f"spilled, {rep.stack_bytes} bytes stack, {rep.shared_bytes} bytes shared memory "
                         f"(+{rep.dynamic_shared_bytes} dynamic), {rep.barriers} barrier(s)")
        return "\n".join(lines) + "\n"

    # -- running ----------------------------------------------------------------------------------
    def compile(self, fn: Function, options: dict) -> Compiled:
        options = self._full(options)
        renderer = CudaRenderer(fn, options)
        source = renderer.render()
        params = renderer.params
        symbol = kernel_symbol(fn)
        threads = int(options["threads"])
        names = [p.hint for p in fn.params]
        built: dict[str, Any] = {}

        def run(grid: tuple[int, int, int], args: list[Any]) -> None:
            on_gpu = [a for a in args if hasattr(a, "shape") and _on_gpu(a)]
            values = kernel_arguments(params, args, names)
            if on_gpu:
                index = int(describe(on_gpu[0]).device.split(":")[1])
                key = f"gpu{index}"  # a module is loaded per device
                if key not in built:
                    est = self.check(fn, options, _known_arch(gpu.device_arch(index)))
                    dynamic = est["shared_bytes"] if est["dynamic_shared"] else 0
                    built[key] = gpu.GpuKernel(source, symbol, threads, index, dynamic)
                torch_args = any(type(a).__module__.startswith("torch") for a in on_gpu)
                built[key](grid, values, torch_args)
            else:
                if "emu" not in built:
                    self.check(fn, options, EMULATED_ARCH)
                    built["emu"] = emulation.build(source, symbol, params, threads)
                built["emu"](grid, values)

        return Compiled(source, run, {"symbol": symbol, "threads": threads})

    def prepare(self, arg: Any, name: str) -> Any:
        if isinstance(arg, (int, float, bool)) or not hasattr(arg, "shape"):
            return arg
        if _on_gpu(arg):
            return arg
        return host_view(arg, name)

    def _full(self, options: dict) -> dict:
        return {k: options.get(k, opt.default) for k, opt in self.options.items()}


def _on_gpu(x: Any) -> bool:
    try:
        return describe(x).device != "cpu"
    except TilecError:
        return False


def _known_arch(arch: str) -> str:
    # newer GPUs share these per-block limits; hold them to the newest table entry
    return arch if arch in limits.ARCHS else limits.ARCHS[-1]


BACKEND = CudaBackend()
