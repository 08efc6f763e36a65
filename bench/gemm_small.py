"""Skinny GEMMs (a few rows against a Linear's weight): tilec's default tiles against the
tiles it chose before skinny calls (``before``: one BLAS call over a wide B), torch's
``F.linear`` and NumPy's ``a @ b``, interleaved in one run.

    python -m bench gemm_small [--repeats 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from .timing import cpu_times, interleaved_samples, machine, steal_since, write_json

SHAPES = [(384, 1536), (1536, 384), (384, 384), (1024, 2048), (768, 3072), (3072, 768), (4096, 4096)]
ROWS = (1, 2, 4, 8, 16, 32)


def bench(repeats: int) -> list[dict]:
    import importlib

    import ops
    g = importlib.import_module("ops.gemm")     # the module (ops.gemm is the function)
    torch = _torch()
    out = []
    for k, n in SHAPES:
        for m in ROWS:
            rng = np.random.default_rng(m)
            a, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
            shape = {"M": m, "N": n, "K": k}
            tiles, before = g.default_config(shape), _before(g, shape)
            fns = {"tilec": lambda: ops.gemm(a, w.T), "before": lambda: ops.gemm(a, w.T, config=before),
                   "numpy": lambda: a @ w.T}
            if torch is not None:
                ta, tw = torch.from_numpy(a), torch.from_numpy(w)
                fns["torch"] = lambda: torch.nn.functional.linear(ta, tw)
            assert np.allclose(fns["tilec"](), a.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)
            t = interleaved_samples(fns, repeats)
            us = {name: float(np.median(s)) * 1e6 for name, s in t.items()}
            row = {"M": m, "K": k, "N": n, "BN": tiles["BN"], "BK": tiles["BK"], "us": us,
                   "vs_before": us["before"] / us["tilec"]}
            if "torch" in us:
                row["vs_torch"] = us["torch"] / us["tilec"]
            out.append(row)
            print(f"M={m:3d} {k}->{n}: BN {tiles['BN']}, " + ", ".join(f"{k_} {v:.0f} us" for k_, v in us.items()),
                  flush=True)
    return out


def _before(g, shape: dict) -> dict:
    """The default config without the skinny rule."""
    rows, g.SKINNY_ROWS = g.SKINNY_ROWS, 0
    try:
        return g.default_config(shape)
    finally:
        g.SKINNY_ROWS = rows


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench gemm_small")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args(argv)
    before, load = cpu_times(), os.getloadavg()
    cases = bench(args.repeats)
    result = {"machine": {**machine(), "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
                          "cpu_steal": steal_since(before)},
              "clock": "wall time, median of interleaved rounds (tilec, before, numpy, torch)",
              "cases": cases}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
