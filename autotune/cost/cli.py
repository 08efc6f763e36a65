"""``tilec cost-model train | eval | predict | pick``."""
from __future__ import annotations

import argparse
import json
import sys

from tilec.errors import TilecError


def _load(paths: list[str], limit: int | None, seed: int):
    from . import records as R
    out = []
    for p in paths:
        recs = R.load_uci_sgemm(p, limit=limit, seed=seed) if _is_uci(p) else R.load_any(p)
        out += recs
    if limit is not None and len(out) > limit:
        import random
        out = random.Random(seed).sample(out, limit)
    if not out:
        raise TilecError(f"no usable records in {paths}")
    return out


def _is_uci(path: str) -> bool:
    """The UCI SGEMM CSV is subsampled while read (``--limit``), so it is recognised up front."""
    try:
        with open(path) as f:
            return path.lower().endswith(".csv") and f.readline().startswith("MWG,")
    except OSError:
        return False


def _kv(text: str | None) -> dict:
    """"M=4096,N=4096" -> {"M": 4096, "N": 4096} (numbers parsed, other values kept as text)."""
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise TilecError(f"expected KEY=VALUE, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                out[k.strip()] = v.strip()
    return out


def run_train(args) -> int:
    from .learned import LearnedModel
    recs = _load(args.data, args.limit, args.seed)
    print(f"training on {len(recs)} records ({', '.join(sorted({r.op for r in recs}))})...", file=sys.stderr)
    model = LearnedModel.fit(recs, seed=args.seed)
    model.save(args.out)
    print(f"wrote {args.out} (runtime model{' + energy model' if model.energy_model else ''})")
    return 0


def run_eval(args) -> int:
    from . import evaluate as ev
    from .learned import LearnedModel
    recs = _load(args.data, args.limit, args.seed)
    splits = []
    for h in args.holdout:
        if h == "random":
            splits.append(ev.random_split(len(recs), args.test_fraction, args.seed))
        else:
            splits.append(ev.group_split(recs, h[len("param:"):] if h.startswith("param:") else h, args.folds, args.seed))
    results = []
    for sp in splits:
        print(f"{sp.name}: training {len(sp.folds)} model(s)...", file=sys.stderr, flush=True)
        res = ev.cross_validate(recs, sp, lambda tr: LearnedModel.fit(tr, seed=args.seed), lambda m, te: m.predict(te))
        results.append(res)
        print(f"{res.split:48s} {ev.fmt(res.metrics)}")
        per_op = res.by_op() if len(set(res.ops)) > 1 else {}
        for op, m in per_op.items():
            print(f"{'  ' + op:48s} {ev.fmt(m)}")
        if res.energy:
            print(f"{'  energy':48s} {ev.fmt(res.energy)}")
    if args.plot:
        ev.plot(results, args.plot, title=", ".join(args.data))
        print(f"wrote {args.plot}")
    if args.json:
        from pathlib import Path

        from tilec.runtime.cache import atomic_write
        atomic_write(Path(args.json), json.dumps([{"split": r.split, "runtime": r.metrics, "energy": r.energy,
                                                   "runtime_by_op": r.by_op() if len(set(r.ops)) > 1 else {}}
                                                  for r in results], indent=1))
    return 0


def _profile(name: str):
    """(profile, host figures): a profile name or .toml file, or a records file / its
    ``.host.json`` sidecar for the host that measured those records."""
    import hw_profiles

    from . import features as feat, records as R
    low = name.lower()
    if low.endswith(".host.json"):
        host = R.read_host_file(name)
    elif low.endswith((".jsonl", ".jsonl.gz", ".csv", ".csv.gz")):
        host = R.load_host_figures(name)
        if host is None:
            raise TilecError(f"{name} has no host figures ({R.host_sidecar(name)}); use --profile host")
    else:
        return hw_profiles.load(name), None
    return feat.profile_of(R.Record("-", {}, "float32", {}, 1.0, device="host", source=name, host=host)), host


def run_predict(args) -> int:
    from .analytical import predict
    from .records import Record
    from .workload import workload_for
    prof, host = _profile(args.profile)
    shape, config = _kv(args.shape), _kv(args.config)
    w = workload_for(args.op, shape, args.dtype, config)
    p = predict(w, prof)
    print(f"analytical on {prof.name}: {p.runtime_s * 1e3:.4g} ms, {p.energy_j:.4g} J ({p.power_w:.3g} W), "
          f"bound by {p.bound}, {w.flops / p.runtime_s / 1e9:.4g} GFLOP/s")
    for r in p.reasons:
        print(f"  infeasible: {r}")
    if args.model:
        from .learned import LearnedModel
        m = LearnedModel.load(args.model)
        rt, en = m.predict([Record(args.op, shape, args.dtype, config, 1.0, device=prof.name, host=host)])
        print(f"learned    on {prof.name}: {rt[0] * 1e3:.4g} ms, {en[0]:.4g} J")
    return 0


def run_pick(args) -> int:
    import hw_profiles

    from .picks import GPU_GEMM_SPACE, rank
    shape = _kv(args.shape)
    profiles = [hw_profiles.load(n) for n in args.profile] if args.profile else \
        [p for p in hw_profiles.available() if p.kind == "gpu"]
    for prof in profiles:
        best = rank(args.op, shape, args.dtype, GPU_GEMM_SPACE, prof, top=args.top)
        for i, (cfg, p) in enumerate(best):
            label = prof.name if i == 0 else ""
            print(f"{label:16s} {json.dumps(cfg):80s} {p.runtime_s * 1e3:8.4f} ms  "
                  f"{p.features['programs_per_cu']} prog/SM  bound {p.bound}")
    return 0


def run_select_eval(args) -> int:
    from .learned import LearnedModel
    from .select import select_eval
    recs = _load(args.data, args.limit, args.seed)
    res = select_eval(recs, lambda rs: LearnedModel.fit(rs, seed=args.seed, rounds=args.rounds),
                      folds=args.folds, seed=args.seed)
    print(f"selection held out by {args.holdout}: {res['folds']} folds, margins {res['margins']}")
    print(f"{'picker':8s} {'problems':>8s} {'within 5%':>9s} {'within 10%':>10s} {'geomean':>8s} {'worst':>7s}")
    for name in ("model", "fixed", "choose", "race"):
        m = res[name]
        print(f"{name:8s} {m['problems']:8d} {m['within_5pct']:9.1%} {m['within_10pct']:10.1%} "
              f"{m['geomean_slowdown']:8.3f} {m['worst_slowdown']:7.3f}")
    if args.plot:
        from .select import plot_regret
        print(f"wrote {args.plot}" if plot_regret(res, args.plot) else "no plot: matplotlib is not installed")
    if args.json:
        from pathlib import Path

        from tilec.runtime.cache import atomic_write
        atomic_write(Path(args.json), json.dumps(res, indent=1, default=str))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("cost-model", help="train, evaluate and query the cost models")
    sub = parser.add_subparsers(dest="cost_command", required=True)

    def data_args(p):
        p.add_argument("data", nargs="+", help="records: .jsonl (tuner/hostbench), UCI .csv, Kernel Tuner .json[.gz]; "
                                               "host records are analysed with their file's NAME.host.json figures")
        p.add_argument("--limit", type=int, help="use a random subset of this many records")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="fit the learned model and save it as JSON")
    data_args(p)
    p.add_argument("--out", required=True, help="model file to write (.json)")
    p.set_defaults(run=run_train)

    p = sub.add_parser("eval", help="R^2, MAPE, Spearman on held-out rows and held-out groups")
    data_args(p)
    p.add_argument("--holdout", nargs="+", default=["random", "shape"],
                   help="random, shape, device, op, or param:NAME (hold out whole values of a parameter)")
    p.add_argument("--folds", type=int, default=5, help="at most this many group folds")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--plot", help="write predicted-vs-measured plots to this PNG")
    p.add_argument("--json", help="write the metrics as JSON")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("select-eval", help="kernel selection for unseen shapes: model, fixed kernel, choose()")
    data_args(p)
    p.add_argument("--holdout", default="shape", choices=("shape",), help="what is held out (whole problem shapes)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=150, help="boosting rounds of the learned model")
    p.add_argument("--json", help="write the table as JSON")
    p.add_argument("--plot", help="write the slowdown (regret) distribution per picker to this PNG")
    p.set_defaults(run=run_select_eval)

    p = sub.add_parser("predict", help="predict one launch on a profile")
    p.add_argument("--op", required=True)
    p.add_argument("--shape", required=True, help="e.g. M=4096,N=4096,K=4096")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--config", default="", help="e.g. BM=128,BN=128,BK=32,num_warps=4,num_stages=3")
    p.add_argument("--profile", required=True,
                   help="a profile name or .toml file, or a records file (or its .host.json): "
                        "the host that measured it")
    p.add_argument("--model", help="a learned model (JSON) to ask as well")
    p.set_defaults(run=run_predict)

    p = sub.add_parser("pick", help="best GPU GEMM tiles by the analytical model, per profile")
    p.add_argument("--op", default="gemm")
    p.add_argument("--shape", default="M=4096,N=4096,K=4096")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--profile", nargs="*", help="profiles (default: every GPU profile)")
    p.add_argument("--top", type=int, default=1)
    p.set_defaults(run=run_pick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)
