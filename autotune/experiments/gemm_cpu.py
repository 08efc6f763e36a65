"""GEMM on this CPU: measure every config of a small space (the exhaustive best), then ask how
many evaluations each strategy needs to get within 5% of it, replaying the measured table
over many seeds; and run one real measured TPE tune with a 25% budget.

    python -m autotune.experiments.gemm_cpu --n 1024 --seeds 20 --out gemm1024.json

Tunes the library's ``ops.gemm`` (``ops.REGISTRY["gemm"]``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


from ..encoding import config_id
from ..evaluators import TrialFailed
from ..evaluators.measured import MeasuredEvaluator
from ..evaluators.replay import RecordedSpace
from ..space import Param, Space
from ..tuner import tune

TILES = {"BM": (32, 64, 128, 256), "BN": (32, 64, 128, 256), "BK": (64, 128, 256)}


def gemm_op():
    import ops
    return ops.REGISTRY["gemm"]


def space_of(op) -> Space:
    """The op's own tile parameters restricted to TILES (a small, exhaustively measurable space)."""
    full = op.space("numba")
    params = [Param(p.name, tuple(c for c in p.choices if c in TILES[p.name])) if p.name in TILES else
              Param(p.name, p.choices[:1]) for p in full.params]
    return Space(params, full.constraints)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--within", type=float, default=0.05)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    op = gemm_op()
    space = space_of(op)
    shape = {"M": args.n, "N": args.n, "K": args.n}
    ev = MeasuredEvaluator(op, shape, "float32", "numba", "cpu", repeats=args.repeats)
    table: dict[str, float | str] = {}
    configs = list(space.configs())
    t0 = time.time()
    for cfg in configs:
        try:
            table[config_id(cfg)] = ev(cfg).runtime_s * 1e3
        except TrialFailed as e:
            table[config_id(cfg)] = str(e)
        print(cfg, table[config_id(cfg)], flush=True)
    t_exhaustive = time.time() - t0
    recorded = RecordedSpace(f"gemm{args.n}", {p.name: list(p.choices) for p in space.params}, table)
    best = recorded.optimum()
    budget = max(1, len(configs) // 4)
    target = (1 + args.within) * best * 1e-3
    results = {}
    for strategy in ("tpe", "random"):
        needed = []
        for s in range(args.seeds):
            r = tune(recorded.space(), recorded.evaluator(), n_evals=len(configs), study_name=f"{strategy}{s}",
                     storage="memory", strategy=strategy, seed=s, stop_at=target)
            needed.append(r.evaluations)
        results[strategy] = {"median": statistics.median(needed), "needed": needed,
                             "within_budget": sum(n <= budget for n in needed)}
        print(strategy, results[strategy], flush=True)
    # One real measured tune (TPE, seeded with the op's default config), 25% of the space.
    t0 = time.time()
    live = tune(space, ev, n_evals=budget, study_name="live", storage="memory", strategy="tpe", seed=0,
                seeds=[op.default_config(shape, "numba")])
    live_ms = table[config_id(live.best_config)]
    out = {"n": args.n, "space": len(configs), "budget": budget, "exhaustive_best_ms": best,
           "exhaustive_s": t_exhaustive, "replay": results,
           "live": {"best_config": live.best_config, "its_exhaustive_ms": live_ms, "ratio": live_ms / best,
                    "evaluations": live.evaluations, "seconds": time.time() - t0},
           "table_ms": table}
    print(json.dumps({k: v for k, v in out.items() if k != "table_ms"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
