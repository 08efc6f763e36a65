"""CPU emulation of generated CUDA C, for correctness tests without a GPU.

The very same ``.cu`` text is compiled by g++ (C++20) with ``tilec_emulation.h`` force-included,
plus a small driver that unpacks a ``void**`` argument array into the kernel's parameters and
runs the grid (``tilec_emu::run_grid``: one std::thread per CUDA thread, blocks in turn). The
shared object is cached under ``$TILEC_CACHE_DIR/cuda-emu`` by the hash of everything that went
into it, and its SHA-256 is checked against a manifest before it is loaded.

It is slow (every ``__syncthreads`` is a barrier over real threads): keep shapes and
``threads`` small.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ....errors import TilecError
from ....runtime.cache import Manifest, atomic_write, cache_dir
from ..renderer import Param

HEADER = Path(__file__).with_name("tilec_emulation.h")
_CTYPES = {"int": ctypes.c_int, "long long": ctypes.c_longlong, "float": ctypes.c_float, "double": ctypes.c_double,
           "bool": ctypes.c_bool, "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte,
           "short": ctypes.c_short, "unsigned short": ctypes.c_ushort, "unsigned int": ctypes.c_uint}
_lock = threading.Lock()
_loaded: dict[str, EmulatedKernel] = {}


def compiler() -> str | None:
    return shutil.which("g++")


def missing() -> str | None:
    if compiler() is None:
        return "the CUDA emulator needs g++ (C++20, GCC 11 or newer) on PATH"
    return None


def driver_source(kernel_file: str, symbol: str, params: Sequence[Param], threads: int) -> str:
    unpack = ",\n      ".join(f"*reinterpret_cast<{p.ctype}*>(args[{k}])" for k, p in enumerate(params))
    return (f'#include "{kernel_file}"\n\n'
            f'extern "C" int tilec_launch(unsigned int gx, unsigned int gy, unsigned int gz, void** args) {{\n'
            f"  return tilec_emu::run_grid(dim3(gx, gy, gz), {threads}u, [args] {{\n"
            f"    {symbol}(\n      {unpack});\n"
            f"  }});\n}}\n")


class EmulatedKernel:
    def __init__(self, path: Path, params: Sequence[Param]):
        self.lib = ctypes.CDLL(str(path))
        self.fn = self.lib.tilec_launch
        self.fn.restype = ctypes.c_int
        self.fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        self.params = list(params)

    def __call__(self, grid: tuple[int, int, int], values: Sequence[tuple[str, Any]]) -> None:
        boxes = []
        for ctype, value in values:
            if ctype.endswith("*"):
                boxes.append(ctypes.c_void_p(value))
            else:
                boxes.append(_CTYPES[ctype](value))
        arr = (ctypes.c_void_p * max(1, len(boxes)))(*[ctypes.cast(ctypes.pointer(b), ctypes.c_void_p) for b in boxes])
        if self.fn(*grid, arr) != 0:
            raise TilecError("the CUDA emulator rejected the launch (threads must be a multiple of 32)")


FLAGS = ["-std=c++20", "-O1", "-pthread", "-fPIC", "-w"]


def _own_tmp(target: Path) -> Path:
    """Where this process and thread builds ``target`` before renaming it into place: processes
    sharing a cache (test workers) build the same file at once, and with one shared temporary
    name the first rename took the other's output away."""
    return target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def _precompiled_header(cxx: str, header: str, version: str) -> Path:
    """A copy of the header with its precompiled form beside it (g++ picks up ``.gch``
    automatically), which halves each kernel's compile time. Verified by hash before use."""
    digest = hashlib.sha256("\0".join([header, version, *FLAGS]).encode()).hexdigest()[:16]
    folder = cache_dir() / "cuda-emu" / f"pch-{digest}"
    copy, gch = folder / HEADER.name, folder / (HEADER.name + ".gch")
    manifest = Manifest(folder / "pch.manifest.json")
    recorded = manifest.read() or {}
    if copy.exists() and gch.exists() and gch.name in recorded and not manifest.damaged([copy, gch]):
        return copy
    atomic_write(copy, header)
    tmp = _own_tmp(gch)
    done = subprocess.run([cxx, *FLAGS, "-x", "c++-header", str(copy), "-o", str(tmp)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        return HEADER  # compile without the precompiled header
    tmp.replace(gch)
    manifest.write([copy, gch])
    return copy


def build(source: str, symbol: str, params: Sequence[Param], threads: int) -> EmulatedKernel:
    """Compile (or reuse from the cache) and load the emulated kernel."""
    cxx = compiler()
    if cxx is None:
        raise TilecError(missing())
    header = HEADER.read_text()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    digest = hashlib.sha256("\0".join([source, header, symbol, repr(params), str(threads), version]).encode()
                            ).hexdigest()[:20]
    folder = cache_dir() / "cuda-emu"
    stem = f"{symbol[:60]}_{digest}"
    so = folder / f"{stem}.so"
    with _lock:
        if stem in _loaded:
            return _loaded[stem]
        manifest = Manifest(folder / f"{stem}.manifest.json")
        recorded = manifest.read() or {}
        if not so.exists() or so.name not in recorded or manifest.damaged([so]):
            cu = folder / f"{stem}.cu"
            atomic_write(cu, source)
            drv = folder / f"{stem}.driver.cpp"
            atomic_write(drv, driver_source(cu.name, symbol, params, threads))
            tmp = _own_tmp(so)
            cmd = [cxx, *FLAGS, "-shared", "-include", str(_precompiled_header(cxx, header, version)),
                   "-o", str(tmp), str(drv)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, check=False)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise TilecError(f"the CUDA emulator could not compile {cu}:\n{done.stderr[-4000:]}")
            tmp.replace(so)
            manifest.write([so])
        kernel = EmulatedKernel(so, params)
        _loaded[stem] = kernel
        return kernel
