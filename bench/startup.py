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
import numba, numpy as np, ops
a = np.ones((64, 64), np.float32)
t = time.perf_counter(); ops.gemm(a, a, config={"BM": 32, "BN": 32, "BK": 32}); first = time.perf_counter() - t
print(json.dumps({"first_call_s": first}))
"""


def _probe(cache: str) -> float:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TILEC_CACHE_DIR=cache, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["first_call_s"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench startup")
    p.add_argument("--json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        cold = _probe(cache)
        warm = sorted(_probe(cache) for _ in range(3))[1]
    result = {"cold_compile_s": cold, "warm_start_s": warm}
    print(f"first launch of a gemm kernel: cold compile {cold:.2f} s, warm start from the disk cache "
          f"{warm:.3f} s (numba and numpy already imported; median of 3 processes)")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
