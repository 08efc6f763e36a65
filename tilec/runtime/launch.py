"""Launch a kernel: pick the backend, specialize, compile (cached) and run over the grid."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import backends
from ..errors import ConfigError, TilecError
from ..ir import TileType
from .arrays import describe

_compiled: dict[tuple, Any] = {}


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
    key = (id(kernel), be.name, tuple(arg_types.values()),
           tuple(sorted((k, repr(v)) for k, v in constexprs.items())), tuple(sorted(options.items())))
    if key not in _compiled:
        fn = kernel.ir(arg_types, constexprs)
        _compiled[key] = be.compile(fn, options)
    return be, _compiled[key]


def launch(kernel, grid: tuple | Callable[[dict], tuple], args: Sequence[Any], config: dict,
           backend: str | None = None) -> None:
    types = kernel.arg_types(args)
    be, compiled = compile_kernel(kernel, args, config, backend, types)
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
