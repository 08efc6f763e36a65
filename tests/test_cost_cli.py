"""``tilec cost-model train | eval | predict | pick`` end to end on a small record file."""
from __future__ import annotations

import json

import numpy as np
import pytest

import hw_profiles
from autotune.cost import analytical, records as R
from autotune.cost.workload import workload_for
from autotune.cli_main import main


@pytest.fixture()
def record_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    p = hw_profiles.load("h100_sxm")
    recs = []
    for m in (256, 512, 1024, 2048):
        for bm in (32, 64, 128):
            for bk in (32, 64):
                shape, cfg = {"M": m, "N": 1024, "K": 512}, {"BM": bm, "BN": 64, "BK": bk, "num_warps": 4}
                t = analytical.predict(workload_for("gemm", shape, "float16", cfg), p).runtime_s
                recs.append(R.Record("gemm", shape, "float16", cfg, t * (1 + bm / 256) * rng.lognormal(0, 0.01),
                                     device="h100_sxm", energy_j=t * 300.0))
    path = tmp_path / "records.jsonl"
    R.save_jsonl(recs, path)
    return path


def test_train_predict_eval(record_file, tmp_path, capsys):
    model = tmp_path / "m.json"
    assert main(["cost-model", "train", str(record_file), "--out", str(model)]) == 0
    assert json.loads(model.read_text())["meta"]["rows"] == 24
    capsys.readouterr()
    assert main(["cost-model", "predict", "--op", "gemm", "--shape", "M=700,N=1024,K=512", "--dtype", "float16",
                 "--config", "BM=64,BN=64,BK=32,num_warps=4", "--profile", "h100_sxm", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "analytical on h100_sxm" in out and "learned    on h100_sxm" in out and "bound by" in out
    plot, js = tmp_path / "pvm.png", tmp_path / "metrics.json"
    assert main(["cost-model", "eval", str(record_file), "--holdout", "random", "shape", "param:BM",
                 "--plot", str(plot), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "random 20% rows" in out and "hold out by shape" in out and "hold out by BM" in out and "R2=" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads(js.read_text())
    assert len(metrics) == 3 and all("r2" in m["runtime"] and "spearman" in m["runtime"] for m in metrics)
    assert metrics[0]["energy"] is not None


def test_predict_reports_infeasible_and_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["cost-model", "predict", "--op", "gemm", "--shape", "M=64,N=64,K=64", "--dtype", "float32",
                 "--config", "BM=64,BN=64,BK=64", "--profile", "gap8"]) == 0
    assert "infeasible: gap8 cannot compute float32" in capsys.readouterr().out
    assert main(["cost-model", "predict", "--op", "nosuchop", "--shape", "M=1", "--profile", "l4"]) == 2
    assert "no IR launch known for op 'nosuchop'" in capsys.readouterr().err
    assert main(["cost-model", "eval", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_pick_names_a_config_per_gpu(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["cost-model", "pick", "--profile", "a100_sxm4_40gb", "l4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("a100_sxm4_40gb") and '"BM"' in lines[1]


def test_predict_on_the_host_that_measured_a_records_file(capsys, tmp_path, monkeypatch):
    """--profile RECORDS.jsonl (or its .host.json): the host figures that file carries."""
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    from pathlib import Path
    records = Path(__file__).resolve().parents[1] / "autotune/cost/data/host_numba_records.jsonl"
    args = ["cost-model", "predict", "--op", "gemv", "--shape", "M=4096,K=4096", "--dtype", "float32",
            "--config", "BM=16,BK=512,parallel=0"]

    def ms(profile):
        assert main(args + ["--profile", profile]) == 0
        out = capsys.readouterr().out
        assert out.startswith("analytical on host:")
        return float(out.split(":")[1].split("ms")[0])
    here, there = ms("host"), ms(str(records))
    assert ms(str(records.with_name("host_numba_records.host.json"))) == there
    assert here != there            # this machine is uncalibrated here (DRAM estimated at 12 GB/s a core)
    bare = tmp_path / "bare.jsonl"
    bare.write_text("")
    assert main(args + ["--profile", str(bare)]) == 2
    assert "has no host figures" in capsys.readouterr().err
    (tmp_path / "bad.host.json").write_text('{"format": "tilec-records-host/1", "calibration": {"x": 1}}')
    assert main(args + ["--profile", str(tmp_path / "bad.host.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.host.json" in err and "'calibration." in err
