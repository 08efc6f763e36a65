"""Compile rendered Numba source through a file in the cache (so Numba's own disk cache can
serve later processes) and launch it over the grid."""
from __future__ import annotations

import functools

import hashlib
import importlib.util
import json
import os
import sys
import threading
from contextlib import contextmanager, nullcontext
import warnings
from pathlib import Path
from typing import Any

import numba
import numba.core.event
import numpy as np

from ...errors import InputError
from ...ir import Function, TensorType, TileType, root
from ...runtime.arrays import host_view
from ...runtime.cache import Manifest, atomic_write, cache_dir, read_only_twin, readable, seed_from_read_only
from ...runtime.notice import CompileNotice
from ..base import Backend, Compiled, Option
from .blas import one_blas_thread
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
        meta = {"symbol": kernel_symbol(fn),
                "uses_blas": options["dot"] == "blas" and any(op.kind == "dot" for op in fn.walk()),
                "stored": _stored_params(fn), "what": _describe(fn),
                # The IR types fix each argument's dtype and rank: what else picks a
                # specialization is read from the arrays' flags (see _numba_type).
                "arrays": [i for i, p in enumerate(fn.params) if isinstance(p.type, TensorType)]}
        return self._launchable(self.render(fn, options), meta, options)

    # -- the index: (kernel fingerprint, specialization) -> generated module ------------------
    # A later process finds its kernel's module here without running the front end, passes and
    # renderer, which would otherwise run again for every kernel a process calls. The module is
    # used only if its manifest vouches for its content; anything amiss takes the full path.

    def index_key(self, kernel, arg_types: dict, constexprs: dict, options: dict) -> str | None:
        fingerprint = kernel.fingerprint()
        if fingerprint is None:
            return None
        text = repr((fingerprint, kernel.name, [(k, str(v)) for k, v in arg_types.items()],
                     sorted((k, repr(v)) for k, v in constexprs.items()), sorted(options.items()),
                     numba.__version__, _SUPPORT_DIGEST, sys.version))
        return hashlib.sha256(text.encode()).hexdigest()

    def from_index(self, key: str, options: dict) -> Compiled | None:
        try:
            entry = json.loads(readable(_index_path(key)).read_text())
            if entry["key"] != key or Path(entry["file"]).name != entry["file"]:
                return None
            meta = dict(entry["meta"], stored={int(i): n for i, n in entry["meta"]["stored"].items()})
            path = readable(Path("numba") / entry["file"])
            source = path.read_text()
            recorded = Manifest(path.with_name(path.stem + ".manifest.json")).read()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not recorded or recorded.get(path.name) != hashlib.sha256(source.encode()).hexdigest():
            return None
        return self._launchable(source, meta, options)

    def add_to_index(self, key: str, compiled: Compiled) -> None:
        meta = dict(compiled.info["meta"], stored={str(i): n for i, n in compiled.info["meta"]["stored"].items()})
        try:
            atomic_write(cache_dir() / _index_path(key),
                         json.dumps({"key": key, "file": Path(compiled.info["path"]).name, "meta": meta}))
        except OSError:
            pass                   # only a shortcut: the next process renders again

    def _launchable(self, source: str, meta: dict, options: dict) -> Compiled:
        module, path, record_overloads = _cached_module(meta["symbol"], source)
        kernel = getattr(module, meta["symbol"])
        parallel = options["parallel"]
        uses_blas, stored, what, arrays = meta["uses_blas"], meta["stored"], meta["what"], meta["arrays"]
        specs: dict[tuple, _Spec] = {}

        def run(grid: tuple[int, int, int], args: list[Any]) -> None:
            flags = tuple([args[i].flags.num & _KIND_FLAGS for i in arrays])
            spec = specs.get(flags)
            if spec is None:
                spec = specs[flags] = _specialization(kernel, args, stored, what, record_overloads)
            # BLAS called from the program threads must not spawn threads of its own. Not even
            # for a lone program: scipy's OpenBLAS workers would then spin for ~0.1 s after each
            # call, and a NumPy matmul in that window ran 6x slower against them on 2 cores.
            if uses_blas:
                blas = one_blas_thread()
                before = blas.limit()
                try:
                    _run_programs(spec, parallel, grid, args)
                finally:
                    blas.restore(before)
            else:
                _run_programs(spec, parallel, grid, args)

        return Compiled(source, run, {"path": str(path), "module": module.__name__, "meta": meta})

    def prepare_scalar(self, value: Any, dtype) -> Any:
        return dtype.numpy.type(value)  # typed, so a Python float is fp32 in the kernel, not fp64

    def preparer(self, t, name: str):
        """How an argument of IR type ``t`` is prepared, decided once per launch: scalars typed,
        NumPy arrays as they are, but for 16-bit floats (their uint16 bits)."""
        if isinstance(t, TileType):
            return t.dtype.numpy.type
        if t.dtype.is_float and t.dtype.bits == 16:
            return lambda a: self.prepare(a, name)
        return lambda a: a if type(a) is np.ndarray else self.prepare(a, name)

    def prepare(self, arg: Any, name: str) -> Any:
        if isinstance(arg, (int, float, bool)) or not hasattr(arg, "shape"):
            return arg
        return host_view(arg, name)


# A launch whose arrays hold fewer bytes than this runs its programs on the calling thread:
# waking a thread pool cost more than such a problem's whole work (a 64^3 GEMM: ~20 us on one
# core, 5-25 ms on two threads on a loaded 2-core VM, each thread waiting for its core), and a
# launch that never goes parallel never starts Numba's OpenMP pool beside another library's.
SERIAL_BYTES = 1 << 17


def _run_programs(spec: "_Spec", parallel: bool, grid: tuple[int, int, int], args: list[Any]) -> None:
    """Run all grid programs: on the calling thread when there is one program, one thread or
    little data, else as about four runs of programs per Numba thread, which the threads of the
    one prange in ``over_threads`` take from a shared counter (so a thread that gets less of
    its core, to another library's spinning workers or uneven programs, takes fewer runs)."""
    total = grid[0] * grid[1] * grid[2]
    n = 1
    if parallel and total > 1 and not _forked and spec.nbytes(args) >= SERIAL_BYTES:
        n = min(numba.get_num_threads(), total)
    if n <= 1:
        spec.serial(0, total, *grid, *args)
        return
    size = -(-total // (4 * n))
    over_threads = spec.over_threads()
    with _launch_guard():
        over_threads(spec.address, n, size, total, *grid, tuple(args))


class _Spec:
    """One Numba specialization of a kernel for one normalized argument signature: its native
    entry (called by ``over_threads``), its Python entry (one thread) and the over_threads
    specialization for the same signature, so a call goes straight to compiled code."""

    def __init__(self, kernel, signature: tuple, what: str):
        self.signature = signature
        cres = kernel.overloads[signature]
        self.serial = cres.entry_point
        self.address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        self.arrays = [i for i, t in enumerate(signature[5:]) if isinstance(t, numba.types.Array)]
        self.what = what
        self._over = None

    def nbytes(self, args: list[Any]) -> int:
        return sum([args[i].nbytes for i in self.arrays])

    def over_threads(self):
        if self._over is None:
            dispatcher, record = _over_threads()
            # its *args, as the one star-argument tuple an explicit signature names them by
            sig = (numba.types.intp,) * 7 + (numba.types.StarArgTuple.from_types(self.signature[5:]),)
            loaded = _load_cached(dispatcher, sig)
            if not loaded:
                with _notice_on_compile(self.what):
                    dispatcher.compile(sig)
            record(dispatcher, compiled=not loaded)
            self._over = dispatcher.overloads[sig].entry_point
        return self._over


_specs: dict[tuple, _Spec] = {}


def _specialization(kernel, args: list[Any], stored: dict[int, str], what: str, record_overloads) -> _Spec:
    """The specialization serving these arguments, compiled (or loaded from Numba's cache) on
    first use. Arguments are normalized first (see ``_numba_type``), so a read-only, F-order or
    strided array runs the code compiled for a C-order one."""
    key = (kernel, *(_numba_kind(a) for a in args))
    spec = _specs.get(key)
    if spec is None:
        for i, name in stored.items():
            if type(args[i]) is np.ndarray and not args[i].flags.writeable:
                raise InputError(f"{name} is read-only, but {what} writes into it")
        signature = (numba.types.intp,) * 5 + tuple(_numba_type(a) for a in args)
        if signature not in kernel.overloads:
            loaded = _load_cached(kernel, signature)
            if not loaded:
                with _notice_on_compile(what):
                    kernel.compile(signature)
            record_overloads(kernel, compiled=not loaded)
        spec = _specs[key] = _Spec(kernel, signature, what)
    return spec


def _index_path(key: str) -> Path:
    return Path("numba") / "index" / f"{key[:40]}.json"


def _load_cached(dispatcher, signature: tuple) -> bool:
    """Add the specialization for ``signature`` from Numba's disk cache, if it holds it; False
    when it does not (the caller compiles). Numba's own ``Dispatcher.compile`` refreshes its
    target context before looking in the cache: it imports and installs every lowering
    registry (NumPy, typed containers, random, ...), which only a compile needs: a large part
    of a warm process's first call. Running cached machine code needs the
    symbols it links against: Numba's runtime (``rtsys.initialize``), the C helpers and
    exception types (installed with the target context) and the hash secret (installed when
    ``numba.cpython.hashing`` is imported); the parallel runtime's are installed by the
    cached library's own init functions."""
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or type(cache).__name__ == "NullCache":
        return False
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.runtime import rtsys
    import numba.cpython.hashing  # noqa: F401  (its symbols)
    with global_compiler_lock:
        if signature in dispatcher.overloads:
            return True
        ctx = dispatcher.targetctx
        rtsys.initialize(ctx)
        try:
            with cache._guard_against_spurious_io_errors():
                cres = cache._load_overload(signature, ctx)
        except Exception:          # an unreadable entry: Numba's own path decides (and rebuilds)
            return False
        if cres is None or cres.objectmode:
            return False
        dispatcher._cache_hits[signature] += 1
        ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        dispatcher.add_overload(cres)
    return True


def _numba_kind(a: Any) -> Any:
    """What decides the normalized type of a prepared argument (arrays: dtype, rank and the
    flags below)."""
    if type(a) is np.ndarray:
        return a.dtype, a.ndim, a.flags.num & _KIND_FLAGS
    return type(a)


_KIND_FLAGS = 0x1 | 0x100 | 0x400        # NPY_ARRAY_C_CONTIGUOUS | _ALIGNED | _WRITEABLE


def _numba_type(a: Any):
    """The Numba type a kernel is compiled for. Arrays: C-contiguous ones as such (their loops
    vectorize: a strided GEMV ran 4x slower), every other layout as 'A' (F-order, transposed
    and strided views share one compile; tiles are read through strides), always mutable (the
    kernel's stores are checked against the arrays' flags before the first launch, so a
    read-only input shares the compile of a writeable one); the alignment as it is."""
    if type(a) is np.ndarray:
        layout = "C" if a.flags.c_contiguous else "A"
        return numba.types.Array(numba.from_dtype(a.dtype), a.ndim, layout, aligned=a.flags.aligned)
    return numba.typeof(a)


@contextmanager
def _notice_on_compile(what: str):
    """The compile notice for Numba compiles inside the block (a load from Numba's cache is no
    compile and says nothing); nested compiles (support functions) count as one."""
    notice, depth = CompileNotice(what, "numba"), [0]

    class Listener(numba.core.event.Listener):
        def on_start(self, event):
            depth[0] += 1
            if depth[0] == 1:
                notice.start()

        def on_end(self, event):
            depth[0] -= 1
            if depth[0] == 0:
                notice.stop()

    try:
        with numba.core.event.install_listener("numba:compile", Listener()):
            yield
    finally:
        notice.stop()


def _stored_params(fn: Function) -> dict[int, str]:
    """Position -> name of the parameters the kernel stores into."""
    targets = {root(op.operands[0]) for op in fn.walk() if op.kind == "store"}
    return {i: p.hint for i, p in enumerate(fn.params) if p in targets}


def _describe(fn: Function) -> str:
    """'gemm for float32': the kernel and the dtype of its first tensor."""
    op = fn.name[:-len("_kernel")] if fn.name.endswith("_kernel") else fn.name
    dtypes = [p.type.dtype.name for p in fn.params if isinstance(p.type, TensorType)]
    return f"{op} for {dtypes[0]}" if dtypes else op


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
    """The prange that runs kernels (one module in the cache, compiled once per argument
    signature: ~0.4 s, shared by every config of a kernel) and its manifest recorder."""
    from ... import __version__
    module, _, record_overloads = _cached_module(
        "over_threads", _OVER_THREADS.format(version=__version__))
    return module.over_threads, record_overloads


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
        stale = [not _ensure_source(path, source, manifest)]
        module = _import(name, path)
    recorded = {}

    def record_overloads(dispatcher, compiled: bool = True) -> None:
        """``compiled``: a specialization was compiled (Numba's index changed); a load from
        Numba's cache changed nothing, so it rewrites only a missing or broken manifest."""
        if stale[0] or compiled and len(dispatcher.overloads) != recorded.get(dispatcher):
            manifest.write([path, *_numba_files(path)])
            recorded[dispatcher] = len(dispatcher.overloads)
            stale[0] = False

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


def _ensure_source(path: Path, source: str, manifest: Manifest) -> bool:
    """Write the source unless an identical copy is there; drop Numba artefacts that do not
    match the manifest (a damaged or tampered cache entry) so Numba rebuilds them. True when
    the entry was intact: its manifest present and matching every file."""
    recorded = manifest.read()
    damaged = manifest.damaged([path, *_numba_files(path)], recorded) if recorded is not None else []
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
    return recorded is not None and not damaged and current == source


def _import(module_name: str, path: Path):
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


BACKEND = NumbaBackend()
