"""The tuning loop, strategies, keys, encoding and evaluators, on synthetic spaces (fast)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tune_support import synthetic_cost, synthetic_space

from autotune import encoding, strategies
from autotune.evaluators import Measurement, TrialFailed
from autotune.evaluators.measured import MeasuredEvaluator
from autotune.evaluators.modeled import ModeledEvaluator
from tilec.tuning.keys import TuningKey, bucket, device_id
from tilec.space import Param, Space
from autotune.tuner import tune
from ops.spec import OpSpec
from tilec.errors import TilecError

# ---- keys -------------------------------------------------------------------------------

@given(st.integers(0, 1 << 40))
def test_bucket_is_the_next_power_of_two(n):
    b = bucket({"M": n})["M"]
    assert b & (b - 1) == 0 and b >= max(n, 1)
    assert n <= 1 or b < 2 * n


def test_keys_separate_shape_buckets_dtypes_backends_devices_and_versions():
    base = TuningKey.make("gemm", {"M": 1000, "N": 512, "K": 64}, "float32", "numba", "cpu")
    assert base == TuningKey.make("gemm", {"K": 64, "N": 500, "M": 1024}, "float32", "numba", "cpu")
    others = [TuningKey.make("gemm", {"M": 1025, "N": 512, "K": 64}, "float32", "numba", "cpu"),
              TuningKey.make("gemm", {"M": 1000, "N": 512, "K": 64}, "float16", "numba", "cpu"),
              TuningKey.make("gemm", {"M": 1000, "N": 512, "K": 64}, "float32", "triton", "cpu"),
              TuningKey.make("gemm", {"M": 1000, "N": 512, "K": 64}, "float32", "numba", "profile:a100"),
              TuningKey.make("gemv", {"M": 1000, "N": 512, "K": 64}, "float32", "numba", "cpu")]
    names = {k.study_name for k in others}
    assert base.study_name not in names and len(names) == len(others)
    from dataclasses import replace
    assert replace(base, version="9.9").study_name != base.study_name
    assert "tilec-" in base.study_name and "M=1024" in base.study_name


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "profile:", ""])
def test_bad_device_names_are_refused(bad):
    with pytest.raises(TilecError, match="device"):
        device_id(bad)


def test_bad_shape_in_key_is_refused():
    with pytest.raises(TilecError, match="shape dimension"):
        bucket({"M": -3})


# ---- encoding -----------------------------------------------------------------------------

def test_encoding_round_trips_every_config():
    space = Space([Param("BM", (128, 16, 64)), Param("dot", ("blas", "loops")), Param("P", (True, False)),
                   Param("A", (None, "relu"))])
    dists = encoding.distributions(space)
    for cfg in space.configs():
        params = encoding.encode(space, cfg)
        for name, d in dists.items():
            assert d._contains(d.to_internal_repr(params[name]))
        assert encoding.decode(space, params) == cfg
    # numbers are ordinal: index order follows value order
    assert [encoding.decode(space, {**encoding.encode(space, next(space.configs())), "BM": i})["BM"]
            for i in range(3)] == [16, 64, 128]


# ---- the loop -----------------------------------------------------------------------------

class Counting:
    """A stub evaluator that records calls and can fail or crash on chosen configs."""

    def __init__(self, cost=synthetic_cost, fail=lambda c: None, crash=lambda c: False):
        self.calls: list[dict] = []
        self.cost, self.fail, self.crash = cost, fail, crash

    def __call__(self, cfg):
        self.calls.append(dict(cfg))
        if self.crash(cfg):
            raise ZeroDivisionError("backend bug")
        reason = self.fail(cfg)
        if reason:
            raise TrialFailed(reason)
        return Measurement(self.cost(cfg))


@pytest.mark.parametrize("strategy", strategies.NAMES)
def test_every_strategy_finds_the_optimum_of_a_small_space_without_repeats(strategy):
    if strategy == "cmaes":
        pytest.importorskip("cmaes", reason="the cmaes strategy needs the cmaes package")
    space = synthetic_space()
    ev = Counting()
    feasible = list(space.configs())
    res = tune(space, ev, n_evals=len(feasible), study_name="s", storage="memory", strategy=strategy, seed=3)
    best = min(feasible, key=synthetic_cost)
    assert res.best_config == best and math.isclose(res.best_value, synthetic_cost(best))
    ids = [encoding.config_id(c) for c in ev.calls]
    assert len(ids) == len(set(ids)) == len(feasible)          # every config once, none twice
    assert all(not space.reasons(c) for c in ev.calls)        # nothing infeasible was run


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 30), st.integers(0, 10_000))
def test_budget_counts_distinct_evaluations(n, seed):
    space = synthetic_space()
    ev = Counting()
    res = tune(space, ev, n_evals=n, study_name="b", storage="memory", strategy="tpe", seed=seed)
    expected = min(n, space.size())
    assert res.evaluations == res.evaluated_now == len(ev.calls) == expected
    assert res.best_value == min(synthetic_cost(c) for c in ev.calls)


def test_failures_and_crashes_prune_with_reasons_and_never_win():
    space = synthetic_space()
    best = min(space.configs(), key=synthetic_cost)
    ev = Counting(fail=lambda c: "wrong result: 3 elements off" if c == best else None,
                  crash=lambda c: c["Z"] == "c")
    res = tune(space, ev, n_evals=space.size(), study_name="f", storage="memory", strategy="random", seed=0)
    assert res.best_config != best and res.best_config["Z"] != "c"
    failed = [h for h in res.history if h["value"] is None]
    assert any("wrong result" in h["reason"] for h in failed)
    assert any("ZeroDivisionError: backend bug" in h["reason"] for h in failed)
    pruned = [t for t in res.study.get_trials() if t.user_attrs.get("status") == "failed"]
    assert all(t.state.name == "PRUNED" for t in pruned)
    assert len(pruned) == len(failed) and all(t.user_attrs["reason"] for t in pruned)


def test_infeasible_configs_are_recorded_but_never_evaluated():
    space = synthetic_space()
    ev = Counting()
    res = tune(space, ev, n_evals=space.size(), study_name="i", storage="memory", strategy="random", seed=1)
    infeasible = [t for t in res.study.get_trials() if t.user_attrs.get("status") == "infeasible"]
    assert infeasible, "random search over this space proposes infeasible configs"
    assert all(t.user_attrs["config"]["X"] * t.user_attrs["config"]["Y"] > 32 for t in infeasible)
    assert all(t.user_attrs["reason"] == "X*Y too large" and t.state.name == "PRUNED" for t in infeasible)
    assert all(c["X"] * c["Y"] <= 32 for c in ev.calls)


def test_profile_reaches_the_constraints():
    space = Space([Param("T", (16, 32, 64, 128))],
                  [lambda c, prof: None if prof is None or c["T"] * 1024 <= prof["local"] else "too big"])
    ev = Counting(cost=lambda c: 1.0 / c["T"])
    res = tune(space, ev, n_evals=4, study_name="p", storage="memory", profile={"local": 64 * 1024})
    assert res.best_config == {"T": 64} and res.evaluations == 3
    assert all(c["T"] <= 64 for c in ev.calls)


def test_seeds_are_evaluated_first():
    space = synthetic_space()
    ev = Counting()
    seeds = [{"X": 8, "Y": 4, "Z": "a"}, {"X": 1, "Y": 1, "Z": "c"}, {"X": 8, "Y": 8, "Z": "a"}]  # last: infeasible
    tune(space, ev, n_evals=5, study_name="seeded", storage="memory", seeds=seeds, seed=0)
    assert ev.calls[:2] == seeds[:2]


def test_bad_arguments_are_tilec_errors():
    with pytest.raises(TilecError, match="at least 1"):
        tune(synthetic_space(), Counting(), n_evals=0, study_name="x", storage="memory")
    with pytest.raises(TilecError, match="strategy"):
        tune(synthetic_space(), Counting(), n_evals=1, study_name="x", storage="memory", strategy="annealing")
    with pytest.raises(TilecError, match="objective"):
        tune(synthetic_space(), Counting(), n_evals=1, study_name="x", storage="memory", objective="power")


# ---- modeled --------------------------------------------------------------------------------

class Prediction:
    def __init__(self, runtime_s, energy_j, feasible=True, reasons=()):
        self.runtime_s, self.energy_j, self.feasible, self.reasons = runtime_s, energy_j, feasible, reasons


def test_modeled_evaluator_tunes_time_or_energy_with_a_stub_model():
    space = Space([Param("T", (1, 2, 4, 8, 16))])
    # faster with bigger T, but energy grows past T=4; T=16 exceeds the stub's local memory
    model = lambda c: (Prediction(1e-3 / c["T"], 1e-3 * (1 + abs(c["T"] - 4)), c["T"] <= 8, ("tile exceeds L1",))
                       if c["T"] != 2 else (2e-3, None))
    ev = ModeledEvaluator(model, "stub")
    by_time = tune(space, ev, n_evals=5, study_name="t", storage="memory", strategy="grid", seed=0)
    assert by_time.best_config == {"T": 8}
    reasons = [h["reason"] for h in by_time.history if h["value"] is None]
    assert any("tile exceeds L1" in r for r in reasons)
    by_energy = tune(space, ev, n_evals=5, study_name="e", storage="memory", strategy="grid", seed=0,
                     objective="energy")
    assert by_energy.best_config == {"T": 4}
    assert any("no energy" in h["reason"] for h in by_energy.history if h["value"] is None)


def test_model_infeasibility_is_a_space_constraint_that_costs_no_evaluation():
    calls = []
    def model(c):
        calls.append(c["T"])
        return Prediction(1e-3 / c["T"], None, c["T"] <= 4, ("needs 300 KB of shared memory",))
    ev = ModeledEvaluator(model, "stub")
    space = Space([Param("T", (1, 2, 4, 8, 16))]).extend([], [ev.constraint])
    assert space.reasons({"T": 8}) == ["needs 300 KB of shared memory"] and space.size() == 3
    res = tune(space, ev, n_evals=5, study_name="c", storage="memory", strategy="grid", seed=0)
    assert res.best_config == {"T": 4} and res.evaluations == 3
    assert all(h["value"] is not None for h in res.history)


@pytest.mark.parametrize("out", [float("nan"), (-1.0, 0.0), "fast", (None, None)])
def test_modeled_evaluator_rejects_unusable_predictions(out):
    with pytest.raises(TrialFailed):
        ModeledEvaluator(lambda c: out)({"T": 1})


# ---- measured (a NumPy op: no compile cost) ---------------------------------------------------

def numpy_op(wrong_for=None):
    """A 'kernel' whose result is wrong for one config: the check must catch it."""
    def run(inputs, config=None, backend=None):
        if config["T"] == 0:
            raise TilecError("T must be positive")
        out = inputs["x"] * 2.0
        if config["T"] == wrong_for:
            out = out.copy()
            out[3] += 1.0
        return out
    return OpSpec(name="double", doc="", kernels={}, shape_names=("N",),
                  space=lambda b: Space([Param("T", (0, 1, 2, 3))]), default_config=lambda s, b: {"T": 1},
                  make_inputs=lambda s, d, rng: {"x": rng.standard_normal(s["N"]).astype(np.float32)},
                  run=run, reference=lambda i: i["x"].astype(np.float64) * 2, flops=lambda s: s["N"],
                  bytes=lambda s, d: 8.0 * s["N"])


def test_measured_evaluator_checks_results_and_prunes_compile_failures():
    op = numpy_op(wrong_for=2)
    ev = MeasuredEvaluator(op, {"N": 1000}, "float32", "numba", "cpu", repeats=3, flush_bytes=1 << 20)
    m = ev({"T": 1})
    assert m.runtime_s > 0 and len(m.info["times_s"]) == 3 and m.runtime_s == sorted(m.info["times_s"])[1]
    with pytest.raises(TrialFailed, match="wrong result: 1 of 1000 elements off, first at \\(3,\\)"):
        ev({"T": 2})
    with pytest.raises(TrialFailed, match="does not compile or launch: T must be positive"):
        ev({"T": 0})
    res = tune(op.space("numba"), ev, n_evals=4, study_name="m", storage="memory", strategy="grid", seed=0)
    assert res.best_config in ({"T": 1}, {"T": 3}) and res.evaluations == 4


def test_paired_measurement_cancels_a_drift_in_machine_speed():
    """With a baseline config, a candidate measured while the machine runs 3x slower still gets
    its own time: the ratio to the baseline's runs, scaled to the baseline's first time. Sleeps
    of tens of milliseconds, so a loaded machine's wake-up latency (a millisecond or more beside
    CI's compiling workers) stays a few percent of them."""
    import time as clock
    slowdown = {"factor": 1.0}
    op = numpy_op()
    op.run = lambda inputs, config=None, backend=None: clock.sleep(config["T"] * 1e-3 * slowdown["factor"])
    paired = MeasuredEvaluator(op, {"N": 8}, "float32", "numba", "cpu", repeats=3, flush_bytes=1 << 10,
                               check=False, baseline={"T": 20})
    plain = MeasuredEvaluator(op, {"N": 8}, "float32", "numba", "cpu", repeats=3, flush_bytes=1 << 10, check=False)
    first = paired({"T": 40})
    slowdown["factor"] = 3.0
    later, unpaired = paired({"T": 30}), plain({"T": 30})
    assert first.runtime_s == pytest.approx(40e-3, rel=0.25) and later.runtime_s == pytest.approx(30e-3, rel=0.25)
    assert unpaired.runtime_s == pytest.approx(90e-3, rel=0.25)      # what drift does without the pairing
    assert len(later.info["baseline_times_s"]) == 3 and min(later.info["raw_times_s"]) > 80e-3


def test_measured_evaluator_validates_its_settings():
    with pytest.raises(TilecError, match="repeats"):
        MeasuredEvaluator(numpy_op(), {"N": 8}, "float32", "numba", repeats=0)


def test_history_is_json_serialisable():
    res = tune(synthetic_space(), Counting(), n_evals=3, study_name="j", storage="memory", seed=0)
    assert json.loads(json.dumps(res.as_dict()))["evaluations"] == 3


def test_a_tuned_record_naming_a_parameter_the_space_lost_is_not_used(monkeypatch):
    """A record tuned for an older kernel (a parameter since removed) falls back to the default
    instead of passing the kernel an argument it no longer takes; a current record is used."""
    from ops._common import choose_config
    from tilec.tuning import database
    space = Space([Param("NG", (1, 2, 4)), Param("NS", (1, 2))])
    default = {"NG": 1, "NS": 1}
    records = {"old": {"NG": 4, "LOOPS": True}, "new": {"NG": 4}}
    for name, expected in (("old", default), ("new", {"NG": 4, "NS": 1})):
        monkeypatch.setattr(database, "lookup", lambda *a, rec=records[name]: dict(rec))
        assert choose_config("decode", {}, "float32", "numba", "cpu", None, space, default) == expected


def test_fixing_parameters_narrows_the_space_and_keeps_its_constraints():
    space = Space([Param("BM", (16, 32, 64)), Param("BD", (16, 32, 64, 128))],
                  [lambda c, p: "too big" if c["BM"] * c["BD"] > 2048 else None])
    fixed = space.fix({"BD": 64})
    assert [c["BD"] for c in fixed.configs()] == [64, 64]          # BM 64 x BD 64 stays out
    assert space.size() == 9 and fixed.size() == 2
    with pytest.raises(KeyError, match="NOPE"):
        space.fix({"NOPE": 1})


def test_tune_summary_says_what_where_and_a_known_bucket_is_reused_aloud_or_forced(tmp_path, monkeypatch, capsys):
    """`tilec tune gemm --shape M=300,...` after a 512^3 tune ran 0 trials and printed the
    512^3 study without saying so; the summary never said where the result went."""
    from tilec.tuning.database import forget
    from tilec.cli import main
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TILEC_TUNING_DB", raising=False)
    forget()
    common = ["--profile", "h100_sxm", "--quiet", "--trials", "4"]
    assert main(["tune", "gemm", "--shape", "M=512,N=512,K=512", *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tuned gemm at M=512,N=512,K=512" in out and "4 configs evaluated now, 4 in the study" in out
    assert f"stored in {tmp_path / 'tuning.db'}" in out and "shape bucket K=512,M=512,N=512" in out
    assert "nothing tuned" not in out
    assert main(["tune", "gemm", "--shape", "M=300,N=300,K=300", *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing tuned: the study of the bucket K=512,M=512,N=512 already holds 4 configs" in out
    assert "tuned at M=512,N=512,K=512" in out and "--force" in out and "0 configs evaluated now" in out
    assert main(["tune", "gemm", "--shape", "M=300,N=300,K=300", *common, "--force"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing tuned" not in out and "4 configs evaluated now, 8 in the study" in out
    forget()
