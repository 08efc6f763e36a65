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
_launches: dict[tuple, tuple] = {}      # a repeated host launch -> (backend, compiled, arg types)


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
        fn = kernel.ir(arg_types, constexprs)
        _compiled[key] = be.compile(fn, options)
    return be, _compiled[key]


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


def launch(kernel, grid: tuple | Callable[[dict], tuple], args: Sequence[Any], config: dict,
           backend: str | None = None) -> None:
    # Op calls repeat: after a kernel streamed 64 MB the interpreter runs from cold caches,
    # and rebuilding the types and the cache key took ~50 us of a 1.2 ms GEMV.
    sig = _host_signature(args)
    fast = None
    if sig is not None:
        try:
            fast = (kernel, backend, os.environ.get("TILEC_BACKEND"), tuple(config.items()), sig)
            hit = _launches.get(fast)
        except TypeError:              # an unhashable config value: take the general path
            fast = hit = None
    if fast is not None and hit is not None:
        be, compiled, types = hit
    else:
        types = kernel.arg_types(args)
        be, compiled = compile_kernel(kernel, args, config, backend, types)
        if fast is not None:
            _launches[fast] = (be, compiled, types)
    g = grid(config) if callable(grid) else grid
    g = tuple(int(x) for x in (g if isinstance(g, (tuple, list)) else (g,)))
    if not 1 <= len(g) <= 3 or any(x < 0 for x in g):
        raise ConfigError(f"grid must be 1 to 3 non-negative ints, got {g}")
    g = g + (1,) * (3 - len(g))
    if 0 in g:
        return
    prepared = []
    for a, n in zip(args, kernel.runtime_names):
        t = types[n]
        prepared.append(be.prepare_scalar(a, t.dtype) if isinstance(t, TileType) else be.prepare(a, n))
    compiled.run(g, prepared)
