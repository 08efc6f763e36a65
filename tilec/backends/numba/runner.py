"""Compile rendered Numba source through a file in the cache (so Numba's own disk cache can
serve later processes) and launch it over the grid."""
from __future__ import annotations

import functools

import hashlib
import importlib.util
import os
import sys
import threading
from contextlib import contextmanager, nullcontext
import warnings
from pathlib import Path
from typing import Any

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from ...ir import Function
from ...runtime.arrays import host_view
from ...runtime.cache import Manifest, atomic_write, cache_dir, read_only_twin, seed_from_read_only
from ..base import Backend, Compiled, Option
from .renderer import kernel_symbol, render

_lock = threading.Lock()
# Generated kernels call into support.py (rt.row_max, rt.matmul_into, ...) and Numba compiles
# those calls into the kernel's own cached machine code, without tracking support.py: its
# content is part of every kernel's cache key, so a change there is never served stale.
_SUPPORT_DIGEST = hashlib.sha256((Path(__file__).parent / "support.py").read_bytes()).hexdigest()[:16]


class NumbaBackend(Backend):
    name = "numba"
    device = "cpu"
    options = {
        "dot": Option("blas", ("blas", "loops"), "tc.dot as np.dot on the tile (BLAS) or as a loop nest"),
        "parallel": Option(True, (True, False), "spread programs over CPU threads (NUMBA_NUM_THREADS)"),
    }

    def render(self, fn: Function, options: dict) -> str:
        return render(fn, options)

    def space_params(self):
        from ...space import Param
        return [Param("dot", self.options["dot"].choices, self.options["dot"].doc)]

    def compile(self, fn: Function, options: dict) -> Compiled:
        source = self.render(fn, options)
        module, path, record_overloads = _cached_module(kernel_symbol(fn), source)
        kernel = getattr(module, kernel_symbol(fn))
        parallel = options["parallel"]
        uses_blas = options["dot"] == "blas" and any(op.kind == "dot" for op in fn.walk())

        def run(grid: tuple[int, int, int], args: list[Any]) -> None:
            # BLAS called from the program threads must not spawn threads of its own. Not even
            # for a lone program: scipy's OpenBLAS workers would then spin for ~0.1 s after each
            # call, and a NumPy matmul in that window ran 6x slower against them on 2 cores.
            if uses_blas:
                with _one_blas_thread():
                    _run_programs(kernel, parallel, grid, args)
            else:
                _run_programs(kernel, parallel, grid, args)
            record_overloads(kernel)

        return Compiled(source, run, {"path": str(path), "module": module.__name__})

    def prepare_scalar(self, value: Any, dtype) -> Any:
        return dtype.numpy.type(value)  # typed, so a Python float is fp32 in the kernel, not fp64

    def prepare(self, arg: Any, name: str) -> Any:
        if isinstance(arg, (int, float, bool)) or not hasattr(arg, "shape"):
            return arg
        return host_view(arg, name)


def _run_programs(kernel, parallel: bool, grid: tuple[int, int, int], args: list[Any]) -> None:
    """Run all grid programs: on the calling thread when there is one program or one thread,
    else as about four runs of programs per Numba thread, which the threads of the one prange
    in ``over_threads`` take from a shared counter (so a thread that gets less of its core, to
    another library's spinning workers or uneven programs, takes fewer runs). Numba's OpenMP
    workers wait for the next launch spinning: a Python thread pool's sleeping workers took
    50-150 us to wake on this VM, longer than a whole 1024^2 GEMV."""
    total = grid[0] * grid[1] * grid[2]
    n = min(numba.get_num_threads(), total) if parallel and not _forked else 1
    if n <= 1:
        kernel(0, total, *grid, *args)
        return
    size = -(-total // (4 * n))
    address = _kernel_address(kernel, grid, args)
    over_threads = _over_threads()
    with _launch_guard():
        over_threads(address, n, size, total, *grid, *args)


_addresses: dict[tuple, int] = {}


def _kernel_address(kernel, grid: tuple, args: list[Any]) -> int:
    """The native entry of the kernel's specialization for these arguments, compiled (or loaded
    from Numba's cache) for exactly the types Numba gives them."""
    key = (kernel, *(_numba_kind(a) for a in args))
    address = _addresses.get(key)
    if address is None:
        signature = tuple(numba.typeof(a) for a in (0, 0, *grid, *args))
        kernel.compile(signature)
        cres = kernel.overloads[signature]
        address = _addresses[key] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    return address


def _numba_kind(a: Any) -> Any:
    """What decides the Numba type of a prepared argument (arrays: dtype, rank, layout, flags)."""
    if type(a) is np.ndarray:
        f = a.flags
        return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned
    return type(a)


_OVER_THREADS = """# Generated by tilec {version} (numba backend): runs of a kernel's programs over Numba's threads
import numba
import numpy as np
from tilec.backends.numba.support import call_at, fetch_add


@numba.njit(cache=True, nogil=True, parallel=True)
def over_threads(kernel_address, threads, run_size, programs, grid0, grid1, grid2, *args):
    taken = np.empty(1, np.int64)
    taken[0] = 0
    for _ in numba.prange(threads):       # one iteration per thread, each taking runs until none is left
        while True:
            first = fetch_add(taken, run_size)
            if first >= programs:
                break
            call_at(kernel_address, (first, min(first + run_size, programs), grid0, grid1, grid2) + args)
"""


@functools.cache
def _over_threads():
    """The prange that runs kernels (one module in the cache, compiled once per argument types:
    ~0.4 s, shared by every config of a kernel), its Numba files checked like a kernel's."""
    from ... import __version__
    module, _, record_overloads = _cached_module(
        "over_threads", _OVER_THREADS.format(version=__version__))
    dispatcher = module.over_threads

    def run(*args) -> None:
        dispatcher(*args)
        record_overloads(dispatcher)

    return run


def _cached_module(stem: str, source: str):
    """Import generated source through a file in the cache named by its content (written, or its
    damaged Numba files dropped, first). Also returns the file's path and a function to call after
    each run of one of its dispatchers: a new specialization (e.g. another array layout) rewrote
    Numba's index, so the manifest records the module's files again."""
    digest = hashlib.sha256(f"{source}|numba {numba.__version__}|py {sys.version}|support {_SUPPORT_DIGEST}"
                            .encode()).hexdigest()[:16]
    name = f"{stem}_{digest}"
    folder = cache_dir() / "numba"
    path = folder / f"{name}.py"
    manifest = Manifest(folder / f"{name}.manifest.json")
    with _lock:
        _seed(path, manifest)
        _ensure_source(path, source, manifest)
        module = _import(name, path)
    recorded = {}

    def record_overloads(dispatcher) -> None:
        if len(dispatcher.overloads) != recorded.get(dispatcher):
            manifest.write([path, *_numba_files(path)])
            recorded[dispatcher] = len(dispatcher.overloads)

    return module, path, record_overloads


_layer_lock = threading.Lock()


def _launch_guard():
    """Numba's workqueue threading layer (no OpenMP or TBB installed) aborts the process when two
    threads launch at once: launches then take turns. OpenMP and TBB run them side by side."""
    try:
        layer = numba.threading_layer()
    except ValueError:      # nothing launched in parallel yet: the first launch picks the layer
        return _layer_lock
    return _layer_lock if layer == "workqueue" else nullcontext()


_forked = False


def _in_forked_child() -> None:
    # GNU OpenMP cannot run in a child forked after the parent used it (Numba terminates the
    # child): a forked process runs its kernels on one thread
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_in_forked_child)


@contextmanager
def _one_blas_thread():
    """The kernels' BLAS set to one thread for the duration (a few microseconds, unlike
    ``threadpool_limits``, which rescans the loaded libraries on every call)."""
    libs = _numba_blas()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


@functools.cache
def _numba_blas() -> list:
    """threadpoolctl's controllers of the BLAS that kernels call: scipy's (Numba's np.dot and
    tilec's sgemm/sgemv go through scipy.linalg.cython_blas). NumPy's own copy is left alone:
    setting its threads too doubled the cost of each launch. All BLAS libraries when none lies
    in scipy's package (a shared system BLAS)."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (load the library first)
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    home = str(Path(scipy.__file__).resolve().parent)        # .../scipy: also matches .../scipy.libs
    own = [lib for lib in libs if str(Path(lib.filepath).resolve()).startswith(home)]
    return own or libs


def _numba_files(path: Path) -> list[Path]:
    pycache = path.parent / "__pycache__"
    return sorted(pycache.glob(f"{path.stem}.*.nb[ic]")) if pycache.exists() else []


def _seed(path: Path, manifest: Manifest) -> None:
    """A read-only cache's entry (source, manifest, Numba's files) copied to the private cache
    this process writes, so a kernel compiled there loads instead of compiling again."""
    twin = read_only_twin(path)
    if twin is not None and not path.exists():
        seed_from_read_only([path, manifest.path,
                             *(path.parent / "__pycache__" / f.name for f in _numba_files(twin))])


def _ensure_source(path: Path, source: str, manifest: Manifest) -> None:
    """Write the source unless an identical copy is there; drop Numba artefacts that do not
    match the manifest (a damaged or tampered cache entry) so Numba rebuilds them."""
    damaged = manifest.damaged([path, *_numba_files(path)])
    current = path.read_text() if path.exists() else None
    if current != source:
        if current is not None:
            warnings.warn(f"tilec: cache entry {path.name} did not match its kernel; rebuilding it", stacklevel=4)
        damaged = [*_numba_files(path)]
        atomic_write(path, source)
    elif damaged:
        warnings.warn(f"tilec: damaged cache files {[p.name for p in damaged]}; rebuilding", stacklevel=4)
    for p in damaged:
        if p != path:
            p.unlink(missing_ok=True)
    if damaged:
        manifest.path.unlink(missing_ok=True)


def _import(module_name: str, path: Path):
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


BACKEND = NumbaBackend()
