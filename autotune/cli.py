"""``tilec tune`` (and ``python -m autotune``).

    tilec tune gemm --shape M=1024,N=1024,K=1024 --dtype float32 --device cpu --trials 30
    tilec tune gemm --shape 4096x4096x4096 --profile a100_sxm4_80gb --trials 200 --json out.json --plot tune.png
    tilec tune --replay cache.json.gz --strategy tpe --trials 100
    tilec tune --replay cache.json.gz --compare tpe,random --seeds 20 --within 0.1
    tilec tune --replay gpu*.json.gz --transfer gpu*.json.gz --compare portfolio,random --plot curves.png
"""
from __future__ import annotations

import argparse
import re
import sys

from rich.console import Console

from tilec.errors import TilecError

from . import strategies


def parse_shape(text: str, names: tuple[str, ...] = ()) -> dict:
    """``M=1024,N=512,K=64`` or ``1024x512x64`` (in the op's dimension order)."""
    text = text.strip()
    if "=" in text:
        out = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if not name.strip() or not re.fullmatch(r"\d+", value.strip()):
                raise TilecError(f"--shape part {part!r} is not NAME=INT")
            out[name.strip()] = int(value)
        return out
    dims = re.split(r"[x,]", text)
    if not all(re.fullmatch(r"\d+", d.strip()) for d in dims):
        raise TilecError(f"--shape {text!r} is neither NAME=INT,... nor AxBxC")
    if len(dims) != len(names):
        raise TilecError(f"--shape {text!r} has {len(dims)} dimensions; this op takes {list(names)}")
    return {n: int(d) for n, d in zip(names, dims)}


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="autotune an op's tile config (or replay a recorded search space)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("op", nargs="?", help="op name (see ops.REGISTRY)")
    p.add_argument("--shape", help="M=1024,N=1024,K=1024 or 1024x1024x1024")
    p.add_argument("--dtype", default="float32")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", default=None, help="measure on cpu or cuda:N (default cpu)")
    where.add_argument("--profile", help="model a hardware profile instead of measuring "
                                         "(a100_sxm4_80gb, h100_sxm, ...: see tilec profiles list)")
    p.add_argument("--backend", help="numba, triton or cuda (default: from the device/profile)")
    p.add_argument("--trials", type=int, default=30, help="configs to evaluate (study total)")
    p.add_argument("--strategy", default=strategies.DEFAULT, choices=strategies.NAMES)
    p.add_argument("--objective", default="time", choices=("time", "energy"))
    p.add_argument("--storage", help="Optuna storage URL or a SQLite file's path (default $TILEC_TUNING_DB or sqlite in the cache dir)")
    p.add_argument("--reset-db", action="store_true",
                   help="move the tuning database aside (to NAME.reset-TIME) and start a new one; "
                        "alone, or before tuning OP")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per config (median)")
    p.add_argument("--no-seeds", action="store_true", help="do not start from the default/cost-model configs")
    p.add_argument("--confirm", type=int, default=3,
                   help="measured tunes: re-measure this many fastest configs against each other and keep "
                        "the winner (0: keep the single fastest measurement)")
    p.add_argument("--force", action="store_true",
                   help="tune --trials more configs even when the shape's bucket already holds that many")
    p.add_argument("--json", help="write the result and every trial to this JSON file")
    p.add_argument("--plot", help="write plots: FILE.png or FILE.html (history and importances; "
                                  "with --compare: best-so-far curves, FILE.png)")
    p.add_argument("--replay", nargs="+", metavar="FILE",
                   help="recorded spaces: Kernel Tuner cache JSON(.gz) or CSV (several: one after the other)")
    p.add_argument("--transfer", nargs="+", metavar="FILE",
                   help="with --replay: other devices' records of the kernel, as seeds and prior "
                        "(records of the replayed device itself are left out)")
    p.add_argument("--replay-fix", help="with --replay: hold parameters at one value, e.g. nvml_gr_clock=1815")
    p.add_argument("--replay-objective", help="objective field/column(s) of the record (default: time)")
    p.add_argument("--compare", help="with --replay: strategies to compare, e.g. tpe,random")
    p.add_argument("--seeds", type=int, default=20, help="with --compare: runs per strategy (seeds from --seed)")
    p.add_argument("--within", type=float, default=0.10, help="with --compare: target = optimum x (1+within)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    console = Console()
    if args.trials < 1:
        raise TilecError("--trials must be at least 1")
    if args.replay:
        return _replay(args, console)
    if args.reset_db:
        from tilec.tuning.database import reset
        path, moved = reset(args.storage)
        console.print(f"tuning database {path}: " + (f"moved to {moved}; the next tune starts a new one"
                                                     if moved else "none there yet; nothing to reset"))
        if not args.op:
            return 0
    if not args.op or not args.shape:
        raise TilecError("tilec tune needs an OP and --shape (or --replay FILE)")
    from .report import ProgressBar, study_record, table, write_json, write_plots
    from .run import resolve_op, tune_op
    op = resolve_op(args.op)
    shape = parse_shape(args.shape, tuple(op.shape_names))
    device = None if args.profile else (args.device or "cpu")
    with ProgressBar(args.trials, args.objective, enabled=not args.quiet) as bar:
        result, key = tune_op(op, shape, args.dtype, device=device, profile=args.profile, backend=args.backend,
                              n_evals=args.trials, strategy=args.strategy, storage=args.storage, seed=args.seed,
                              repeats=args.repeats, objective=args.objective, use_seeds=not args.no_seeds,
                              confirm=args.confirm, force=args.force, progress=bar.update)
    if result.reused_from is not None:
        tuned_at = ", ".join(_shape_text(s) for s in result.reused_from) or "shapes not recorded"
        console.print(f"[yellow]nothing tuned:[/] the study of the bucket {_shape_text(dict(key.shape))} already "
                      f"holds {result.evaluations} configs (>= --trials {args.trials}), tuned at {tuned_at}; "
                      f"op calls at {_shape_text(shape)} reuse its best. --force tunes {args.trials} more configs "
                      f"at {_shape_text(shape)}.")
    console.print(table(result.study, args.objective))
    for line in summary(result, key, shape, args):
        console.print(line, soft_wrap=True)   # a path is never broken across lines
    if args.json:
        write_json(args.json, study_record(result.study, {"best_config": result.best_config,
                                                           "best_value": result.best_value,
                                                           "confirmed": result.study.user_attrs.get("confirmed"),
                                                           "objective": args.objective, "strategy": args.strategy}))
    if args.plot:
        for path in write_plots(result.study, args.plot):
            console.print(f"wrote {path}")
    return 0 if result.best_config is not None else 1


def _shape_text(shape: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in shape.items())


def summary(result, key, shape: dict, args) -> list[str]:
    """What was tuned, what won (the stored best: rank 1 of the table), where it went and
    which op calls now use it."""
    from tilec.tuning.database import as_url, default_url, read_best, sqlite_path
    from .report import fmt_value
    url = as_url(args.storage) if args.storage else default_url()
    stored = read_best(url, key.study_name) if args.objective == "time" else None
    best, value = stored if stored else (result.best_config, result.best_value)
    confirmed = result.study.user_attrs.get("confirmed") if args.objective == "time" else None
    if result.confirmed and confirmed:
        how = (f"confirmed: median of {confirmed['rounds']} interleaved rounds over the "
               f"{len(confirmed['contenders'])} fastest")
        if confirmed.get("kept_incumbent_within") is not None:
            how += f"; the earlier pick kept (no challenger faster by over {confirmed['kept_incumbent_within']:.0%})"
    else:
        how = "the fastest single measurement"
    where = str(sqlite_path(url) or _hide_password(url))
    lines = [f"tuned {key.op} at {_shape_text(shape)} ({key.dtype}, {key.backend}, {key.device}): "
             f"{result.evaluated_now} configs evaluated now, {result.evaluations} in the study",
             f"best: {best}  {fmt_value(value, args.objective)} ({how})",
             f"study {key.study_name} (shape bucket {_shape_text(dict(key.shape))}: each dimension rounded up to "
             f"a power of two), stored in {where}"]
    if args.objective != "time":
        lines.append("an energy tune: op calls keep using the time-tuned config")
    elif key.device.startswith("profile-"):
        lines.append(f"modeled for the {args.profile} profile: op calls on this machine do not read it "
                     f"(--json writes it out)")
    else:
        lines.append(f"ops.{key.op} calls with {key.dtype} inputs on {key.backend}/{key.device} whose shape rounds "
                     f"up to {_shape_text(dict(key.shape))} now use it (TILEC_TUNING_DB={where} "
                     f"if you chose --storage)")
    return lines


def _hide_password(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _replay(args, console: Console) -> int:
    from .replay_cli import main as replay_main
    return replay_main(args, console)


def standalone(argv: list[str] | None = None) -> int:
    """``python -m autotune ...`` = ``tilec tune ...``."""
    parser = argparse.ArgumentParser(prog="python -m autotune")
    register(parser.add_subparsers(dest="command"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["tune"]:
        argv = ["tune", *argv]
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TilecError as e:
        print(f"tilec: error: {e}", file=sys.stderr)
        return 2
