"""Constraints first, the new strategies and transfer: on synthetic spaces and caches (fast),
with a kill-and-resume run, and on the recorded GPU spaces in ../shared (skipped when absent)."""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfer_support import OPTIMA, write_cache

from autotune import efficiency, encoding, strategies
from autotune.evaluators import Measurement, replay
from autotune.feasible import FeasibleSet
from autotune.transfer import Transfer
from autotune.tuner import tune
from tilec.errors import TilecError
from tilec.space import Param, Space

REPO = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).with_name("test_transfer_support.py")
FAST = [s for s in strategies.NAMES if s not in ("gp", "cmaes")]


def _space(limit: int) -> Space:
    return Space([Param("A", (1, 2, 4, 8, 16)), Param("B", (1, 2, 3, 5, 7)), Param("C", ("x", "y"))],
                 [lambda c, p: None if c["A"] * c["B"] <= (p or {}).get("limit", limit) else "A*B over the limit"])


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 112), st.integers(1, 40), st.sampled_from(FAST), st.integers(0, 999))
def test_infeasible_points_are_never_evaluated_and_each_proposal_costs_one(limit, n, strategy, seed):
    space = _space(200)
    profile = {"limit": limit}               # the profile's resource limit prunes the space
    fs = FeasibleSet(space, profile)
    assert sorted(fs.ids) == sorted(encoding.config_id(c) for c in space.configs(profile))
    calls = []

    def evaluate(cfg):
        calls.append(cfg)
        return Measurement(1.0 + cfg["A"] / (1 + cfg["B"]) + (cfg["C"] == "y"))

    prior = {cid: float(i % 7) for i, cid in enumerate(fs.ids)}
    res = tune(space, evaluate, n_evals=n, study_name="f", storage="memory", strategy=strategy, seed=seed,
               profile=profile, prior=prior)
    assert all(c["A"] * c["B"] <= limit for c in calls)
    assert len(calls) == res.evaluations == min(n, len(fs)) == len(res.study.get_trials())
    assert len({encoding.config_id(c) for c in calls}) == len(calls)


def test_a_replay_counts_every_proposal_and_never_asks_for_unrecorded_configs(tmp_path):
    rec = replay.load(write_cache(tmp_path / "a.json", "A"))
    ev = rec.evaluator()
    res = tune(rec.space(), ev, n_evals=60, study_name="r", storage="memory", strategy="tpe", seed=1)
    assert ev.calls == res.evaluations == 60 == len(res.study.get_trials())
    assert all(json.dumps(t.user_attrs["config"], sort_keys=True) in rec.records for t in res.study.get_trials())


def test_a_huge_space_is_searched_through_a_feasible_pool():
    space = Space([Param(f"p{i}", tuple(range(8))) for i in range(7)],            # 8**7 = 2.1M points
                  [lambda c, p: None if sum(c.values()) % 3 else "sum divisible by 3"])
    fs = FeasibleSet(space, seed=0)
    assert not fs.complete and 1000 < len(fs) and all(sum(c.values()) % 3 for c in fs.configs[:500])


def test_no_feasible_config_is_a_clear_error():
    space = Space([Param("A", (1, 2))], [lambda c, p: "never"])
    with pytest.raises(TilecError, match="no config of the space is feasible"):
        tune(space, lambda c: Measurement(1.0), n_evals=3, study_name="n", storage="memory")


@pytest.mark.parametrize("strategy", ["genetic", "portfolio", "gp"])
def test_new_strategies_find_the_optimum_of_a_small_space(strategy, tmp_path):
    if strategy == "gp":
        pytest.importorskip("torch", reason="the gp strategy needs torch")
    rec = replay.load(write_cache(tmp_path / "a.json", "A"))
    res = tune(rec.space(), rec.evaluator(), n_evals=len(rec.records), study_name="s", storage="memory",
               strategy=strategy, seed=2, stop_at=rec.optimum() * rec.unit_s)
    assert res.best_value == pytest.approx(1e-3)
    assert res.best_config == dict(zip(("bx", "ty", "unroll"), OPTIMA["A"]))


# ---- transfer -------------------------------------------------------------------------------

def _devices(tmp_path) -> list[Path]:
    return [write_cache(tmp_path / f"{d}.json", d) for d in "ABCD"]


def test_transfer_seeds_come_only_from_other_devices(tmp_path):
    files = _devices(tmp_path)
    again = write_cache(tmp_path / "A-rerun.json", "A")             # another run on the target's device
    target = replay.load(files[0])
    t = Transfer.from_files(target, [*files, again])
    assert sorted(c[0] for c in t.contexts) == ["GPU B", "GPU C", "GPU D"]
    own = dict(zip(("bx", "ty", "unroll"), OPTIMA["A"]))
    seeds = t.seeds()
    assert own not in seeds
    assert seeds[:3] == [dict(zip(("bx", "ty", "unroll"), OPTIMA[d])) for d in "BCD"]
    ev = target.evaluator()
    res = tune(target.space(), ev, n_evals=3, study_name="t", storage="memory", strategy="portfolio", seed=0,
               seeds=seeds, prior=t.prior())
    assert [h["config"] for h in res.history] == seeds[:3]           # the first trials are the others' best
    with pytest.raises(TilecError, match="no record of another device"):
        from autotune.replay_cli import transfer_for
        transfer_for(target, type("A", (), {"transfer": [str(files[0]), str(again)], "replay_objective": None})())


def test_transfer_from_other_settings_of_a_fixed_parameter(tmp_path):
    path = write_cache(tmp_path / "clocks.json", "A", name="One GPU", clocks=(1400, 1600, 1800, 2000))
    target = replay.load(path).fix({"clock": 1600})                  # device B's bowl
    assert target.optimum() == 1.0 and "clock" not in target.params
    t = Transfer.from_files(target, [path])
    assert [dict(c[1])["clock"] for c in t.contexts] == [1400, 1800, 2000]
    assert dict(zip(("bx", "ty", "unroll"), OPTIMA["B"])) not in t.seeds(k=1)
    with pytest.raises(TilecError, match="not among the recorded values"):
        replay.load(path).fix({"clock": 1700})


def test_transfer_prior_helps_and_random_baseline_ignores_it(tmp_path):
    files = _devices(tmp_path)
    target = replay.load(files[1])                                   # B: C and D are near, A too
    t = Transfer.from_files(target, files)
    port, rnd = efficiency.compare(target, ["portfolio", "random"], seeds=5, within=0.0, cap=200, transfer=t)
    assert port.reached == 5 and port.median < rnd.median
    assert all(c[0] >= 1.0 for c in rnd.curves) and len(port.curves[0]) == port.needed[0]


def test_a_tune_with_transfer_resumes_after_sigkill(tmp_path):
    files = _devices(tmp_path)
    url = f"sqlite:///{tmp_path / 'transfer.db'}"
    logs = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    args = [str(files[0]), ",".join(map(str, files)), url, "30"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(SUPPORT), *args, "0.3", str(logs[0])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while (not logs[0].exists() or len(logs[0].read_text().splitlines()) < 5) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.15)                          # inside the next evaluation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = logs[0].read_text().splitlines()
    resumed = subprocess.run([sys.executable, str(SUPPORT), *args, "0", str(logs[1])], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    second = logs[1].read_text().splitlines()
    assert json.loads(resumed.stdout)["evaluations"] == 30 == len(first) + len(second)
    assert len(set(first + second)) == 30                           # nothing evaluated twice
    seeds = [json.dumps(dict(zip(("bx", "ty", "unroll"), OPTIMA[d])), sort_keys=True) for d in "BCD"]
    assert first[:3] == seeds


def test_bad_fix_is_an_error(tmp_path):
    rec = replay.load(write_cache(tmp_path / "a.json", "A"))
    with pytest.raises(TilecError, match="cannot fix"):
        rec.fix({"nope": 1})
    from autotune.replay_cli import parse_fix
    assert parse_fix("clock=1815,mode=fast") == {"clock": 1815, "mode": "fast"}
    with pytest.raises(TilecError, match="NAME=VALUE"):
        parse_fix("clock")


# ---- recorded GPU spaces (../shared) ------------------------------------------------------------

KT = "kerneltuner_convolution_pnpoly_turing_ampere"
GPUS = ("RTX_2080_Ti", "RTX_3060_laptop", "RTX_3090", "RTX_Titan")


@pytest.mark.parametrize("kernel,gpu", [("convolution", "RTX_Titan"), ("pnpoly", "RTX_3090")])
def test_default_strategy_with_transfer_needs_a_third_of_random_search(shared_dir, kernel, gpu):
    folder = shared_dir / "datasets" / KT / kernel
    if not (folder / f"{gpu}.json.gz").exists():
        pytest.skip(f"{folder} is not present")
    target = replay.load(folder / f"{gpu}.json.gz")
    t = Transfer.from_files(target, [folder / f"{g}.json.gz" for g in GPUS])
    assert len(t.sources) == 3 and target.context not in t.contexts
    best, rnd = efficiency.compare(target, [strategies.DEFAULT, "random"], seeds=5, within=0.10, cap=1500,
                                   transfer=t)
    assert best.reached == 5 and best.median <= rnd.median / 3, (best.needed, rnd.needed)
    assert statistics.median(rnd.needed) > 10                         # the target is not trivially easy


def test_database_transfer_seeds_come_from_other_devices_only(tmp_path):
    from autotune import database
    from tilec.tuning.keys import TuningKey
    from autotune.transfer import database_seeds
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = database.open_storage(url)
    shape = {"M": 1024, "N": 1024, "K": 1024}
    for dev, cfg, sh in (("profile:a100_sxm4_80gb", {"BM": 128}, shape), ("profile:h100_sxm", {"BM": 256}, shape),
                         ("profile:l4", {"BM": 32}, {"M": 64, "N": 64, "K": 64}), ("cpu", {"BM": 16}, shape)):
        key = TuningKey.make("gemm", sh, "float16", "triton", dev)
        database.record_best(store, key.study_name, cfg, 1e-3, key.as_dict())
    other_op = TuningKey.make("gemv", {"M": 1024, "K": 1024}, "float16", "triton", "profile:h100_sxm")
    database.record_best(store, other_op.study_name, {"BM": 999}, 1e-3, other_op.as_dict())
    mine = TuningKey.make("gemm", shape, "float16", "triton", "cpu")
    seeds = database_seeds(url, mine, k=5)
    assert {"BM": 16} not in seeds and {"BM": 999} not in seeds             # own device, other op
    assert seeds[:2] in ([{"BM": 128}, {"BM": 256}], [{"BM": 256}, {"BM": 128}]) and seeds[2] == {"BM": 32}
    assert database_seeds(f"sqlite:///{tmp_path / 'none.sqlite'}", mine) == []
    assert not (tmp_path / "none.sqlite").exists()
