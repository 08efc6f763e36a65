"""``tilec warmup [OP ...]``: compile ops ahead of time, so a later process (a service, a
container image built with a warm cache) finds them in the kernel cache. Each op runs once on
random inputs of its typical shape (or ``--shape``) with its default (or tuned) config."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tilec.errors import InputError


def warmup(names: list[str] | None = None, dtypes: tuple[str, ...] = ("float32",), shape: dict | None = None,
           backend: str | None = None, report=print) -> dict[str, float]:
    """Run each named op (all by default) once per dtype it takes; returns the seconds each took."""
    from . import REGISTRY
    unknown = [n for n in names or () if n not in REGISTRY]
    if unknown:
        raise InputError(f"op(s) {unknown} unknown; choose from {', '.join(REGISTRY)}")
    took = {}
    for name in names or list(REGISTRY):
        spec = REGISTRY[name]
        for dtype in dtypes:
            if dtype not in spec.dtypes:
                report(f"{name}: no {dtype} (takes {', '.join(spec.dtypes)}), skipped")
                continue
            problem = {**spec.typical_shape(), **{k: v for k, v in (shape or {}).items() if k in spec.shape_names}}
            inputs = spec.make_inputs(problem, dtype, np.random.default_rng(0))
            t = time.perf_counter()
            spec.run(inputs, backend=backend)
            took[f"{name}/{dtype}"] = time.perf_counter() - t
            dims = ",".join(f"{k}={v}" for k, v in problem.items())
            report(f"{name} {dtype} {dims}: ready ({took[f'{name}/{dtype}']:.1f} s)")
    return took


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warmup", help="compile ops ahead of time into the kernel cache")
    p.add_argument("ops", nargs="*", help="ops to compile (default: all)")
    p.add_argument("--dtype", action="append", help="float32 (default), float16, bfloat16; repeat for several")
    p.add_argument("--shape", help="e.g. M=512,N=512,K=512 (dimensions an op lacks are ignored)")
    p.add_argument("--backend", help="numba (default on the CPU), triton or cuda")
    p.set_defaults(run=_run)


def _run(args) -> int:
    from tilec.show import parse_assignments
    warmup(args.ops or None, tuple(args.dtype or ("float32",)), parse_assignments(args.shape), args.backend,
           report=lambda line: print(line, file=sys.stdout, flush=True))
    return 0
