"""tilec: a tile-level kernel DSL with Triton, CUDA C and Numba backends.

    import tilec as tc

    @tc.kernel
    def add(X, Y, Z, B: tc.constexpr):
        p = tc.program_id(0)
        tc.store(Z, (p * B,), tc.load(X, (p * B,), (B,)) + tc.load(Y, (p * B,), (B,)))

    add[(tc.cdiv_host(n, 256),)](x, y, z, B=256)
"""
from __future__ import annotations

__version__ = "0.1.0"

from .runtime.threads import default_wait_policy as _default_wait_policy

_default_wait_policy()       # before any OpenMP runtime loads (see runtime/threads.py)

from . import dtypes
from .dsl import (abs, arange, broadcast_to, cast, cdiv, ceil, constexpr, cos, dot, erf, exp, exp2,
                  expand_dims, floor, from_quads, full, gather, limit, load, log, log2, max, maximum, min, minimum,
                  num_programs, program_id, range, reshape, rsqrt, sigmoid, sin, sqrt, static_range,
                  store, sum, tanh, trans, where, zeros)
from .dtypes import (bfloat16, bool_, float16, float32, float64, int8, int16, int32, int64, uint8,
                     uint16, uint32)
from .errors import ConfigError, InputError, TilecError
from .frontend import Func
from .kernel import Kernel, cdiv_host, kernel


def func(fn):
    """Mark a helper written in the DSL; kernels inline it where they call it."""
    return Func(fn)


__all__ = [n for n in dir() if not n.startswith("_")]
