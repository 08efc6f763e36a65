"""Kernel selection for unseen shapes: choose() between a fixed-kernel prior and a model,
its margin set on training shapes, and ``tilec cost-model select-eval``."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotune.cost.records import Record
from autotune.cost.select import by_problem, calibrate, choose, fixed_ranking, select_eval

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [{"B": b} for b in (16, 32, 64, 128, 256)]


def truth(shape: dict, cfg: dict) -> float:
    """The best block grows with the problem; a middle one is a fair compromise everywhere."""
    ideal = 16 * 2 ** min(4, int(math.log2(shape["N"]) // 3))
    return 1e-3 * (1 + 0.3 * abs(math.log2(cfg["B"] / ideal)))


def records(n_shapes: int = 16) -> list[Record]:
    return [Record("k", {"N": 2 ** (4 + i % 12)}, "float32", dict(c), truth({"N": 2 ** (4 + i % 12)}, c),
                   device="host", extra={"i": i}) for i in range(n_shapes) for c in CONFIGS]


class Model:
    """A stand-in for LearnedModel: predicts from the truth, or its opposite."""

    def __init__(self, sign: float = 1.0):
        self.sign = sign

    def predict(self, recs):
        t = np.array([truth(r.shape, r.config) for r in recs])
        return (t if self.sign > 0 else 1.0 / t), t


def test_a_good_model_is_followed_and_a_misleading_one_is_overruled():
    recs = records()
    assert len(by_problem(recs)) == 12                # 16 rows of shapes, 12 distinct
    fixed = fixed_ranking(recs)["k"]
    shapes = [{"N": 2 ** (4 + i)} for i in range(12)]
    mean_slowdown = {c["B"]: np.mean([np.log(truth(s, c) / min(truth(s, d) for d in CONFIGS)) for s in shapes])
                     for c in CONFIGS}
    prior = min(mean_slowdown, key=mean_slowdown.get)
    assert json.loads(fixed[0]) == {"B": prior} and prior not in (16, 256)
    problem = Record("k", {"N": 2 ** 14}, "float32", {}, 1.0)
    good = choose(problem, CONFIGS, Model(), fixed, margin=0.0)
    assert good.source == "model" and good.config == {"B": 256}
    assert calibrate(recs, lambda rs: Model()) == 0.0
    margin = calibrate(recs, lambda rs: Model(-1.0))                   # a margin the model never clears
    assert margin >= 0.5
    bad = choose(problem, CONFIGS, Model(-1.0), fixed, margin=margin)
    assert bad.source == "fixed" and bad.config == {"B": prior}
    assert choose(problem, CONFIGS, Model(-1.0)).config == {"B": 16}    # no prior: the model alone
    # a race times the model's two favourites and the prior: the misleading model's picks
    # (16, 32) lose to the prior, measured; a good model's (256, 128) win
    timed = []
    raced = choose(problem, CONFIGS, Model(-1.0), fixed, margin=margin,
                   measure=lambda c: timed.append(c["B"]) or truth(problem.shape, c))
    assert sorted(timed) == sorted({16, 32, prior}) and raced.config == {"B": prior} and raced.source == "race"
    assert choose(problem, CONFIGS, Model(), fixed, measure=lambda c: truth(problem.shape, c)).config == {"B": 256}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_held_out_selection_is_never_worse_than_the_fixed_kernel(sign):
    res = select_eval(records(24), lambda rs: Model(sign), folds=4)
    assert res["choose"]["geomean_slowdown"] <= res["fixed"]["geomean_slowdown"] + 1e-12
    assert res["choose"]["worst_slowdown"] <= res["fixed"]["worst_slowdown"] + 1e-12
    # the race includes the prior: never worse than the fixed kernel on any problem
    assert all(r <= f for r, f in zip(res["slowdowns"]["race"], res["slowdowns"]["fixed"]))
    if sign > 0:
        assert res["choose"]["within_5pct"] == 1.0
    else:
        assert res["model"]["worst_slowdown"] > res["choose"]["worst_slowdown"]


def test_cli_select_eval_on_the_host_records(tmp_path):
    data = REPO / "autotune" / "cost" / "data" / "host_numba_records.jsonl"
    out = subprocess.run([sys.executable, "-m", "autotune.cli_main", "cost-model", "select-eval", str(data),
                          "--holdout", "shape", "--folds", "3", "--rounds", "40", "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                                              "TILEC_CACHE_DIR": str(tmp_path)}, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "choose" in out.stdout and "within 5%" in out.stdout
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["choose"]["problems"] == 44
    assert res["choose"]["geomean_slowdown"] <= res["fixed"]["geomean_slowdown"]


def test_regret_and_power_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from autotune.cost.power import plot_power
    from autotune.cost.select import plot_regret
    res = select_eval(records(24), lambda rs: Model(1.0), folds=4)
    assert sorted(res["slowdowns"]) == ["choose", "fixed", "model", "race"]
    assert len(res["slowdowns"]["model"]) == res["model"]["problems"]
    assert max(res["slowdowns"]["fixed"]) == pytest.approx(res["fixed"]["worst_slowdown"])
    assert plot_regret(res, str(tmp_path / "r.png"))
    held = {"by config": {"measured_w": [40.0, 60.0, 90.0], "predicted_w": [45.0, 58.0, 80.0],
                          "power_r2": 0.9, "energy_mape": 0.05}}
    assert plot_power(held, 10.0, 130.0, str(tmp_path / "p.png"))
    for name in ("r.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_host_records_hold_100_shapes_of_every_family_and_selection_holds():
    """The two host record files: over 100 shapes, every op family; selection held out by
    shape is never worse than the fixed kernel (mean and worst), and the race of the model's
    top two with the prior lands within 5% of the fastest on at least 90%."""
    from autotune.cost.learned import LearnedModel
    from autotune.cost.records import load_any
    data = REPO / "autotune" / "cost" / "data"
    recs = load_any(data / "host_numba_records.jsonl") + load_any(data / "host_numba_records_more.jsonl")
    problems = by_problem(recs)
    assert len(problems) >= 100
    assert {k.split("|")[1] for k in problems} == {"gemm", "gemv", "quant_gemv", "attention", "quant_gemm", "lut_gemm"}
    res = select_eval(recs, lambda rs: LearnedModel.fit(rs, rounds=150), folds=5)
    assert res["choose"]["problems"] == len(problems)
    assert res["choose"]["geomean_slowdown"] <= res["fixed"]["geomean_slowdown"]
    assert res["choose"]["worst_slowdown"] <= res["fixed"]["worst_slowdown"]
    assert res["race"]["within_5pct"] >= 0.9
