"""``tilec``: the command line (also ``python -m autotune.cli_main``). It sits above the core, which
imports nothing of the packages built on it. Each subcommand lives in the package that owns it
and registers itself through ``register(subparsers)``; a package that is missing just leaves
its subcommand out."""
from __future__ import annotations

import argparse
import importlib
import sys

from tilec.errors import TilecError

SUBCOMMANDS = [
    "ops.show",              # tilec show OP --backend B --config ...
    "bench.cli",             # tilec bench OP ...
    "hw_profiles.cli",       # tilec profiles list|show|calibrate
    "autotune.cli",          # tilec tune ...
    "autotune.cost.cli",     # tilec cost-model train|eval|predict
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tilec", description="tile-level kernels: show, tune, bench")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TilecError as e:
        print(f"tilec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
