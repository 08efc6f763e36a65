"""Compile generated CUDA C without a GPU: NVRTC (the nvidia-cuda-nvrtc wheel, loaded with
ctypes; CuPy's own compile path wants a device), else the machine's nvcc. Returns the PTX, the
cubin and ptxas' resource report as data.

CUDA headers (cuda_fp16.h, cuda_bf16.h, mma.h) are not in the NVRTC wheel; they are looked up in
``$TILEC_CUDA_INCLUDE``, ``$CUDA_HOME``/``$CUDA_PATH``, beside nvcc and under /usr/local/cuda*.
Reports are cached as JSON under ``$TILEC_CACHE_DIR/cuda-ptxas``.
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import TilecError
from ...runtime.cache import atomic_write, cache_dir, seed_from_read_only


@dataclass(frozen=True)
class CompileReport:
    arch: str
    registers: int
    spills_bytes: int          # spill stores + spill loads
    shared_bytes: int
    barriers: int
    ptx: str
    log: str
    stack_bytes: int = 0
    compiler: str = ""
    cubin_bytes: int = 0
    dynamic_shared_bytes: int = 0  # requested at launch (arenas over 48 KiB); ptxas reports static only


def include_dirs() -> list[str]:
    roots = [os.environ.get("TILEC_CUDA_INCLUDE", "")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            roots.append(os.path.join(os.environ[var], "include"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..", "include"))
    roots += ["/usr/local/cuda/include"] + sorted(glob.glob("/usr/local/cuda-*/include"), reverse=True)
    return [os.path.normpath(r) for r in roots if r and os.path.exists(os.path.join(r, "cuda_fp16.h"))]


def _nvrtc_candidates() -> list[str]:
    out = []
    for base in sys.path:
        for sub in ("cu13", "cu12", "cuda_nvrtc"):
            out += sorted(glob.glob(os.path.join(base, "nvidia", sub, "lib", "libnvrtc.so*")))
    out += ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    return [p for p in out if "builtins" not in p]


_nvrtc = None
_nvrtc_lock = threading.Lock()


def nvrtc():
    """The NVRTC library, or None."""
    global _nvrtc
    with _nvrtc_lock:
        if _nvrtc is None:
            for path in _nvrtc_candidates():
                try:
                    _nvrtc = ctypes.CDLL(path)
                    break
                except OSError:
                    continue
            else:
                _nvrtc = False
        return _nvrtc or None


def available() -> str | None:
    """Why offline compilation cannot run here, or None."""
    if nvrtc() is None and shutil.which("nvcc") is None:
        return "offline CUDA compilation needs NVRTC (pip install nvidia-cuda-nvrtc) or nvcc"
    if not include_dirs():
        return ("offline CUDA compilation needs the CUDA headers (cuda_fp16.h, mma.h); set TILEC_CUDA_INCLUDE "
                "or CUDA_HOME")
    return None


def _compile_nvrtc(lib, source: str, arch: str, incs: list[str]) -> tuple[str, bytes, str]:
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"tilec_kernel.cu", 0, None, None)
    if rc:
        raise TilecError(f"nvrtcCreateProgram failed with code {rc}")
    try:
        opts = [f"--gpu-architecture={arch}", "-std=c++17", "-Xptxas", "-v"] + \
            [f"-I{d}" for d in incs]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if rc:
            raise TilecError(f"NVRTC could not compile the kernel for {arch}:\n{log[-4000:]}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return ptx.value.decode(errors="replace"), cubin.raw, log
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _compile_nvcc(source: str, arch: str, incs: list[str]) -> tuple[str, bytes, str]:
    nvcc = shutil.which("nvcc")
    with tempfile.TemporaryDirectory(prefix="tilec-nvcc-") as d:
        cu = Path(d) / "tilec_kernel.cu"
        cu.write_text(source)
        base = [nvcc, f"-arch={arch}", "-std=c++17"] + [f"-I{i}" for i in incs]
        done = subprocess.run(base + ["-cubin", "-Xptxas", "-v", "-o", str(Path(d) / "k.cubin"), str(cu)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise TilecError(f"nvcc could not compile the kernel for {arch}:\n{done.stderr[-4000:]}")
        ptx_done = subprocess.run(base + ["-ptx", "-o", str(Path(d) / "k.ptx"), str(cu)], capture_output=True,
                                  text=True, check=False)
        ptx = (Path(d) / "k.ptx").read_text() if ptx_done.returncode == 0 else ""
        return ptx, (Path(d) / "k.cubin").read_bytes(), done.stdout + done.stderr


def parse_ptxas(log: str) -> dict:
    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0
    return {"registers": grab(r"Used (\d+) registers"),
            "spills_bytes": grab(r"(\d+) bytes spill stores") + grab(r"(\d+) bytes spill loads"),
            "shared_bytes": grab(r"(\d+) bytes smem"),
            "barriers": grab(r"used (\d+) barriers"),
            "stack_bytes": grab(r"(\d+) bytes stack frame")}


def compile_source(source: str, arch: str, prefer: str = "nvrtc") -> CompileReport:
    """Compile for ``arch`` (e.g. "sm_80"); cached by the hash of source, arch and compiler."""
    why = available()
    if why:
        raise TilecError(why)
    incs = include_dirs()
    lib = nvrtc() if prefer == "nvrtc" else None
    which = "nvrtc" if lib is not None else "nvcc"
    if which == "nvrtc":
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        tool = f"nvrtc {major.value}.{minor.value}"
    else:
        tool = "nvcc " + subprocess.run([shutil.which("nvcc"), "--version"], capture_output=True,
                                        text=True, check=False).stdout.strip().splitlines()[-1]
    digest = hashlib.sha256("\0".join([source, arch, tool, *incs]).encode()).hexdigest()[:24]
    path = cache_dir() / "cuda-ptxas" / f"{arch}_{digest}.json"
    seed_from_read_only([path])
    if path.exists():
        try:
            return CompileReport(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    ptx, cubin, log = _compile_nvrtc(lib, source, arch, incs) if which == "nvrtc" else \
        _compile_nvcc(source, arch, incs)
    report = CompileReport(arch=arch, ptx=ptx, log=log, compiler=tool, cubin_bytes=len(cubin), **parse_ptxas(log))
    atomic_write(path, json.dumps(asdict(report)))
    return report
