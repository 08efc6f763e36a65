"""Pieces every op shares: input checks, output allocation, config choice, epilogues."""
from __future__ import annotations

import functools
import numbers
import os
import sys
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

import tilec as tc
from tilec.tuning import database as tuning_db
from tilec.space import Param, Space
from tilec import backends
from tilec.errors import ConfigError, InputError
from tilec.runtime.arrays import check_same_device, describe, empty_like_library
from tilec.runtime import launch as runtime_launch

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "silu")


@tc.func
def exp_(x):
    """e**x through exp2, which every backend runs vectorized (Numba's np.exp is a scalar libm
    call per element)."""
    return tc.exp2(x * 1.4426950408889634)


@tc.func
def erfc_abs(z):
    """erfc(|z|), fractional error < 1.2e-7 everywhere (the Chebyshev fit of Numerical Recipes'
    erfcc): no libm erf, so the loop vectorizes; small and exact-signed where erf(z) is near 1,
    which keeps GELU of negative inputs accurate (no 1 + erf cancellation)."""
    a = tc.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    p = 0.17087277 * t - 0.82215223
    p = p * t + 1.48851587
    p = p * t - 1.13520398
    p = p * t + 0.27886807
    p = p * t - 0.18628806
    p = p * t + 0.09678418
    p = p * t + 0.37409196
    p = p * t + 1.00002368
    p = p * t - 1.26551223
    return t * exp_(p - a * a)


@tc.func
def activation(x, ACT):
    """The fused epilogue nonlinearity named by the constexpr ACT: ``gelu`` is the erf form
    0.5 x (1 + erf(x / sqrt 2)), ``gelu_tanh`` the tanh form (as x / (1 + e**(-2u)), the same
    function without tanh), ``silu`` x / (1 + e**-x). Written with exp2 and arithmetic only."""
    y = x
    if ACT == "relu":
        y = tc.maximum(x, 0.0)
    if ACT == "gelu":
        c = erfc_abs(x * 0.7071067811865476)          # 1 + erf(x / sqrt 2) is c or 2 - c
        s = tc.where(x < 0.0, 1.0, -1.0)              # c exactly where it is tiny; constant arms
        y = 0.5 * x * ((1.0 - s) + s * c)             # select, c computed in the same loop
    if ACT == "gelu_tanh":
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        y = x / (1.0 + exp_(-2.0 * u))
    if ACT == "silu":
        y = x / (1.0 + exp_(-x))
    return y


def torch_op(name: str, tensors: tuple, backend: str | None = None, config: dict | None = None):
    """``torch.ops.tilec.<name>`` (registered by ``import ops.torch``) when a call on torch
    tensors must go through the custom op, else None: while ``torch.compile`` traces (Numba cannot compile on fake tensors), and when
    autograd records (an input requires grad), so ``ops.*`` are differentiable and traceable.
    Never imports torch: a process that has not imported it gets None."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensors[0], torch.Tensor):
        return None
    if not needs_custom_op(torch, tensors):
        return None
    if backend is not None or config is not None:
        raise InputError(f"ops.{name}: backend= and config= are not available under torch.compile or autograd "
                         f"(the custom op torch.ops.tilec.{name} takes the defaults and the tuning database)")
    try:          # torch.ops is the registry: ops.torch fills it (ops stays below ops.torch)
        return getattr(torch.ops.tilec, name)
    except (AttributeError, RuntimeError):
        raise InputError(f"ops.{name} on torch tensors under torch.compile or autograd runs as "
                         f"torch.ops.tilec.{name}: `import ops.torch` first to register it") from None


def needs_custom_op(torch, tensors) -> bool:
    """Whether a call on torch ``tensors`` must go through its custom op: torch.compile traces,
    or autograd records (grad enabled and an input requires grad)."""
    return torch.compiler.is_compiling() or (
        torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in tensors))


def check_rank(name: str, x: Any, ndim: int | tuple[int, ...], dtypes=FLOAT_DTYPES):
    """``x`` described, checked to have ``ndim`` dimensions (or one of them) and one of ``dtypes``."""
    info = describe(x, name)
    ranks = ndim if isinstance(ndim, tuple) else (ndim,)
    if info.ndim not in ranks:
        raise InputError(f"{name} must be {' or '.join(f'{r}-D' for r in ranks)}, got shape {info.shape}")
    if info.dtype.name not in dtypes:
        raise InputError(f"{name} has dtype {info.dtype.name}; this op takes {', '.join(dtypes)}")
    return info


def check_activation(activation_name):
    if activation_name not in ACTIVATIONS:
        raise InputError(f"activation {activation_name!r} is not one of {list(ACTIVATIONS)}")


def pick_backend(arrays: dict[str, Any], backend: str | None) -> str:
    device = check_same_device(arrays)
    name = backend or backends.default_for(device)
    be = backends.get(name)
    if not be.accepts(device):
        raise InputError(f"the {name} backend runs on {be.device}, but the arrays live on {device}")
    reason = be.missing()
    if reason:
        raise InputError(reason)
    return name


def backend_space(tiles: list[Param], constraints: list, backend: str, narrow: dict | None = None) -> Space:
    """An op's tile parameters plus the backend's own tunable options; ``narrow`` (option name
    -> choices) keeps only the choices of an option that suit this op. Built once per distinct
    arguments: every op call asks for its space."""
    return _backend_space(tuple(tiles), tuple(constraints), backend, tuple(sorted((narrow or {}).items())))


@functools.cache
def _backend_space(tiles: tuple, constraints: tuple, backend: str, narrow: tuple) -> Space:
    be = backends.get(backend)
    extra = be.space_params() if hasattr(be, "space_params") else []
    narrow = dict(narrow)
    extra = [Param(p.name, tuple(c for c in p.choices if c in narrow[p.name]), p.doc) if p.name in narrow else p
             for p in extra]
    return Space(list(tiles) + list(extra), list(constraints))


def fits_local_memory(tile_bytes: Callable[[dict], int], keys: tuple[str, ...]):
    """A space constraint: the tiles ``tile_bytes(config)`` must fit the target's fast local
    memory (shared memory / L1 / UB / L2 per core, from the profile)."""
    def check(cfg: dict, profile) -> str | None:
        if profile is None or not all(k in cfg for k in keys):
            return None
        need = tile_bytes(cfg)
        limit = getattr(profile, "local_memory_bytes", None)
        if limit and need > limit:
            return f"tiles need {need} B of local memory, {profile.name} has {limit} B"
        return None
    return check


def strip_width(widest: int, columns: int, rows: int, narrowest: int, programs: int = 4) -> int:
    """The widest column strip (halving from ``widest`` down to ``narrowest``) that still gives
    ``rows`` program rows times ``columns / width`` strips at least ``programs`` programs, so
    every CPU thread gets a few."""
    width = widest
    while width > narrowest and rows * -(-columns // width) < programs:
        width //= 2
    return width


def check_config(op: str, config: Any, space: Space) -> dict:
    """A caller's config: a mapping of the space's parameter names to one of each one's
    choices, of the choice's own type (``{"BM": 16.0}`` is not ``{"BM": 16}``: a float tile
    size reached the compiler before). NumPy integers stand for Python ints."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{op}: config must be a dict of tile parameters like {{'BM': 64}}, "
                          f"got {type(config).__name__} {config!r}")
    unknown = [k for k in config if k not in space.names]
    if unknown:
        raise ConfigError(f"{op} config keys {sorted(map(str, unknown))} are not tunable here; known: {space.names}")
    out = {}
    for p in space.params:
        if p.name not in config:
            continue
        value = config[p.name]
        match = [c for c in p.choices if _same_kind(value, c) and value == c]
        if not match:
            raise ConfigError(f"{op} config {p.name}={value!r} ({type(value).__name__}) is not one of "
                              f"{list(p.choices)}")
        out[p.name] = match[0]
    return out


def _same_kind(value: Any, choice: Any) -> bool:
    if isinstance(choice, bool) or isinstance(value, bool):
        return isinstance(value, (bool, np.bool_)) and isinstance(choice, bool)
    if isinstance(choice, int):
        return isinstance(value, numbers.Integral)
    return type(value) is type(choice)


def check_scalar(name: str, value: Any) -> float:
    """A real-number option (alpha, scale) as a float."""
    if type(value) is float:          # the common case, without the slower ABC check below
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def choose_config(op: str, shape: dict, dtype: str, backend: str, device: str, config: dict | None,
                  space: Space, default: dict) -> dict:
    """The config to run: the caller's (validated), else the tuned one, else the default."""
    if config is not None:
        config = check_config(op, config, space)
        full = {**default, **config}
        reasons = space.reasons(full)
        if reasons:
            raise ConfigError(f"{op} config {config} does not fit: {'; '.join(reasons)}")
        return full
    tuned = tuning_db.lookup(op, shape, dtype, backend, device)
    # a record naming a parameter the space no longer has was tuned for an older kernel
    if tuned and set(tuned) <= set(space.names) and not space.reasons({**default, **tuned}):
        return {**default, **tuned}
    return dict(default)


def _cpu_tensor(x: Any) -> bool:
    """A plain torch tensor on the CPU (torch is looked up, never imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and type(x) in (torch.Tensor, torch.nn.Parameter) and x.device.type == "cpu"


class CallPlans:
    """What an op call's checks, backend choice and config lookup decided, kept per kind of call
    (the NumPy arrays' shapes and dtypes, and the options), so that a repeated call goes straight
    to its launch. After a GEMV has streamed 64 MB the interpreter runs from cold caches, and those
    steps took ~90 us of a 1.5 ms call. Torch CPU tensors are kept the same way (the full path
    cost them ~90 us a call); other arrays (CUDA tensors, CuPy) always take the full path. A plan
    made before the tuning database's lookup memo was dropped (a tune in this process) or under
    other TILEC_BACKEND / database settings is not used."""

    def __init__(self):
        self._plans: dict[tuple, tuple] = {}
        self._launches: dict[int, Any] = {}   # id of a kept plan -> its resolved launch

    def launch(self, plan: tuple, kept: bool, kernel, grid: tuple, args: tuple, config: dict, backend: str) -> None:
        """Run ``kernel`` for ``plan`` (``kept``: it came from, or went into, this store)
        through its resolved launch: bound on first use, then called with nothing but the
        arguments to prepare. ``config`` and the arguments' kinds must follow from the plan."""
        bound = self._launches.get(id(plan)) if kept else None
        if bound is None:
            bound = runtime_launch.bind(kernel, grid, args, config, backend)
            if kept:
                self._launches[id(plan)] = bound
        bound(*args)

    def key(self, arrays: tuple, *options) -> tuple | None:
        parts = []
        for x in arrays:
            if x is None:
                parts.append(None)
            elif type(x) is np.ndarray:
                parts.append((x.shape, x.dtype))
            elif _cpu_tensor(x):
                parts.append(("torch", x.shape, x.dtype))
            else:
                return None
        try:
            key = (tuple(parts), options, *_lookup_state())
            hash(key)
        except TypeError:                  # an unhashable option (a config value): no plan
            return None
        return key

    def get(self, key: tuple | None) -> tuple | None:
        return None if key is None else self._plans.get(key)

    LIMIT = 4096                           # distinct kinds of call kept (a shape per sequence length adds up)

    def put(self, key: tuple | None, plan: tuple) -> tuple:
        if key is not None:
            if len(self._plans) >= self.LIMIT:
                self._plans.clear()
                self._launches.clear()
            self._plans[key] = plan
        return plan


def _env_reader(names: tuple[str, ...]) -> Callable[[], tuple]:
    """A function reading these environment variables for a cache key: from os.environ's own
    mapping where it has one (a dict lookup each; ``os.environ.get`` converts the name and the
    value and took ~1/4 of the Python work of a repeated 64^3 GEMM), else through it."""
    data, encode = getattr(os.environ, "_data", None), getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encode):
        keys = tuple(encode(n) for n in names)
        return lambda: tuple(map(data.get, keys))
    return lambda: tuple(map(os.environ.get, names))


_read_env = _env_reader(("TILEC_BACKEND", tuning_db.ENV, "TILEC_CACHE_DIR"))


def _lookup_state() -> tuple:
    return _read_env() + (tuning_db.generation(),)


def config_items(config: dict | None) -> tuple | None:
    """A config as a hashable key part (a list, which no plan is kept for, when it is not a
    mapping of sortable keys: the call's checks then say what is wrong)."""
    if config is None:
        return None
    try:
        return tuple(sorted(config.items()))
    except (AttributeError, TypeError):
        return [config]


def output_like(ref: Any, shape: tuple[int, ...], dtype) -> Any:
    return empty_like_library(ref, shape, dtype)
