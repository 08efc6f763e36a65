"""Per-call overhead of a small ``ops.gemm``: the whole call against the kernel's compiled
code called directly on the same arrays, with NumPy's ``a @ b`` as the peer, interleaved.

    python -m bench overhead [--size 64] [--json FILE]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .timing import write_json


def _best_of(fn, calls: int, rounds: int, clock=time.thread_time) -> float:
    """Best mean over ``rounds`` of ``calls`` calls, by this thread's CPU time (time spent
    descheduled on a loaded machine does not count; the peer is measured the same way)."""
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        for _ in range(calls):
            fn()
        best = min(best, (clock() - t) / calls)
    return best


def measure(size: int = 64, calls: int = 2000, rounds: int = 7) -> dict:
    import ops
    from tilec.backends.numba import runner
    from tilec.backends.numba.blas import one_blas_thread

    rng = np.random.default_rng(0)
    a = rng.random((size, size), np.float32)
    b = rng.random((size, size), np.float32)
    c = ops.gemm(a, b)                         # plan, compile or load, specialize
    assert np.allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    spec = next(s for k, s in runner._specs.items() if k[0].__name__.startswith("gemm_kernel"))
    out = np.empty((size, size), np.float32)
    alpha = np.float32(1.0)
    from ops.gemm import default_config
    cfg = default_config({"M": size, "N": size, "K": size})
    grid = (-(-size // cfg["BM"]), -(-size // cfg["BN"]), 1)
    programs = grid[0] * grid[1]

    def kernel_only():                        # the compiled programs, nothing of tilec's Python
        blas = one_blas_thread()
        before = blas.limit()
        spec.serial(0, programs, *grid, a, b, out, out, alpha)
        blas.restore(before)

    rows = {"tilec": [], "kernel": [], "numpy": []}
    for _ in range(3):                        # interleaved: the machine's load hits all three alike
        rows["tilec"].append(_best_of(lambda: ops.gemm(a, b), calls, rounds))
        rows["kernel"].append(_best_of(kernel_only, calls, rounds))
        rows["numpy"].append(_best_of(lambda: a @ b, calls, rounds))
    best = {k: min(v) * 1e6 for k, v in rows.items()}
    wall = _best_of(lambda: ops.gemm(a, b), calls, rounds, time.perf_counter) * 1e6
    return {"size": size, "config": cfg, "call_us": best["tilec"], "kernel_us": best["kernel"],
            "overhead_us": best["tilec"] - best["kernel"], "numpy_us": best["numpy"], "call_wall_us": wall,
            "clock": "thread CPU time, best mean of 7 x 2000 calls, 3 interleaved rounds"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench overhead")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args(argv)
    r = measure(args.size)
    print(f"ops.gemm {args.size}^3: {r['call_us']:.1f} us a call, of which the kernel {r['kernel_us']:.1f} us: "
          f"overhead {r['overhead_us']:.1f} us; NumPy a @ b {r['numpy_us']:.1f} us (best of interleaved rounds)")
    write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
