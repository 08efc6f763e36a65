"""Launch a kernel: pick the backend, specialize, compile (cached) and run over the grid."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from .. import backends
from ..errors import ConfigError, TilecError
from ..ir import TileType
from .arrays import describe

_compiled: dict[tuple, Any] = {}
_launches: dict[tuple, "Launch"] = {}   # a repeated host launch -> its resolved Launch


def device_of(args: Sequence[Any]) -> str:
    devices = {"cpu" if type(a) is np.ndarray else describe(a).device for a in args
               if hasattr(a, "shape") and not isinstance(a, (int, float, bool, np.generic))}
    if len(devices) > 1:
        raise TilecError(f"kernel arguments live on different devices: {sorted(devices)}")
    return devices.pop() if devices else "cpu"


def compile_kernel(kernel, args: Sequence[Any], config: dict, backend: str | None = None,
                   arg_types: dict | None = None):
    """(backend, compiled artefact) for these arguments and this config, from cache if seen."""
    be = backends.get(backend or backends.default_for(device_of(args)))
    reason = be.missing()
    if reason:
        raise TilecError(reason)
    constexprs, given = kernel.split_config(config)
    options = be.resolve_options(given, kernel.name, kernel.constexpr_names)
    arg_types = arg_types or kernel.arg_types(args)
    key = (kernel, be.name, tuple(arg_types.values()),
           tuple(sorted((k, repr(v)) for k, v in constexprs.items())), tuple(sorted(options.items())))
    if key not in _compiled:
        _compiled[key] = _compile(kernel, be, arg_types, constexprs, options)
    return be, _compiled[key]


def _compile(kernel, be, arg_types: dict, constexprs: dict, options: dict):
    """Through the backend's index of earlier processes' kernels where it keeps one (no front
    end, passes or renderer), else from the IR."""
    token = be.index_key(kernel, arg_types, constexprs, options) if hasattr(be, "index_key") else None
    if token is not None:
        compiled = be.from_index(token, options)
        if compiled is not None:
            return compiled
    compiled = be.compile(kernel.ir(arg_types, constexprs), options)
    if token is not None:
        be.add_to_index(token, compiled)
    return compiled


def _host_signature(args: Sequence[Any]) -> tuple | None:
    """A cheap key for arguments that are all NumPy arrays or plain numbers (None otherwise):
    they decide the specialization by dtype and rank alone."""
    sig = []
    for a in args:
        if type(a) is np.ndarray:
            sig.append((a.dtype, a.ndim))
        elif isinstance(a, (int, float, bool, np.generic)):
            sig.append(type(a))
        else:
            return None
    return tuple(sig)


class Launch:
    """A launch resolved once: backend, compiled kernel, grid and how each argument is prepared.
    Calling it runs the kernel on new arguments of the same kinds (dtypes and ranks) with no
    other Python work than preparing them."""

    __slots__ = ("backend", "compiled", "grid", "preparers")

    def __init__(self, be, compiled, grid: tuple[int, int, int], preparers: list):
        self.backend, self.compiled, self.grid, self.preparers = be, compiled, grid, preparers

    def __call__(self, *args) -> None:
        if 0 not in self.grid:
            self.compiled.run(self.grid, [p(a) for p, a in zip(self.preparers, args)])


def bind(kernel, grid: tuple | Callable[[dict], tuple], args: Sequence[Any], config: dict,
         backend: str | None = None) -> Launch:
    """Resolve a launch of ``kernel`` on arguments like ``args`` (compiling on first use)."""
    types = kernel.arg_types(args)
    be, compiled = compile_kernel(kernel, args, config, backend, types)
    g = grid(config) if callable(grid) else grid
    g = tuple(int(x) for x in (g if isinstance(g, (tuple, list)) else (g,)))
    if not 1 <= len(g) <= 3 or any(x < 0 for x in g):
        raise ConfigError(f"grid must be 1 to 3 non-negative ints, got {g}")
    preparers = [_preparer(be, types[n], n) for n in kernel.runtime_names]
    return Launch(be, compiled, g + (1,) * (3 - len(g)), preparers)


def _preparer(be, t, name: str) -> Callable[[Any], Any]:
    own = getattr(be, "preparer", None)       # a backend's faster route, decided once per launch
    if own is not None:
        return own(t, name)
    if isinstance(t, TileType):
        return lambda a: be.prepare_scalar(a, t.dtype)
    return lambda a: be.prepare(a, name)


def launch(kernel, grid: tuple | Callable[[dict], tuple], args: Sequence[Any], config: dict,
           backend: str | None = None) -> None:
    # Op calls repeat: after a kernel streamed 64 MB the interpreter runs from cold caches,
    # and rebuilding the types and the cache key took ~50 us of a 1.2 ms GEMV.
    sig = _host_signature(args)
    if sig is None:
        bind(kernel, grid, args, config, backend)(*args)
        return
    try:
        key = (kernel, backend, os.environ.get("TILEC_BACKEND"), tuple(config.items()), sig,
               None if callable(grid) else tuple(grid) if isinstance(grid, (tuple, list)) else grid)
        bound = _launches.get(key)
    except TypeError:                          # an unhashable config value: take the general path
        bind(kernel, grid, args, config, backend)(*args)
        return
    if bound is None:
        bound = _launches[key] = bind(kernel, grid, args, config, backend)
    bound(*args)
