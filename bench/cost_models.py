"""Cost-model figures on data kept apart from training (../shared/datasets, development data,
and the project's host records):

- bounded power on the PowerSensor3 RTX 4000 Ada GEMM, held out by config and by clock;
- the analytical model's Spearman on the UCI SGEMM (GTX 680) data, without training
  (``before``: the figure of the model this replaced, on the same rows);
- kernel selection for unseen shapes on the host records (model, fixed kernel, choose()).

    python -m bench cost_models [--datasets DIR] [--json FILE] [--uci-rows N|0] [--uci-all] [--plot DIR]
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
DATA = Path(__file__).resolve().parents[1] / "autotune" / "cost" / "data"
# the 44 shapes of hostbench's PLAN, then the 58 of its EXTRA_SHAPES (measured on another day
# and VM; each file's sidecar holds the figures of the machine that measured it)
HOST = [DATA / "host_numba_records.jsonl", DATA / "host_numba_records_more.jsonl"]
# the model before kernel descriptions, spills and the CLTune access counts (commit 4873244),
# on the 5,000 rows (seed 0) this bench samples
UCI_BEFORE = {"rows": 5000, "spearman_all": 0.02082066822645093, "spearman_feasible": 0.5455019478239915,
              "called_infeasible": 0.4256}


def power_figures(root: Path, plot: Path | None = None) -> dict:
    import hw_profiles
    from autotune.cost import power, records
    recs = records.load_kernel_tuner(root / GEMM)
    prof = hw_profiles.load("rtx4000_ada")
    by_config = [json.dumps({k: v for k, v in r.config.items() if k != "nvml_gr_clock"}, sort_keys=True) for r in recs]
    by_clock = [r.config["nvml_gr_clock"] for r in recs]
    held = {"held_out_config": power.holdout(recs, by_config, prof.idle_power_w, prof.tdp_w, folds=5, points=True),
            "held_out_clock": power.holdout(recs, by_clock, prof.idle_power_w, prof.tdp_w, folds=10, points=True)}
    if plot is not None:
        power.plot_power(held, prof.idle_power_w, prof.tdp_w, str(plot / "cost_models_power.png"))
    for h in held.values():
        del h["measured_w"], h["predicted_w"]
    return {"profile": prof.name, "idle_w": prof.idle_power_w, "tdp_w": prof.tdp_w,
            "energy": "predicted power x measured runtime", **held,
            "small_power_caches": small_cache_figures(root)}


SMALL = "kerneltuner_small_power_caches"


def small_cache_figures(root: Path) -> dict:
    """The analytical bounded power (no training: utilisation x clock^3 between the profile's
    idle and TDP) on each small Kernel Tuner power cache, and the calibrated DVFS law (three
    constants; too few rows, 10-15, to train trees on) with each clock or config held out."""
    from autotune.cost import power, records
    from autotune.cost.evaluate import mape, r2
    from autotune.cost.features import analyse, profile_of
    out = {}
    for path in sorted((root / SMALL).glob("*.json")):
        recs = [r for r in records.load_kernel_tuner(path) if r.power_w and r.energy_j]
        prof = profile_of(recs[0])
        y = np.array([r.power_w for r in recs])
        p = np.array([power.analytical_power(analyse(r)[0], prof, r.runtime_s, r.clock_hz) for r in recs])
        e, t = np.array([r.energy_j for r in recs]), np.array([r.runtime_s for r in recs])
        # calibrated: the DVFS law's three constants fitted with each clock (or config, where the
        # clock is locked) held out in turn
        clocks = [r.clock_hz for r in recs]
        groups = clocks if len(set(clocks)) > 1 else [repr(sorted(r.config.items())) for r in recs]
        cal = power.holdout(recs, groups, prof.idle_power_w, prof.tdp_w, folds=len(recs),
                            fit=lambda train: power.DVFSPower.fit(train, prof))
        whole = power.DVFSPower.fit(recs, prof)
        out[path.name] = {"profile": prof.name, "rows": len(recs), "idle_w": prof.idle_power_w, "tdp_w": prof.tdp_w,
                          "power_r2": r2(y, p), "energy_mape": mape(e, p * t),
                          "measured_w": [float(y.min()), float(y.max())], "predicted_w": [float(p.min()), float(p.max())],
                          "calibrated_held_out": {"held_out": "clock" if len(set(clocks)) > 1 else "config",
                                                  "power_r2": cal["power_r2"], "energy_mape": cal["energy_mape"],
                                                  "activity": whole.activity, "v_floor": whole.v_floor,
                                                  "active_floor": whole.base}}
    return out


def uci_figures(root: Path, n: int = 5000) -> dict:
    """Spearman over every sampled row (``n`` = 0: all 241,600), the rows the feasibility
    check flags (register spills) included, and the bound the model names."""
    from collections import Counter

    from autotune.cost import records
    from autotune.cost.evaluate import spearman
    from autotune.cost.features import analyse
    recs = records.load_uci_sgemm(root / UCI, limit=n or None, seed=0)
    preds = [analyse(r)[1] for r in recs]
    y = np.array([r.runtime_s for r in recs])
    p = np.array([q.runtime_s for q in preds])
    feasible = np.array([q.feasible for q in preds])
    return {"rows": len(recs), "spearman_all": spearman(y, p), "spearman_feasible": spearman(y[feasible], p[feasible]),
            "spearman_flagged": spearman(y[~feasible], p[~feasible]), "called_infeasible": float(1 - feasible.mean()),
            "all_finite": bool(np.isfinite(p).all()), "median_predicted_over_measured": float(np.median(p / y)),
            "bounds": dict(Counter(q.bound for q in preds)), "before": UCI_BEFORE,
            "constants": "sourced/estimated GPU figures only (hw_profiles/gtx680.toml, analytical.py [E]/[V] "
                         "constants, cltune.REGISTER_OVERHEAD); none fitted to the UCI runtimes"}


def selection_figures(plot: Path | None = None) -> dict:
    from autotune.cost import records
    from autotune.cost.learned import LearnedModel
    from autotune.cost.select import plot_regret, select_eval
    recs = [r for path in HOST if path.is_file() for r in records.load_any(path)]
    res = select_eval(recs, lambda rs: LearnedModel.fit(rs, rounds=150), folds=5)
    if plot is not None:
        plot_regret(res, str(plot / "cost_models_regret.png"))
    res["files"] = [p.name for p in HOST if p.is_file()]
    res["ops"] = sorted({r.op for r in recs})
    res["worst"] = {k: max(v) for k, v in res.pop("slowdowns").items()}
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench cost_models")
    default_root = next((d for d in (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets",
                                     Path("/work/shared/datasets")) if d.is_dir()), None)
    p.add_argument("--datasets", type=Path, default=default_root)
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "cost_models.json"))
    p.add_argument("--uci-rows", type=int, default=5000, help="UCI rows sampled (seed 0); 0: all 241,600")
    p.add_argument("--uci-all", action="store_true", help="also every UCI row (minutes)")
    p.add_argument("--plot", type=Path, help="write cost_models_power.png and cost_models_regret.png here "
                                             "(needs matplotlib)")
    args = p.parse_args(argv)
    if args.datasets is None or not args.datasets.is_dir():
        raise SystemExit("the development datasets (../shared/datasets) are not present; pass --datasets DIR")
    power = power_figures(args.datasets, args.plot)
    uci = uci_figures(args.datasets, args.uci_rows)
    uci_all = uci_figures(args.datasets, 0) if args.uci_all and args.uci_rows else None
    sel = selection_figures(args.plot)
    summary = {"uci_spearman": uci["spearman_all"], "uci_rows": uci["rows"],
               **({"uci_spearman_all_rows": uci_all["spearman_all"]} if uci_all else {}),
               "uci_spearman_before": UCI_BEFORE["spearman_all"],
               "power_r2_unseen_config": power["held_out_config"]["power_r2"],
               "energy_mape_unseen_config": power["held_out_config"]["energy_mape"],
               "power_r2_unseen_clock": power["held_out_clock"]["power_r2"],
               "energy_mape_unseen_clock": power["held_out_clock"]["energy_mape"],
               "select_problems": sel["choose"]["problems"],
               **{f"select_{k}_within_5pct": sel[k]["within_5pct"] for k in ("choose", "race", "fixed")},
               **{f"select_{k}_worst": sel[k]["worst_slowdown"] for k in ("choose", "race", "fixed")}}
    out = {"summary": summary, "loadavg": os.getloadavg(), "power": power, "uci_sgemm": uci,
           **({"uci_sgemm_all_rows": uci_all} if uci_all else {}), "selection_host_records": sel}
    print(json.dumps(out, indent=1, default=str))
    write_json(args.json, json.loads(json.dumps(out, default=str)))
    return out


if __name__ == "__main__":
    main()
