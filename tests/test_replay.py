"""Replay of recorded search spaces: Kernel Tuner caches and CSV tables, the CLI on them,
and TPE against random search on real GPU measurements (../shared, skipped when absent)."""
from __future__ import annotations

import gzip
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from autotune import efficiency
from autotune.evaluators import TrialFailed, replay
from autotune.tuner import tune
from tilec.errors import TilecError

REPO = Path(__file__).resolve().parents[1]


def kerneltuner_cache(path: Path, gz: bool = False, truncate: bool = False) -> Path:
    """A small Kernel Tuner cache: 3 x 4 params, one compile failure, one missing config."""
    cache = {}
    for bx in (16, 32, 64):
        for ty in (1, 2, 3, 4):
            if (bx, ty) == (64, 4):
                continue                                   # not in the record: infeasible
            entry = {"block_size_x": bx, "tile_size_y": ty, "time": 1.0 + abs(bx - 32) / 16 + abs(ty - 3) / 2}
            if (bx, ty) == (32, 3):
                entry["time"] = "CompilationFailedConfig"  # the would-be optimum failed
            cache[f"{bx},{ty}"] = entry
    data = {"device_name": "Test GPU", "kernel_name": "k", "problem_size": [64], "objective": "time",
            "tune_params_keys": ["block_size_x", "tile_size_y"],
            "tune_params": {"block_size_x": [16, 32, 64], "tile_size_y": [1, 2, 3, 4]}, "cache": cache}
    text = json.dumps(data)
    if truncate:                                           # an unfinished cache, as Kernel Tuner leaves it
        text = text[: text.rindex("}}")] + "\n"
    if gz:
        path = path.with_suffix(".json.gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz,truncate", [(False, False), (True, False), (False, True)])
def test_kerneltuner_cache_loads_with_failures_and_gaps(tmp_path, gz, truncate):
    rec = replay.load(kerneltuner_cache(tmp_path / "c.json", gz, truncate))
    assert len(rec.records) == 11 and len(rec.valid()) == 10
    assert rec.optimum() == pytest.approx(1.5)           # (32, 2) and (32, 4): 1 + 0 + 0.5
    space = rec.space()
    assert space.size() == 11 and space.reasons({"block_size_x": 64, "tile_size_y": 4})
    ev = rec.evaluator()
    assert ev({"block_size_x": 32, "tile_size_y": 2}).runtime_s == pytest.approx(1.5e-3)
    with pytest.raises(TrialFailed, match="CompilationFailedConfig"):
        ev({"block_size_x": 32, "tile_size_y": 3})
    res = tune(space, ev, n_evals=11, study_name="r", storage="memory", strategy="tpe", seed=0)
    assert res.best_value == pytest.approx(1.5e-3) and res.evaluations == 11


def test_csv_with_averaged_objective_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("MWG,NWG,Run1 (ms),Run2 (ms)\n16,16,4.0,6.0\n16,32,2.0,2.5\n32,16,x,3\n32,32,9,9\n")
    rec = replay.load(p, "Run1 (ms),Run2 (ms)")
    assert rec.params == {"MWG": [16, 32], "NWG": [16, 32]}
    assert rec.optimum() == pytest.approx(2.25) and rec.unit_s == 1e-3
    with pytest.raises(TrialFailed, match="recorded failure"):
        rec.evaluator()({"MWG": 32, "NWG": 16})


@pytest.mark.parametrize("content,name,match", [
    ("{}", "a.json", "tune_params"), ("not json", "b.json", "not a readable"), ("a,b\n1,2\n", "c.csv", "objective"),
    ("x", "d.txt", "expected a Kernel Tuner cache")])
def test_bad_records_are_tilec_errors(tmp_path, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(TilecError, match=match):
        replay.load(tmp_path / name)
    with pytest.raises(TilecError, match="does not exist"):
        replay.load(tmp_path / "missing.json")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "autotune", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TILEC_CACHE_DIR": str(cwd)})


def test_cli_replays_a_cache_with_json_and_plots(tmp_path):
    cache = kerneltuner_cache(tmp_path / "c.json")
    out = _cli("--replay", str(cache), "--trials", "8", "--seed", "1", "--json", str(tmp_path / "r.json"),
               "--plot", str(tmp_path / "p.png"), "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "recorded optimum" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    measured = [t for t in data["trials"] if t["value"] is not None]
    assert len(data["trials"]) == 8 and data["best_value"] == min(t["value"] for t in measured)
    assert (tmp_path / "p-history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p-importance.png").stat().st_size > 1000
    out = _cli("--replay", str(cache), "--trials", "11", "--plot", str(tmp_path / "p.html"), "--quiet", cwd=tmp_path)
    assert out.returncode == 0 and "data:image/png;base64," in (tmp_path / "p-history.html").read_text()


def test_cli_compares_strategies(tmp_path):
    cache = kerneltuner_cache(tmp_path / "c.json")
    out = subprocess.run([sys.executable, "-m", "autotune.cli_main", "tune", "--replay", str(cache),
                          "--compare", "tpe,random", "--seeds", "3", "--trials", "11", "--json", str(tmp_path / "cmp.json")],
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                                              "TILEC_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    results = {r["strategy"]: r for r in json.loads((tmp_path / "cmp.json").read_text())["results"]}
    assert set(results) == {"tpe", "random"} and all(len(r["needed"]) == 3 for r in results.values())
    assert all(1 <= n <= 12 for r in results.values() for n in r["needed"])


def test_cli_reports_bad_input_as_errors(tmp_path):
    out = _cli("--replay", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = _cli("--replay", str(kerneltuner_cache(tmp_path / "c.json")), "--compare", "tpe,annealing", cwd=tmp_path)
    assert out.returncode == 2 and "unknown search strategy" in out.stderr
    out = _cli("nosuchop", "--shape", "M=1", cwd=tmp_path)
    assert out.returncode == 2 and "unknown op" in out.stderr


def test_tpe_needs_at_most_half_the_evaluations_of_random_search_on_recorded_gpu_spaces(shared_dir):
    path = shared_dir / "datasets" / "kerneltuner_convolution_pnpoly_turing_ampere" / "convolution" / "RTX_3090.json.gz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    rec = replay.load(path)
    assert len(rec.records) == 6768 and len(rec.valid()) == 5220
    tpe, rnd = efficiency.compare(rec, ["tpe", "random"], seeds=20, within=0.10, cap=1000)
    assert tpe.reached == rnd.reached == 20
    assert tpe.median <= 0.5 * rnd.median, (tpe.needed, rnd.needed)
    print(f"\nconvolution RTX 3090, evaluations to within 10%: TPE median {tpe.median}, random {rnd.median}")
    assert statistics.median(rnd.needed) > 20          # the target is not trivially easy
