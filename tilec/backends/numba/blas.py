"""The BLAS that kernels call: scipy's OpenBLAS, reached through Numba's C helpers
(numba_xxgemm / numba_xxgemv, which fetch their function pointers from
scipy.linalg.cython_blas on first use), and held to one thread while programs run."""
from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from threadpoolctl import ThreadpoolController

_CYTHON_BLAS = "scipy.linalg.cython_blas"


class _OneBlasThread:
    """The kernels' BLAS set to one thread for the duration, through the libraries' own
    get/set functions found once (~1 us; ``threadpool_limits`` rescans the loaded libraries on
    every call, and threadpoolctl's per-call wrappers took ~8 us of a 64^3 GEMM)."""

    def __init__(self):
        self.calls = [_thread_calls(lib) for lib in _numba_blas()]

    def limit(self) -> list:
        """Set one thread; returns the counts to restore."""
        before = [get() for get, _ in self.calls]
        for _, set_threads in self.calls:
            set_threads(1)
        return before

    def restore(self, before: list) -> None:
        for (_, set_threads), n in zip(self.calls, before):
            if n != 1:
                set_threads(n)


def _thread_calls(lib) -> tuple:
    """(get, set) of a BLAS's thread count: OpenBLAS's own symbols when it runs its own
    threads, else threadpoolctl's methods."""
    if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "pthreads":
        get, put = lib._get_symbol("openblas_get_num_threads"), lib._get_symbol("openblas_set_num_threads")
        if get is not None and put is not None:
            return get, put
    return lib.get_num_threads, lib.set_num_threads


@functools.cache
def one_blas_thread() -> _OneBlasThread:
    """The process's one-thread guard, made on first use (it loads the BLAS)."""
    return _OneBlasThread()


@functools.cache
def _numba_blas() -> list:
    """threadpoolctl's controllers of the BLAS that kernels call: scipy's. NumPy's own copy is
    left alone: setting its threads too doubled the cost of each launch. All BLAS libraries
    when none lies in scipy's package (a shared system BLAS)."""
    _load_helpers()
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    home = str(_scipy_home().resolve())        # .../scipy: also matches .../scipy.libs
    own = [lib for lib in libs if str(Path(lib.filepath).resolve()).startswith(home)]
    return own or libs


def _scipy_home() -> Path:
    spec = importlib.util.find_spec("scipy")     # finds the package without running its __init__
    return Path(list(spec.submodule_search_locations)[0])


def _load_helpers() -> None:
    """Let Numba's BLAS helpers fetch sgemm and sgemv without importing the scipy.linalg
    package, whose __init__ took as long as the rest of a warm process's first GEMM: the
    helpers need only the cython_blas extension's capsules. The extension is loaded alone
    under its own name, the helpers are called once with empty sizes (which fetches and keeps
    their pointers), and the name is released again, so a later ``import scipy.linalg`` runs
    as usual. Anything unexpected falls back to the plain import."""
    if _CYTHON_BLAS in sys.modules:
        return
    try:
        [path] = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
                  for p in (_scipy_home() / "linalg").glob(f"cython_blas{suffix}")]
        loader = importlib.machinery.ExtensionFileLoader(_CYTHON_BLAS, str(path))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(_CYTHON_BLAS, loader))
        sys.modules[_CYTHON_BLAS] = module
        try:
            loader.exec_module(module)
            fetched = _call_helpers_empty()
        finally:
            del sys.modules[_CYTHON_BLAS]
    except Exception:        # an unusual scipy layout: the package's own import path
        fetched = False
    if not fetched:
        import scipy.linalg.cython_blas  # noqa: F401


def _call_helpers_empty() -> bool:
    """numba_xxgemm / numba_xxgemv on 0-size float32 operands: a no-op BLAS call that makes
    each helper fetch its function pointer. True when both found theirs."""
    from numba import _helperlib
    c = ctypes
    size, ptr = c.c_ssize_t, c.c_void_p
    one, zero, buf = c.c_float(1.0), c.c_float(0.0), (c.c_float * 1)()
    gemm = c.CFUNCTYPE(c.c_int, c.c_char, c.c_char, c.c_char, size, size, size, ptr, ptr, size, ptr, size,
                       ptr, ptr, size)(_helperlib.c_helpers["xxgemm"])
    gemv = c.CFUNCTYPE(c.c_int, c.c_char, c.c_char, size, size, ptr, ptr, size, ptr, ptr,
                       ptr)(_helperlib.c_helpers["xxgemv"])
    ok_gemm = gemm(b"s", b"n", b"n", 0, 0, 0, c.byref(one), buf, 1, buf, 1, c.byref(zero), buf, 1) == 0
    ok_gemv = gemv(b"s", b"n", 0, 0, c.byref(one), buf, 1, buf, c.byref(zero), buf) == 0
    if not (ok_gemm and ok_gemv):
        c.pythonapi.PyErr_Clear()      # a helper that found no pointer left its ImportError set
    return ok_gemm and ok_gemv
