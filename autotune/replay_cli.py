"""``tilec tune --replay FILE...``: tune recorded search spaces, or with ``--compare`` count
the evaluations each strategy needs to get within ``--within`` of each file's optimum, with
``--transfer`` (other devices' records) leave-one-device-out."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tilec.errors import TilecError

from . import strategies


def parse_fix(text: str | None) -> dict:
    """``nvml_gr_clock=1815,NBUFFER=2`` -> {name: number or text}."""
    from .evaluators.replay import _number
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise TilecError(f"--replay-fix part {part!r} is not NAME=VALUE")
        out[name.strip()] = _number(value.strip())
    return out


def load_target(path: str, args):
    from .evaluators import replay
    recorded = replay.load(path, args.replay_objective)
    fix = parse_fix(args.replay_fix)
    return recorded.fix(fix) if fix else recorded


def transfer_for(recorded, args):
    if not args.transfer:
        return None
    from .transfer import Transfer
    t = Transfer.from_files(recorded, args.transfer, args.replay_objective)
    if not t.sources:
        raise TilecError(f"--transfer: no record of another device (or setting) than {recorded.context[0]!r}")
    return t


def main(args, console: Console) -> int:
    names = [s.strip() for s in (args.compare or "").split(",") if s.strip()]
    for s in names:
        strategies.get(s)
    runs = []
    for path in args.replay:
        recorded = load_target(path, args)
        transfer = transfer_for(recorded, args)
        from .report import fmt_value
        optimum = recorded.optimum() * recorded.unit_s
        fixed = recorded.meta.get("fixed")
        console.print(f"{recorded.name}{' ' + str(fixed) if fixed else ''}: {len(recorded.records)} recorded configs, "
                      f"{len(recorded.valid())} valid, optimum {fmt_value(optimum)} "
                      f"{recorded.meta.get('device_name') or ''}"
                      + (f"; transfer from {len(transfer.sources)} other records" if transfer else ""))
        if names:
            runs.append(_compare(recorded, transfer, names, args, console))
        elif _tune(recorded, transfer, args, console) != 0:
            return 1
    if names and args.json:
        from .report import write_json
        write_json(args.json, {"within": args.within, "cap": args.trials, "seeds": args.seeds,
                               "first_seed": args.seed or 0, "transfer": args.transfer or [],
                               "files": [{k: v for k, v in r.items() if k != "curves"} for r in runs]})
    if names and args.plot:
        from . import curves
        console.print(f"wrote {curves.plot(args.plot, [(r['title'], r['curves']) for r in runs], args.within)}")
    return 0


def _compare(recorded, transfer, names, args, console) -> dict:
    from .efficiency import compare
    results = compare(recorded, names, seeds=args.seeds, within=args.within, cap=args.trials, transfer=transfer,
                      first_seed=args.seed or 0)
    out = Table(title=f"{recorded.name}: evaluations to reach within {args.within:.0%} of the optimum "
                      f"({args.seeds} seeds, cap {args.trials}{', transfer' if transfer else ''})")
    for col in ("strategy", "median", "p25", "p75", "reached", "per seed"):
        out.add_column(col)
    for r in results:
        out.add_row(r.strategy, f"{r.median:g}", f"{r.percentile(25):g}", f"{r.percentile(75):g}",
                    f"{r.reached}/{len(r.needed)}", " ".join(map(str, r.needed)))
    console.print(out)
    title = f"{recorded.meta.get('device_name') or recorded.name} {recorded.meta.get('kernel_name') or ''}"
    return {"file": recorded.name, "title": title.strip(), "meta": recorded.meta,
            "optimum_s": recorded.optimum() * recorded.unit_s,
            "transfer_from": [list(c) for c in transfer.contexts] if transfer else [],
            "results": [r.as_dict() for r in results], "curves": {r.strategy: r.curves for r in results}}


def _tune(recorded, transfer, args, console) -> int:
    from .report import ProgressBar, fmt_value, study_record, table, write_json, write_plots
    from .tuner import tune
    optimum = recorded.optimum() * recorded.unit_s
    seeds, prior = (transfer.seeds(), transfer.prior()) if transfer else ((), None)
    fixed = ",".join(f"{k}={v}" for k, v in recorded.meta.get("fixed", {}).items())
    with ProgressBar(args.trials, enabled=not args.quiet) as bar:
        result = tune(recorded.space(), recorded.evaluator(), n_evals=args.trials, strategy=args.strategy,
                      study_name=f"replay|{recorded.name}|{fixed}|{args.strategy}|seed={args.seed}"
                                 f"|transfer={bool(transfer)}",
                      storage=args.storage or "memory", seed=args.seed, seeds=seeds, prior=prior,
                      progress=bar.update)
    console.print(table(result.study))
    ratio = result.best_value / optimum if result.best_value else float("nan")
    console.print(f"best {fmt_value(result.best_value)} = {ratio:.3f}x the recorded optimum after "
                  f"{result.evaluations} evaluations: {result.best_config}")
    if args.json:
        write_json(args.json, study_record(result.study, {"best_config": result.best_config,
                                                           "best_value": result.best_value, "optimum_s": optimum}))
    if args.plot:
        for path in write_plots(result.study, args.plot):
            console.print(f"wrote {path}")
    return 0
