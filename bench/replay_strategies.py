"""Search strategies on recorded GPU search spaces (../shared/datasets, development data):
evaluations to reach within 10% of each file's optimum, the default strategy with transfer
leave-one-device-out against uninformed random search, and the strategies without transfer.

    python -m bench replay_strategies [--datasets DIR] [--json FILE] [--quick]

Files: convolution and pnpoly on four GPUs each (transfer from the other three), and the
PowerSensor3 tensor-core GEMM at 1815 MHz, objective time (transfer from the other nine
locked clocks of the same card: the only other records of that kernel).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from autotune import efficiency, strategies
from autotune.evaluators import replay
from autotune.transfer import Transfer

from .timing import write_json

KT = "kerneltuner_convolution_pnpoly_turing_ampere"
GPUS = ("RTX_2080_Ti", "RTX_3060_laptop", "RTX_3090", "RTX_Titan")
GEMM = "powersensor3_tc_complex_gemm_rtx4000ada/AD4000_wmma_complex_gemm_opt_16bit_1x4096x4096x4096.json.gz"
# Seeds and budgets no test uses (the tests: seeds 0-4, cap 1500).
SETTINGS = ({"name": "main", "first_seed": 100, "seeds": 20, "cap": 1000},
            {"name": "held_out", "first_seed": 1000, "seeds": 20, "cap": 400})
WITHOUT_TRANSFER = ("portfolio", "tpe", "random")     # portfolio without a prior: the genetic algorithm


def files(root: Path) -> list[tuple[str, replay.RecordedSpace, list[Path], str | None]]:
    out = []
    for kernel in ("convolution", "pnpoly"):
        paths = [root / KT / kernel / f"{g}.json.gz" for g in GPUS]
        for p in paths:
            out.append((f"{kernel}/{p.name}", replay.load(p), paths, None))
    gemm = root / GEMM
    out.append(("tc_complex_gemm@1815MHz", replay.load(gemm, "time").fix({"nvml_gr_clock": 1815}), [gemm], "time"))
    return out


def row(label, recorded, transfer, setting, names) -> dict:
    t = time.time()
    res = efficiency.compare(recorded, names, seeds=setting["seeds"], within=0.10, cap=setting["cap"],
                             transfer=transfer, first_seed=setting["first_seed"])
    by = {r.strategy: r.as_dict() for r in res}
    out = {"file": label, "device": recorded.meta.get("device_name"), "kernel": recorded.meta.get("kernel_name"),
           "recorded": len(recorded.records), "valid": len(recorded.valid()),
           "optimum_s": recorded.optimum() * recorded.unit_s,
           "transfer_from": [list(c) for c in transfer.contexts] if transfer else [], "results": by,
           "seconds": round(time.time() - t, 1)}
    if strategies.DEFAULT in by and "random" in by:
        d, r = by[strategies.DEFAULT]["median"], by["random"]["median"]
        out["default_over_random"] = d / r
        out["target_met"] = d <= r / 3            # which also means never more than random
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench replay_strategies")
    default_root = next((d for d in (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets",
                                     Path("/work/shared/datasets")) if d.is_dir()), None)
    p.add_argument("--datasets", type=Path, default=default_root)
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "replay_strategies.json"))
    p.add_argument("--quick", action="store_true", help="3 seeds per setting, no comparison without transfer")
    p.add_argument("--without-transfer", action=argparse.BooleanOptionalAction, default=True,
                   help="also compare the strategies without transfer (the slow part)")
    args = p.parse_args(argv)
    if args.datasets is None or not args.datasets.is_dir():
        raise SystemExit("the development datasets (../shared/datasets) are not present; pass --datasets DIR")
    settings = [dict(s, seeds=3) for s in SETTINGS] if args.quick else list(SETTINGS)
    result = {"default_strategy": strategies.DEFAULT, "within": 0.10,
              "conditions": {"loadavg": os.getloadavg(), "note": "replay: counts evaluations, no timing"},
              "settings": [], "without_transfer": None}
    loaded = files(args.datasets)
    for setting in settings:
        rows = []
        for label, recorded, paths, objective in loaded:
            transfer = Transfer.from_files(recorded, paths, objective)
            rows.append(row(label, recorded, transfer, setting, [strategies.DEFAULT, "random"]))
            r = rows[-1]
            print(f"{setting['name']:9s} {label:32s} default {r['results'][strategies.DEFAULT]['median']:7g}  "
                  f"random {r['results']['random']['median']:7g}  ratio {r['default_over_random']:.3f}", flush=True)
        result["settings"].append({**setting, "files": rows, "all_met": all(r["target_met"] for r in rows)})
        write_json(args.json, result)                 # what is done so far survives an interruption
    if args.without_transfer and not args.quick:
        setting = {"name": "without_transfer", "first_seed": 2000, "seeds": 10, "cap": 600}
        rows = []
        for label, recorded, _, _ in loaded:
            rows.append(row(label, recorded, None, setting, list(WITHOUT_TRANSFER)))
            print(f"no transfer {label:32s} " + "  ".join(f"{s} {rows[-1]['results'][s]['median']:g}"
                                                          for s in WITHOUT_TRANSFER), flush=True)
        result["without_transfer"] = {**setting, "files": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
