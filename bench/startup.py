"""Cold compile and warm start of one kernel, each in a fresh process.

    python -m bench startup [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .timing import write_json

_PROBE = r"""
import json, time
t = time.perf_counter()
import numba, numpy as np, ops
imports = time.perf_counter() - t
# Numba's one-time start-up (typing registries, scipy's BLAS): paid by any first njit call
t = time.perf_counter(); numba.njit(lambda x: np.dot(x, x))(np.ones((2, 2), np.float32)); init = time.perf_counter() - t
a = np.ones((64, 64), np.float32)
t = time.perf_counter(); ops.gemm(a, a, config={"BM": 32, "BN": 32, "BK": 32}); first = time.perf_counter() - t
print(json.dumps({"first_call_s": first, "imports_s": imports, "numba_init_s": init}))
"""


def _probe(cache: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TILEC_CACHE_DIR=cache, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench startup")
    p.add_argument("--json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        cold = _probe(cache)
        warm = sorted((_probe(cache) for _ in range(3)), key=lambda r: r["first_call_s"])[1]
    result = {"cold_compile_s": cold["first_call_s"], "warm_start_s": warm["first_call_s"],
              "imports_s": warm["imports_s"], "numba_init_s": warm["numba_init_s"]}
    print(f"first launch of a gemm kernel: cold compile {result['cold_compile_s']:.2f} s, warm start from the "
          f"disk cache {result['warm_start_s']:.3f} s (median of 3 fresh processes). Paid once per process "
          f"before that: imports {result['imports_s']:.2f} s, Numba's own start-up {result['numba_init_s']:.2f} s.")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
