"""The tuning database: lookup, keys in storage, crash safety and concurrency (SQLite and a
real PostgreSQL server started here when its binaries exist)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tune_support import synthetic_cost, synthetic_space

from tilec.errors import TilecError
from tilec.tuning import database
from autotune.evaluators import Measurement
from tilec.tuning.keys import TuningKey
from autotune.tuner import tune

SUPPORT = Path(__file__).with_name("test_tune_support.py")
REPO = Path(__file__).resolve().parents[1]
SHAPE = {"M": 1000, "N": 1000, "K": 1000}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEC_TUNING_DB", raising=False)
    database.forget()
    yield tmp_path / "cache"
    database.forget()


def _tune_key(storage, n=45, key=None):
    key = key or TuningKey.make("synthetic", SHAPE, "float32", "numba", "cpu")
    return tune(synthetic_space(), lambda c: Measurement(synthetic_cost(c)), n_evals=n, key=key,
                storage=storage, strategy="grid", seed=0), key


def test_lookup_without_a_database_creates_nothing_and_is_fast(cache):
    t0 = time.perf_counter()
    for _ in range(100):
        assert database.lookup("gemm", SHAPE, "float32", "numba", "cpu") is None
    assert time.perf_counter() - t0 < 0.5
    assert not cache.exists()


def test_lookup_imports_no_optuna_in_a_fresh_process(tmp_path):
    code = ("import sys, autotune; r = autotune.lookup('gemm', {'M': 8, 'N': 8, 'K': 8}, 'float32', 'numba', 'cpu');"
            "print(r, 'optuna' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TILEC_CACHE_DIR": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False"]
    assert not (tmp_path / "none").exists()


def test_tuned_config_is_read_back_for_its_key_only(cache):
    res, key = _tune_key(None, n=12)     # default storage: sqlite in the cache dir
    assert (cache / "tuning.db").is_file()
    assert database.lookup("synthetic", {"M": 1024, "N": 513, "K": 999}, "float32", "numba", "cpu") == res.best_config
    assert res.best_config == min((h["config"] for h in res.history), key=synthetic_cost)
    for other in [("synthetic", {"M": 2048, "N": 1000, "K": 1000}, "float32", "numba", "cpu"),
                  ("synthetic", SHAPE, "float16", "numba", "cpu"),
                  ("synthetic", SHAPE, "float32", "triton", "cpu"),
                  ("gemm", SHAPE, "float32", "numba", "cpu")]:
        assert database.lookup(*other) is None
    import optuna
    study = optuna.load_study(study_name=key.study_name, storage=database.default_url())
    assert study.user_attrs["key"]["shape_bucket"] == {"K": 1024, "M": 1024, "N": 1024}


def test_lookup_honours_the_environment_url_and_memoizes(cache, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    res, key = _tune_key(url, n=6)
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") is None   # default db: none
    monkeypatch.setenv("TILEC_TUNING_DB", url)
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config
    # the answer is memoized: a changed database is not re-read in this process until forget()
    with sqlite3.connect(tmp_path / "elsewhere.db") as con:
        con.execute("UPDATE tilec_best SET config = ?", (json.dumps({"X": 1, "Y": 1, "Z": "a"}),))
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == {"X": 1, "Y": 1, "Z": "a"}


def test_a_plain_file_path_is_a_sqlite_database(cache, tmp_path, monkeypatch):
    """``--storage tune.db`` and ``TILEC_TUNING_DB=tune.db`` mean a SQLite file there (a path
    was an SQLAlchemy parse error before)."""
    monkeypatch.chdir(tmp_path)
    res, _ = _tune_key("tune.db", n=4)
    assert (tmp_path / "tune.db").is_file()
    monkeypatch.setenv("TILEC_TUNING_DB", "tune.db")
    assert database.default_url() == f"sqlite:///{tmp_path / 'tune.db'}"
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config
    assert database.as_url("postgresql://u@h/db") == "postgresql://u@h/db" and database.as_url("memory") == "memory"


@pytest.mark.parametrize("stored", ["not json", "[1, 2]", '{"X": {"nested": 1}}', '{"X": [1]}'])
def test_a_damaged_best_entry_is_ignored(cache, stored):
    _tune_key(None, n=2)
    with sqlite3.connect(cache / "tuning.db") as con:
        con.execute("UPDATE tilec_best SET config = ?", (stored,))
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") is None


def test_best_only_improves_and_rebuild_recomputes_it(cache):
    res, key = _tune_key(None, n=10)
    storage = database.open_storage()
    assert not database.record_best(storage, key.study_name, {"X": 8, "Y": 4, "Z": "c"}, res.best_value * 2, {})
    with sqlite3.connect(cache / "tuning.db") as con:
        con.execute("DELETE FROM tilec_best")
    assert database.rebuild_best() == 1
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config


def test_a_second_tune_continues_the_study(cache):
    first, _ = _tune_key(None, n=5)
    second, _ = _tune_key(None, n=10)
    assert first.evaluations == 5 and second.evaluations == 10 and second.evaluated_now == 5
    seen = [json.dumps(h["config"], sort_keys=True) for h in first.history + second.history]
    assert len(seen) == len(set(seen))


# ---- processes --------------------------------------------------------------------------

def _worker(storage, study, n, seed, sleep_s, out):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(SUPPORT), storage, study, str(n), str(seed), str(sleep_s), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _evaluated(storage, study_name):
    import optuna
    study = optuna.load_study(study_name=study_name, storage=storage)
    return [t for t in study.get_trials() if t.user_attrs.get("status") in ("measured", "failed")]


def test_sigkill_mid_tune_leaves_a_readable_database_and_resume_skips_finished_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    proc = _worker(url, "crash", 30, 0, 0.4, first_log)
    (tmp_path / "go").touch()
    deadline = time.time() + 120
    while len(_lines(first_log)) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)                      # land inside the next trial's evaluation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _lines(first_log)
    finished = _evaluated(url, "crash")                  # readable after the kill
    assert {t.number for t in finished} >= {l["number"] for l in before}
    import optuna
    running = optuna.load_study(study_name="crash", storage=url).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len(running) <= 1
    resumed = _worker(url, "crash", 30, 0, 0.0, second_log)       # same seed: the same proposals come again
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    after = _lines(second_log)
    done_before = {json.dumps(t.user_attrs["config"], sort_keys=True) for t in finished}
    redone = [l for l in after if json.dumps(l["config"], sort_keys=True) in done_before]
    assert not redone, f"finished trials were evaluated again: {redone}"
    assert json.loads(out)["evaluations"] == 30 == len(finished) + len(after)
    study = optuna.load_study(study_name="crash", storage=url)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,)):
        assert "killed" in t.user_attrs["reason"]


def _concurrent(url: str, tmp_path: Path, n_total: int = 24):
    logs = [tmp_path / f"w{i}.jsonl" for i in range(4)]
    procs = [_worker(url, "shared", n_total, i, 0.05, logs[i]) for i in range(4)]
    deadline = time.time() + 120
    while not all(Path(str(log) + ".ready").exists() for log in logs) and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    told = [l for log in logs for l in _lines(log)]
    stored = _evaluated(url, "shared")
    assert sorted(l["number"] for l in told) == sorted(t.number for t in stored)   # no trial lost
    by_number = {t.number: t.user_attrs["config"] for t in stored}
    assert all(by_number[l["number"]] == l["config"] for l in told)
    assert all(len(_lines(log)) > 0 for log in logs)       # every worker took part
    distinct = {json.dumps(t.user_attrs["config"], sort_keys=True) for t in stored}
    assert len(distinct) >= n_total


def test_four_processes_share_one_sqlite_study(tmp_path):
    _concurrent(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL cluster on a loopback port, or a skip saying why not."""
    pytest.importorskip("psycopg2", reason="PostgreSQL tests need psycopg2-binary (pip install 'tilec[postgres]')")
    bindir = None
    for cand in [os.path.dirname(shutil.which("initdb") or "")] + sorted(Path("/usr/lib/postgresql").glob("*/bin"))[::-1]:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            bindir = Path(cand)
            break
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql")
    root = Path(f"/tmp/autotune-pg-{os.getpid()}-{tmp_path.name}")
    data, port = root / "data", _free_port()
    prefix = []
    if os.geteuid() == 0:                 # the server refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root and no runuser to start PostgreSQL as another user")
        prefix = ["runuser", "-u", "postgres", "--"]
    root.mkdir(parents=True)
    if prefix:
        shutil.chown(root, "postgres")
    try:
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tilec", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(root / "log"),
                                 "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a local PostgreSQL server: {e}")
    try:
        yield f"postgresql+psycopg2://tilec@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_four_processes_share_one_postgresql_study(postgres, tmp_path, monkeypatch):
    _concurrent(postgres, tmp_path)
    # and an op call reads its best config from the server
    res, key = _tune_key(postgres, n=6)
    monkeypatch.setenv("TILEC_TUNING_DB", postgres)
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config
    database.forget()


def test_energy_tuning_never_answers_op_calls(cache):
    key = TuningKey.make("synthetic", SHAPE, "float32", "numba", "cpu")
    res = tune(synthetic_space(), lambda c: Measurement(synthetic_cost(c), 1.0 / synthetic_cost(c)), n_evals=4,
               key=key, storage=None, strategy="random", seed=0, objective="energy")
    assert res.study_name == key.study_name + "|objective=energy" and res.best_config is not None
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") is None


def _corrupt(path: Path) -> bytes:
    junk = b"this is not a SQLite file\n" * 200
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junk)
    return junk


def test_a_corrupt_database_warns_once_in_ops_and_is_set_aside_by_a_tune(cache):
    """Ops warn once and use defaults (silently before); a tune moves the damaged file to
    ``tuning.db.corrupt-<time>``, says so, and starts a new one (raw DatabaseError before)."""
    junk = _corrupt(cache / "tuning.db")
    with pytest.warns(UserWarning, match="cannot read the tuning database.*--reset-db") as caught:
        assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") is None
        assert database.lookup("synthetic", {"M": 64, "N": 64, "K": 64}, "float32", "numba", "cpu") is None
    assert sum("tuning database" in str(w.message) for w in caught) == 1
    with pytest.warns(UserWarning, match=r"is damaged .* moved to .*tuning\.db\.corrupt-"):
        res, _ = _tune_key(None, n=3)
    aside = list(cache.glob("tuning.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == junk
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == res.best_config


def test_reset_db_moves_the_database_aside(cache, capsys):
    from tilec.cli import main
    res, _ = _tune_key(None, n=2)
    assert main(["tune", "--reset-db"]) == 0
    assert "moved to" in capsys.readouterr().out
    moved = [p for p in cache.glob("tuning.db.reset-*") if p.name.endswith("Z")]
    assert not (cache / "tuning.db").exists() and len(moved) == 1
    with sqlite3.connect(moved[0]) as con:                 # the old tunes are kept there
        assert con.execute("SELECT COUNT(*) FROM tilec_best").fetchone()[0] == 1
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") is None


def test_storage_in_a_missing_directory_is_an_error_not_a_new_tree(cache, tmp_path, capsys):
    from tilec.cli import main
    target = tmp_path / "nonexistent" / "dir" / "t.db"
    with pytest.raises(TilecError, match="does not exist"):
        database.open_storage(str(target))
    assert main(["tune", "gemm", "--shape", "8x8x8", "--trials", "1", "--quiet", "--storage", str(target)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nonexistent").exists()
