"""``tilec bench NAME`` and ``python -m bench NAME``: run one benchmark module."""
from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {"gemm": "bench.gemm", "gemm_small": "bench.gemm_small", "startup": "bench.startup", "quant": "bench.quant",
              "attention": "bench.attention", "gpu": "bench.gpu", "overhead": "bench.overhead",
              "threads": "bench.threads", "replay_strategies": "bench.replay_strategies",
              "cost_models": "bench.cost_models", "torch_models": "bench.torch_models",
              "quant_peers": "bench.quant_peers", "attention_masked": "bench.attention_masked",
              "attention_backward": "bench.attention_backward", "ab": "bench.ab"}


def run(name: str, argv: list[str]) -> None:
    if name not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    importlib.import_module(BENCHMARKS[name]).main(argv)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks against NumPy/torch in one run (ratios)")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (e.g. --json FILE)")
    p.set_defaults(run=lambda a: run(a.name, a.args))


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [options]")
    run(sys.argv[1], sys.argv[2:])
