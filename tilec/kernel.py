"""``@tc.kernel``: a DSL function, specialized per (argument types, constexprs) into verified IR
and launched over a grid by a backend: ``kernel[grid](*args, backend=..., **config)``."""
from __future__ import annotations


import functools
import hashlib
import sys
import types
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes as dt
from .errors import ConfigError, TilecError
from .frontend import Func, FrontEnd, literal_defaults, is_constexpr_annotation, parse_function
from .ir import Function, TensorType, TileType
from .passes import run_pipeline


def cdiv_host(a: int, b: int) -> int:
    """Ceiling division for grid sizes on the host."""
    return -(-a // b)


class Kernel:
    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__
        self._signature: tuple | None = None
        self._ir: dict[tuple, Function] = {}

    def _parse(self) -> tuple:
        """What the kernel's source says of its parameters, read on first use: parsing every
        kernel of the op library when it is imported was most of ``import ops``."""
        if self._signature is None:
            node, source_file, line = parse_function(self.fn)
            params = [a.arg for a in node.args.args]
            constexprs = [a.arg for a in node.args.args if is_constexpr_annotation(a.annotation)]
            defaults = {k: v for k, v in literal_defaults(node).items() if k in constexprs}
            runtime = [n for n in params if n not in constexprs]
            self._signature = (source_file, line, params, constexprs, defaults, runtime)
        return self._signature

    source_file = property(lambda self: self._parse()[0])
    line = property(lambda self: self._parse()[1])
    param_names = property(lambda self: self._parse()[2])
    constexpr_names = property(lambda self: self._parse()[3])
    constexpr_defaults = property(lambda self: self._parse()[4])
    runtime_names = property(lambda self: self._parse()[5])

    def __repr__(self) -> str:
        return f"<tilec kernel {self.name} ({self.source_file}:{self.line})>"

    def __call__(self, *args, **kwargs):
        raise TilecError(f"launch kernel {self.name} with a grid: {self.name}[grid](...)")

    def split_config(self, config: dict[str, Any]) -> tuple[dict, dict]:
        """Config keys naming constexpr parameters vs. backend options (num_warps, dot, ...)."""
        constexprs = {k: v for k, v in config.items() if k in self.constexpr_names}
        options = {k: v for k, v in config.items() if k not in self.constexpr_names}
        return constexprs, options

    def arg_types(self, args: Sequence[Any]) -> dict[str, TensorType | TileType]:
        if len(args) != len(self.runtime_names):
            raise TilecError(f"kernel {self.name} takes {len(self.runtime_names)} runtime arguments "
                             f"({', '.join(self.runtime_names)}), got {len(args)}")
        return {n: type_of(a, n) for n, a in zip(self.runtime_names, args)}

    def ir(self, arg_types: dict[str, TensorType | TileType], constexprs: dict[str, Any]) -> Function:
        """The verified, simplified IR for one specialization (cached)."""
        key = (tuple(sorted((k, str(v)) for k, v in arg_types.items())),
               tuple(sorted((k, repr(v)) for k, v in constexprs.items())))
        if key not in self._ir:
            need = [n for n in self.constexpr_names if n not in constexprs and n not in self.constexpr_defaults]
            if need:
                raise ConfigError(f"kernel {self.name} needs constexpr value(s) for {need}")
            self._ir[key] = run_pipeline(self.build(arg_types, constexprs))
        return self._ir[key]

    def build(self, arg_types: dict[str, TensorType | TileType], constexprs: dict[str, Any]) -> Function:
        """The IR as the front end builds it, before any pass (``tilec show --passes``)."""
        return FrontEnd(self.fn).build(arg_types, constexprs)

    def fingerprint(self) -> str | None:
        """A digest of everything this kernel's IR can depend on: tilec's own source, the
        source files of the kernel and of every ``@tc.func`` it can reach, and the plain values
        (numbers, strings, tuples of them) its code and those helpers' read from their modules.
        A backend may key compiled artefacts by it plus the specialization, and so skip the
        front end, passes and renderer in a later process. None when some name resolves to
        something it cannot vouch for (a closure over an object, a source file it cannot read):
        such kernels always take the full path."""
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = _fingerprint(self.fn)
        return self._fingerprint

    def __getitem__(self, grid):
        def launcher(*args, backend: str | None = None, **config):
            from .runtime.launch import launch
            return launch(self, grid, args, config, backend)
        return launcher


def type_of(arg: Any, name: str) -> TensorType | TileType:
    """IR type of a launch argument: arrays become tensors, numbers scalars."""
    if type(arg) is np.ndarray:  # the common case, without building an ArrayInfo
        return TensorType(arg.ndim, dt.from_numpy(arg.dtype))
    if isinstance(arg, (bool, np.bool_)):
        return TileType((), dt.bool_)
    if isinstance(arg, (int, np.integer)):
        return TileType((), dt.from_numpy(np.asarray(arg).dtype) if isinstance(arg, np.integer) else dt.int64)
    if isinstance(arg, (float, np.floating)):
        return TileType((), dt.from_numpy(np.asarray(arg).dtype) if isinstance(arg, np.floating) else dt.float32)
    from .runtime.arrays import describe
    info = describe(arg, name)
    return TensorType(info.ndim, info.dtype)


def kernel(fn: Callable) -> Kernel:
    """Decorate a DSL function as a kernel."""
    return Kernel(fn)


_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def _plain(value: Any) -> bool:
    return isinstance(value, _PLAIN) or isinstance(value, tuple) and all(_plain(v) for v in value)


@functools.cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def _tilec_digest() -> str:
    """All of tilec's Python source: the front end, passes and renderers decide the output."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _fingerprint(fn: Callable) -> str | None:
    h = hashlib.sha256(_tilec_digest().encode())
    seen: set[int] = set()
    todo = [fn]
    try:
        while todo:
            f = todo.pop()
            if id(f) in seen:
                continue
            seen.add(id(f))
            code = f.__code__
            # the first line tells apart two definitions of one name in one file
            h.update(f"{f.__module__}.{f.__qualname__}:{code.co_firstlineno}@{_file_digest(code.co_filename)}"
                     .encode())
            for name, cell in zip(code.co_freevars, f.__closure__ or ()):
                if not _plain(cell.cell_contents):
                    return None
                h.update(f"{name}={cell.cell_contents!r}".encode())
            names = {n for c in _codes(code) for n in c.co_names}
            for name in sorted(names):
                if name not in f.__globals__:
                    continue
                value = f.__globals__[name]
                if isinstance(value, Func):
                    todo.append(value.fn)
                elif isinstance(value, types.ModuleType):
                    # helpers reached as module.helper: the module's Funcs among the names used
                    todo.extend(v.fn for n in names if isinstance(v := getattr(value, n, None), Func))
                    file = getattr(value, "__file__", None)
                    h.update(f"{name}:{_file_digest(file) if file and file.endswith('.py') else value.__name__}"
                             .encode())
                elif _plain(value):
                    h.update(f"{name}={value!r}".encode())
                elif isinstance(value, (dict, list, set, bytearray)):
                    return None                 # mutable: its content may change after import
                else:                           # functions, classes, DTypes: where they come from
                    module = getattr(value, "__module__", None)
                    file = getattr(sys.modules.get(module), "__file__", None) if module else None
                    text = "" if callable(value) or " at 0x" in repr(value) else repr(value)
                    h.update(f"{name}:{module}:{_file_digest(file) if file and file.endswith('.py') else ''}:"
                             f"{text}".encode())
    except (OSError, AttributeError, TypeError):
        return None
    return h.hexdigest()


def _codes(code: types.CodeType):
    """A code object and the ones nested in it (comprehensions, inner functions)."""
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)
