"""Run generated kernels in Triton's CPU interpreter on host arrays, per call.

Triton picks interpreter or compiler when ``@triton.jit`` runs, i.e. when a module is
imported, so with ``TRITON_INTERPRET`` unset its own library functions (``tl.sum``,
``tl.max``, ``tl.sigmoid``, ...) are compiled-mode JITFunctions that refuse to run in the
interpreter. While a kernel is interpreted they are swapped for interpreted twins (what
``TRITON_INTERPRET=1`` at import would have made), then put back; one process can so
interpret host arrays and compile for a GPU.

Triton's GridExecutor copies torch storages to the host and back around a launch; host
arrays need no copy, so those two steps are identities here and plain NumPy arrays (any
object with ``data_ptr()`` and ``dtype``) work without torch.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

_lock = threading.Lock()          # the interpreter patches triton.language while it runs
_twins: dict[tuple[str, str, str], object] = {}


def _library_modules():
    import triton.language as tl
    from triton.language import standard
    return [tl, standard]


@functools.lru_cache(maxsize=None)
def _twin_class():
    """InterpretedFunction whose device-function calls undo their patching of
    triton.language afterwards (Triton's own leaves it patched, which is harmless only when
    the whole process interprets; here it would break later GPU compiles)."""
    from triton.runtime.interpreter import InterpretedFunction, InterpreterError, _patch_lang

    class Twin(InterpretedFunction):
        def __call__(self, *args, **kwargs):
            scope = _patch_lang(self.fn)
            try:
                return self.rewrite()(*args, **kwargs)
            except InterpreterError:
                raise
            except Exception as e:
                raise InterpreterError(repr(e)) from e
            finally:
                scope.restore()

    return Twin


@contextmanager
def library_as(kind: str):
    """Within the block, Triton's library functions are ``"interpreted"`` (restoring twins)
    or ``"compiled"`` (JITFunctions, even where ``TRITON_INTERPRET=1`` made them interpreted)."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    make = _twin_class() if kind == "interpreted" else JITFunction
    try:  # imported lazily by Triton's argument typing; it must see the real library first
        import triton.experimental.gluon  # noqa: F401
    except ImportError:
        pass
    saved = []
    try:
        for module in _library_modules():
            for name, obj in list(vars(module).items()):
                if isinstance(obj, (JITFunction, InterpretedFunction)) and type(obj) is not make:
                    key = (module.__name__, name, kind)
                    if key not in _twins:
                        _twins[key] = make(obj.fn)
                    saved.append((module, name, obj))
                    setattr(module, name, _twins[key])
        yield
    finally:
        for module, name, obj in reversed(saved):
            setattr(module, name, obj)


@contextmanager
def compiled_library():
    """For GPU compiles and launches: a no-op unless ``TRITON_INTERPRET=1`` is set."""
    import triton
    if not triton.knobs.runtime.interpret:
        yield
        return
    with _lock, library_as("compiled"):
        yield


_COMPARISONS = [f"create_{kind}{pred}" for kind, preds in (
    ("icmp", ("SLE", "SLT", "SGE", "SGT", "ULE", "ULT", "UGE", "UGT", "EQ", "NE")),
    ("fcmp", ("OLT", "OGT", "OLE", "OGE", "OEQ", "ONE", "ULT", "UGT", "ULE", "UGE", "UEQ", "UNE"))) for pred in preds]


@contextmanager
def comparisons_typed_bool():
    """Triton's interpreter tags a comparison's result with its operands' dtype (int32 for
    ``k < n``) though it holds booleans; splatting such a scalar to a block then converts it to
    int32, and a load or store masked by ``(k < n) & (rows < n)`` fails ("mask has unsupported
    dtype"). Within the block comparisons are tagged int1, as the compiler types them."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle
    saved = {name: InterpreterBuilder.__dict__[name] for name in _COMPARISONS if name in InterpreterBuilder.__dict__}

    def as_bool(compare):
        def typed(self, lhs, rhs):
            return TensorHandle(compare(self, lhs, rhs).data, tl.int1)
        return typed

    try:
        for name, compare in saved.items():
            setattr(InterpreterBuilder, name, as_bool(compare))
        yield
    finally:
        for name, compare in saved.items():
            setattr(InterpreterBuilder, name, compare)


def host_interpreter(python_fn):
    """A callable ``(grid, flat_args)`` interpreting ``python_fn`` over the grid."""
    from triton.runtime.interpreter import GridExecutor, InterpretedFunction

    class HostGridExecutor(GridExecutor):
        def _init_args_hst(self, args_dev, kwargs):
            return list(args_dev), dict(kwargs)

        def _restore_args_dev(self, args_dev, args_hst, kwargs, kwargs_hst):
            return None

    interpreted = InterpretedFunction(python_fn)

    def call(grid, flat):
        with _lock, library_as("interpreted"), comparisons_typed_bool():
            HostGridExecutor(interpreted.rewrite(), interpreted.arg_names, tuple(grid))(*flat)

    return call
