"""``@tc.kernel``: a DSL function, specialized per (argument types, constexprs) into verified IR
and launched over a grid by a backend: ``kernel[grid](*args, backend=..., **config)``."""
from __future__ import annotations


from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes as dt
from .errors import ConfigError, TilecError
from .frontend import FrontEnd, literal_defaults, is_constexpr_annotation, parse_function
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
