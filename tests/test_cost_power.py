"""Power with physical bounds (always within [idle, TDP]), measured launch resources over
estimates, and the bounded power model on the PowerSensor3 GEMM data (../shared, skipped
when absent)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hw_profiles
from autotune.cost import power, records as R
from autotune.cost.features import analyse, profile_of
from autotune.cost.workload import workload_for
from tilec.errors import TilecError

GPUS = [n for n in hw_profiles.names() if hw_profiles.load(n).kind == "gpu"]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(GPUS), st.floats(0, 150), st.floats(1, 600), st.sampled_from([16, 32, 64, 128, 256]),
       st.sampled_from([16, 32, 64, 128]), st.integers(1, 1 << 14), st.floats(1e-9, 10.0),
       st.one_of(st.none(), st.floats(1e8, 4e9)), st.sampled_from(["float32", "float16"]))
def test_analytical_power_is_always_within_idle_and_tdp(name, idle, headroom, bm, bk, m, runtime, clock, dtype):
    p = replace(hw_profiles.load(name), idle_power_w=idle, tdp_w=idle + headroom)
    w = workload_for("gemm", {"M": m, "N": 1024, "K": 512}, dtype, {"BM": bm, "BN": 64, "BK": bk, "num_warps": 4})
    watts = power.analytical_power(w, p, runtime, clock)
    assert idle <= watts <= idle + headroom


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 100), st.floats(1, 400), st.integers(0, 10_000),
       st.lists(st.tuples(st.integers(-10**6, 10**6), st.floats(-1e3, 1e4), st.floats(1e-12, 1e6)), min_size=1,
                max_size=20))
def test_learned_power_is_always_within_idle_and_tdp(idle, headroom, seed, queries):
    rng = np.random.default_rng(seed)
    tdp = idle + headroom
    train = [R.Record("k", {"n": 1}, "float32", {"a": int(a), "b": int(b)}, float(t), device="x",
                      power_w=float(rng.uniform(idle - 50, tdp + 50)), clock_hz=float(c) * 1e6)
             for a, b, t, c in zip(rng.integers(0, 9, 40), rng.integers(0, 5, 40), rng.uniform(1e-4, 1, 40),
                                   rng.uniform(1000, 2000, 40))]
    model = power.PowerModel.fit(train, idle, tdp, rounds=20)
    probe = [R.Record("k", {"n": 1}, "float32", {"a": a, "b": 7}, t, device="x", clock_hz=c * 1e6)
             for a, c, t in queries]
    watts = model.power(probe)
    assert np.all(watts >= idle) and np.all(watts <= tdp)
    energy = model.energy(probe)
    assert np.allclose(energy, watts * np.array([q[2] for q in queries]))
    again = power.PowerModel.from_json(model.to_json())
    assert np.allclose(again.power(probe), watts)


def test_bad_bounds_and_models_are_errors():
    with pytest.raises(TilecError, match="idle < TDP"):
        power.bounded(100.0, 50.0, 0.5)
    with pytest.raises(TilecError, match="not a tilec power model"):
        power.PowerModel.from_json(json.dumps({"format": "other"}))
    with pytest.raises(TilecError, match="at least 8 records"):
        power.PowerModel.fit([], 10.0, 100.0)


def test_measured_registers_override_the_estimate():
    cfg = {"BM": 64, "BN": 128, "BK": 64, "num_warps": 4, "num_stages": 2}
    shape = {"M": 4096, "N": 4096, "K": 4096}
    estimated = R.Record("gemm", shape, "float16", cfg, 1e-3, device="a100_sxm4_80gb")
    w, pred = analyse(estimated)
    assert w.registers_per_thread == 328 and not pred.feasible
    assert any("328 registers" in r for r in pred.reasons)
    real = replace(estimated, extra={"registers": 200, "shared_bytes": 65536})
    w, pred = analyse(real)
    assert w.registers_per_thread == 200 and w.tile_bytes_local == 65536 and pred.feasible, pred.reasons
    with pytest.raises(TilecError, match="non-negative integer"):
        analyse(replace(estimated, extra={"registers": 12.5}))


def test_kernel_tuner_cache_carries_measured_resources(tmp_path):
    doc = {"device_name": "NVIDIA A100-SXM4-80GB", "kernel_name": "k", "problem_size": [64],
           "tune_params_keys": ["bx"], "tune_params": {"bx": [32]},
           "cache": {"32": {"bx": 32, "time": 1.0, "num_regs": 200, "shared_mem_bytes": 4096}}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    rec, = R.load_kernel_tuner(tmp_path / "c.json")
    assert rec.config == {"bx": 32} and rec.extra == {"num_regs": 200, "shared_mem_bytes": 4096}


GEMM = "powersensor3_tc_complex_gemm_rtx4000ada/AD4000_wmma_complex_gemm_opt_16bit_1x4096x4096x4096.json.gz"


@pytest.mark.parametrize("held_out", ["config", "clock"])
def test_bounded_power_on_powersensor3_held_out(shared_dir, held_out):
    path = shared_dir / "datasets" / GEMM
    if not path.exists():
        pytest.skip(f"{path} is not present")
    recs = R.load_kernel_tuner(path)
    prof = hw_profiles.load("rtx4000_ada")
    if held_out == "config":
        groups = [json.dumps({k: v for k, v in r.config.items() if k != "nvml_gr_clock"}, sort_keys=True) for r in recs]
    else:
        groups = [r.config["nvml_gr_clock"] for r in recs]
    m = power.holdout(recs, groups, prof.idle_power_w, prof.tdp_w, folds=5)
    assert m["rows"] == 4690
    assert m["power_r2"] >= 0.7 and m["energy_mape"] <= 0.15, m
    assert prof.idle_power_w <= m["power_min_w"] <= m["power_max_w"] <= prof.tdp_w


def _fp32_sweep(tmp_path, watts_of=None):
    """A Kernel Tuner cache shaped like the A100 clock sweep; power from ``watts_of(clock_mhz, ms)``."""
    clocks = [1410, 1275, 1140, 1005, 870, 735, 600, 465, 330, 210]
    cache = {}
    for c in clocks:
        ms = 196.24 * 1410 / c
        cache[f"1024,64,1024,{c}"] = {"block_size_x": 1024, "nr_outer": 64, "nr_inner": 1024, "nvml_gr_clock": c,
                                      "core_freq": float(c), "time": ms,
                                      "nvml_power": watts_of(c, ms) if watts_of else 100.0}
    doc = {"device_name": "NVIDIA A100-PCIE-40GB", "kernel_name": "fp32_kernel", "problem_size": [108, 64],
           "tune_params_keys": ["block_size_x", "nr_outer", "nr_inner", "nvml_gr_clock"], "cache": cache}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(doc))
    return R.load_kernel_tuner(path)


def test_calibrated_dvfs_power_recovers_the_law_it_was_made_from(tmp_path):
    prof = hw_profiles.load("a100_pcie_40gb")
    recs = _fp32_sweep(tmp_path)
    util, ratio = power.DVFSPower(prof)._parts(recs)
    base, activity, v_floor = 0.04, 0.55, 0.8               # a made-up device obeying the law exactly
    frac = base + activity * util * ratio * np.maximum(v_floor, ratio) ** 2
    truth = prof.idle_power_w + (prof.tdp_w - prof.idle_power_w) * frac
    recs = _fp32_sweep(tmp_path, lambda c, ms: float(truth[[1410, 1275, 1140, 1005, 870, 735, 600, 465, 330, 210].index(c)]))
    model = power.DVFSPower.fit(recs, prof)
    assert model.v_floor == pytest.approx(v_floor, abs=0.011)
    assert model.activity == pytest.approx(activity, rel=0.05) and model.base == pytest.approx(base, abs=0.01)
    np.testing.assert_allclose(model.power(recs), truth, rtol=2e-3)


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 3), st.floats(0, 1), st.floats(0, 2), st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=5))
def test_calibrated_dvfs_power_stays_within_idle_and_tdp(activity, v_floor, base, runtimes):
    prof = hw_profiles.load("a100_pcie_40gb")
    recs = [R.describe(R.Record("fp32_kernel", {"n0": 108, "n1": 64}, "float32", {"block_size_x": 1024, "nr_outer": 64,
                                "nr_inner": 1024}, 0.2, clock_hz=c * 1e6)) for c in (210, 900, 1410, 2000)]
    watts = power.DVFSPower(prof, activity, v_floor, base).power(recs * len(runtimes), [t for t in runtimes for _ in recs])
    assert ((prof.idle_power_w <= watts) & (watts <= prof.tdp_w)).all()


@pytest.mark.parametrize("name", ["kernel_tuner_synthetic_fp32_cache_NVIDIA_RTX_A4000.json",
                                  "kernel_tuner_tutorial_synthetic_fp32_cache_NVIDIA_A100-PCIE-40GB.json"])
def test_calibrated_dvfs_power_on_the_small_caches_held_out_by_clock(shared_dir, name):
    path = shared_dir / "datasets" / "kerneltuner_small_power_caches" / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    recs = R.load_kernel_tuner(path)
    prof = profile_of(recs[0])
    m = power.holdout(recs, [r.clock_hz for r in recs], prof.idle_power_w, prof.tdp_w, folds=len(recs),
                      fit=lambda train: power.DVFSPower.fit(train, prof))
    assert m["power_r2"] >= 0.7 and m["energy_mape"] <= 0.15, m
