"""The GPU day-one script (bench/gpu.py) checked without a GPU: the dry run reaches every step,
skips the GPU work with a reason, keeps its budget and writes its results file."""
from __future__ import annotations

import json

import pytest

from bench import gpu


def test_profile_for_device_names():
    assert gpu.profile_for("NVIDIA H100 80GB HBM3") == "h100_sxm"
    assert gpu.profile_for("NVIDIA H100 PCIe") == "h100_pcie"
    assert gpu.profile_for("NVIDIA H200") == "h200"
    assert gpu.profile_for("NVIDIA A100-SXM4-40GB") == "a100_sxm4_40gb"
    assert gpu.profile_for("Some Future GPU") is None


def test_profiles_named_exist():
    import hw_profiles
    assert {name for _, name in gpu.PROFILE_BY_NAME} <= set(hw_profiles.names())


def test_spearman():
    assert gpu.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert gpu.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert gpu.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_dry_run_reaches_every_step(tmp_path):
    pytest.importorskip("triton")            # step 5 compiles offline
    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry-run", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [s.name for s in gpu.STEPS] == list(res["steps"])
    for name, step in res["steps"].items():
        assert step["status"] == "done", (name, step.get("error"))
        assert step["spent_s"] <= step["estimate_s"]
    steps = res["steps"]
    cases = steps["correctness"]["result"]["cases"]
    import ops
    assert {c["op"] for c in cases} == set(ops.REGISTRY)
    assert all(c["status"].startswith("skipped") for c in cases)
    assert steps["timings"]["result"]["skipped"]
    assert len(steps["tune vs cost model"]["result"]["predicted_s"]) > 3
    assert steps["energy"]["result"]["model"]["energy_j"] > 0
    row = steps["resources"]["result"]["rows"][0]
    assert row["registers"] > 0 and row["spill_bytes"] == 0      # real ptxas figures, offline


def test_budget_skips_steps_it_cannot_fit(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--dry-run", "--budget", "25", "--json", str(out), "--steps", "correctness", "energy"]) == 0
    res = json.loads(out.read_text())
    assert res["steps"]["correctness"]["status"] == "skipped"
    assert "left" in res["steps"]["correctness"]["reason"]
    assert res["steps"]["energy"]["status"] == "done"
    assert "skipped" in capsys.readouterr().out


def test_no_gpu_without_dry_run_is_a_clear_exit(capsys):
    assert gpu.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
