"""Compile generated Triton source for a GPU architecture on a machine without a GPU, and
report what the cost model and the tuner's feasibility checks need: shared memory (Triton's
metadata), registers and spills (``ptxas -v`` on the PTX, with the flags Triton itself uses).

The offline signature assumes what a typical launch looks like: pointers 16-byte aligned and
the innermost stride 1 (row-major tensors), which is what Triton specializes on at run time.
Reports are cached as JSON under the tilec cache, keyed by source, options, arch and tool
versions.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ...errors import ConfigError, TilecError
from ...ir import Function
from ...runtime.cache import atomic_write
from . import source as src
from .interpreter import compiled_library
from .options import resolve
from .renderer import SIG_TYPE, kernel_symbol, render, tensor_arg_names

# Opt-in shared memory per block (bytes) and registers per SM, from the CUDA Programming
# Guide (see shared/reference/hardware-facts.md): sm_80 163 KB, sm_86/sm_89 99 KB, sm_90 227 KB.
ARCH_LIMITS = {80: {"shared_bytes": 163 * 1024, "registers_per_sm": 65536},
               86: {"shared_bytes": 99 * 1024, "registers_per_sm": 65536},
               89: {"shared_bytes": 99 * 1024, "registers_per_sm": 65536},
               90: {"shared_bytes": 227 * 1024, "registers_per_sm": 65536}}


@dataclass(frozen=True)
class CompileReport:
    arch: str                 # "sm_80"
    kernel: str
    num_warps: int
    num_stages: int
    shared_bytes: int         # dynamic shared memory Triton asks for at launch
    registers: int            # per thread
    spill_store_bytes: int
    spill_load_bytes: int
    stack_bytes: int
    ptx_lines: int
    shared_limit_bytes: int
    triton_version: str
    ptxas_log: str = ""

    @property
    def spills_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    @property
    def threads(self) -> int:
        return 32 * self.num_warps

    def problems(self) -> list[str]:
        """Why this kernel would fail or run badly on the arch (empty when it is fine)."""
        out = []
        if self.shared_bytes > self.shared_limit_bytes:
            out.append(f"needs {self.shared_bytes} B of shared memory, {self.arch} allows {self.shared_limit_bytes}")
        if self.spills_bytes:
            out.append(f"spills {self.spill_store_bytes} B stores / {self.spill_load_bytes} B loads to local memory")
        return out

    @property
    def feasible(self) -> bool:
        return not self.problems()

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(spills_bytes=self.spills_bytes, feasible=self.feasible)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> CompileReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        return (f"{self.arch}: {self.kernel} num_warps={self.num_warps} num_stages={self.num_stages} | "
                f"shared {self.shared_bytes} B (limit {self.shared_limit_bytes}) | registers {self.registers} | "
                f"spills {self.spill_store_bytes} B st / {self.spill_load_bytes} B ld | stack {self.stack_bytes} B | "
                f"PTX {self.ptx_lines} lines"
                + ("" if self.feasible else " | NOT FEASIBLE: " + "; ".join(self.problems())))


def parse_arch(arch: str | int) -> int:
    """``"sm_80"``, ``"sm80"``, ``"80"`` or ``80`` -> 80."""
    m = re.fullmatch(r"(?:sm_?)?(\d{2,3})a?", str(arch).strip().lower())
    if not m or int(m.group(1)) not in ARCH_LIMITS:
        raise ConfigError(f"unknown CUDA arch {arch!r}; the triton backend compiles for "
                          f"{', '.join(f'sm_{a}' for a in ARCH_LIMITS)}")
    return int(m.group(1))


def signature(fn: Function, aligned: bool = True) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) for ``ASTSource``, specialized as Triton specializes a
    typical launch: the innermost stride is the constant 1, pointers are 16-byte aligned and,
    when ``aligned``, extents and outer strides are multiples of 16 (what lets Triton vectorize
    rows and pipeline loads through shared memory)."""
    sig, consts, attrs = {}, {}, {}
    index = 0
    sixteen = [["tt.divisibility", 16]]
    for p, base, shapes, strides in tensor_arg_names(fn):
        if p.is_tensor:
            sig[base] = "*" + SIG_TYPE[p.dtype.name]
            attrs[(index,)] = sixteen
            index += 1
            for s in shapes:
                sig[s] = "i32"
                if aligned:
                    attrs[(index,)] = sixteen
                index += 1
            for i, s in enumerate(strides):
                if i == len(strides) - 1:
                    sig[s] = "constexpr"
                    consts[s] = 1
                else:
                    sig[s] = "i32"
                    if aligned:
                        attrs[(index,)] = sixteen
                index += 1
        else:
            sig[base] = SIG_TYPE[p.dtype.name]
            index += 1
    return sig, consts, attrs


def _ptxas(capability: int) -> tuple[str, str]:
    """(ptxas path, --gpu-name) as Triton uses them for this capability."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
        return get_ptxas(capability).path, sm_arch_from_capability(capability)
    except Exception:  # an older/newer triton layout: fall back to the toolkit's ptxas
        path = shutil.which("ptxas")
        if not path:
            raise TilecError("no ptxas found to measure registers and spills (install the CUDA toolkit)") from None
        return path, f"sm_{capability}{'a' if capability >= 90 else ''}"


_PTXAS_PATTERNS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
}


def parse_ptxas_log(log: str) -> dict[str, int]:
    out = {}
    for key, pattern in _PTXAS_PATTERNS.items():
        m = pattern.search(log)
        if m is None:
            raise TilecError(f"could not read {key} from the ptxas log:\n{log}")
        out[key] = int(m.group(1))
    return out


def run_ptxas(ptx: str, capability: int) -> str:
    path, gpu_name = _ptxas(capability)
    with tempfile.TemporaryDirectory(prefix="tilec-ptxas-") as tmp:
        ptx_path = Path(tmp) / "kernel.ptx"
        ptx_path.write_text(ptx)
        cmd = [path, "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_name}", str(ptx_path), "-o",
               str(Path(tmp) / "kernel.cubin")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TilecError(f"ptxas failed for {gpu_name} ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout + done.stderr


def compile_offline(fn: Function, options: dict | None, arch: str | int, *, aligned: bool = True,
                    use_cache: bool = True) -> CompileReport:
    """Compile ``fn`` for ``arch`` (sm_80, sm_89, sm_90, ...) without a GPU and report its
    resources. ``aligned=False`` compiles for arbitrary extents and strides (no 16-multiples)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    capability = parse_arch(arch)
    options = resolve(fn, dict(options or {}))
    source = render(fn, options)
    sig, consts, attrs = signature(fn, aligned)
    key = hashlib.sha256(json.dumps([source, sig, sorted(consts.items()), aligned, capability, options,
                                     triton.__version__], sort_keys=True, default=str).encode()).hexdigest()[:20]
    report_path = src.triton_dir() / "reports" / f"{kernel_symbol(fn)}_sm{capability}_{key}.json"
    if use_cache and report_path.exists():
        try:
            return CompileReport.from_dict(json.loads(report_path.read_text()))
        except (ValueError, TypeError):
            report_path.unlink(missing_ok=True)  # a damaged report is rebuilt
    src.use_tilec_cache_for_triton()
    module, _ = src.load(kernel_symbol(fn), source)
    jit_fn = JITFunction(src.python_function(module, kernel_symbol(fn)))
    try:
        with compiled_library():
            compiled = triton.compile(ASTSource(jit_fn, sig, constexprs=consts, attrs=attrs),
                                      target=GPUTarget("cuda", capability, 32),
                                      options={"num_warps": options["num_warps"],
                                               "num_stages": options["num_stages"], "enable_fp_fusion": True})
    except Exception as e:
        raise TilecError(f"triton could not compile {fn.name} for sm_{capability} "
                         f"({', '.join(f'{k}={v}' for k, v in {**fn.constexprs, **options}.items())}): "
                         f"{type(e).__name__}: {str(e)[-2000:]}") from None
    ptx = compiled.asm["ptx"]
    log = run_ptxas(ptx, capability)
    report = CompileReport(arch=f"sm_{capability}", kernel=kernel_symbol(fn), num_warps=options["num_warps"],
                           num_stages=options["num_stages"], shared_bytes=int(compiled.metadata.shared),
                           ptx_lines=ptx.count("\n"), shared_limit_bytes=ARCH_LIMITS[capability]["shared_bytes"],
                           triton_version=triton.__version__, ptxas_log=log.strip(), **parse_ptxas_log(log))
    atomic_write(report_path, json.dumps(report.to_dict(), indent=1, sort_keys=True))
    return report
