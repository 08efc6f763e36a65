"""Cost-model figures on data kept apart from training (../shared/datasets, development data,
and the project's host records):

- bounded power on the PowerSensor3 RTX 4000 Ada GEMM, held out by config and by clock;
- the analytical model's Spearman on the UCI SGEMM (GTX 680) data, without training;
- kernel selection for unseen shapes on the host records (model, fixed kernel, choose()).

    python -m bench cost_models [--datasets DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from .timing import write_json

GEMM = "powersensor3_tc_complex_gemm_rtx4000ada/AD4000_wmma_complex_gemm_opt_16bit_1x4096x4096x4096.json.gz"
UCI = "uci_sgemm_gtx680/sgemm_product.csv"
HOST = Path(__file__).resolve().parents[1] / "autotune" / "cost" / "data" / "host_numba_records.jsonl"


def power_figures(root: Path) -> dict:
    import hw_profiles
    from autotune.cost import power, records
    recs = records.load_kernel_tuner(root / GEMM)
    prof = hw_profiles.load("rtx4000_ada")
    by_config = [json.dumps({k: v for k, v in r.config.items() if k != "nvml_gr_clock"}, sort_keys=True) for r in recs]
    by_clock = [r.config["nvml_gr_clock"] for r in recs]
    return {"profile": prof.name, "idle_w": prof.idle_power_w, "tdp_w": prof.tdp_w,
            "energy": "predicted power x measured runtime",
            "held_out_config": power.holdout(recs, by_config, prof.idle_power_w, prof.tdp_w, folds=5),
            "held_out_clock": power.holdout(recs, by_clock, prof.idle_power_w, prof.tdp_w, folds=10)}


def uci_figures(root: Path, n: int = 5000) -> dict:
    from autotune.cost import records
    from autotune.cost.evaluate import spearman
    from autotune.cost.features import analyse
    recs = records.load_uci_sgemm(root / UCI, limit=n, seed=0)
    preds = [analyse(r)[1] for r in recs]
    y = np.array([r.runtime_s for r in recs])
    p = np.array([q.runtime_s for q in preds])
    feasible = np.array([q.feasible for q in preds])
    return {"rows": n, "spearman_all": spearman(y, p), "spearman_feasible": spearman(y[feasible], p[feasible]),
            "called_infeasible": float(1 - feasible.mean())}


def selection_figures() -> dict:
    from autotune.cost import records
    from autotune.cost.learned import LearnedModel
    from autotune.cost.select import select_eval
    return select_eval(records.load_any(HOST), lambda rs: LearnedModel.fit(rs, rounds=150), folds=5)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench cost_models")
    default_root = next((d for d in (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets",
                                     Path("/work/shared/datasets")) if d.is_dir()), None)
    p.add_argument("--datasets", type=Path, default=default_root)
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "cost_models.json"))
    args = p.parse_args(argv)
    if args.datasets is None or not args.datasets.is_dir():
        raise SystemExit("the development datasets (../shared/datasets) are not present; pass --datasets DIR")
    out = {"loadavg": os.getloadavg(), "power": power_figures(args.datasets), "uci_sgemm": uci_figures(args.datasets),
           "selection_host_records": selection_figures()}
    print(json.dumps(out, indent=1, default=str))
    write_json(args.json, json.loads(json.dumps(out, default=str)))
    return out


if __name__ == "__main__":
    main()
