"""Confirming a measured tune's winner (autotune/confirm.py): a leader whose one fast
measurement was luck loses the re-measurement, the database then serves the confirmed pick,
and rebuilding the best table keeps it."""
from __future__ import annotations

import pytest
from test_tune_support import synthetic_cost, synthetic_space

from autotune import confirm, encoding
from tilec.tuning import database
from autotune.evaluators import Measurement, TrialFailed
from tilec.tuning.keys import TuningKey
from autotune.tuner import tune

SHAPE = {"M": 64, "N": 64, "K": 64}
LUCKY = {"X": 4, "Y": 2, "Z": "b"}            # the synthetic optimum: measured once at half its cost


class LuckyOnce:
    """The synthetic cost, except that LUCKY's first measurement is half of it and every later
    one three times it; ``broken`` configs fail when measured again."""

    def __init__(self, broken=()):
        self.seen: dict[str, int] = {}
        self.broken = {encoding.config_id(c) for c in broken}

    def __call__(self, cfg):
        cid = encoding.config_id(cfg)
        self.seen[cid] = self.seen.get(cid, 0) + 1
        if self.seen[cid] > 1 and cid in self.broken:
            raise TrialFailed("does not compile or launch: gone")
        cost = synthetic_cost(cfg)
        if cfg == LUCKY:
            cost *= 0.5 if self.seen[cid] == 1 else 3.0
        return Measurement(cost, None, {"times_s": [cost] * 5})


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv(database.ENV, f"sqlite:///{tmp_path / 'tuning.db'}")
    database.forget()
    yield
    database.forget()


def _tuned(ev):
    key = TuningKey.make("synthetic", SHAPE, "float32", "numba", "cpu")
    store = database.open_storage()
    res = tune(synthetic_space(), ev, n_evals=len(list(synthetic_space().configs())), key=key, storage=store,
               strategy="random", seed=0)
    return res, key, store


def test_a_lucky_leader_loses_the_remeasurement_and_the_database_serves_the_winner(db):
    ev = LuckyOnce()
    res, key, store = _tuned(ev)
    assert res.best_config == LUCKY                              # the tuner alone keeps the lucky run
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == LUCKY
    ranked_before = confirm.leaders(res.study, 3)
    assert ranked_before[0] == LUCKY and len(ranked_before) == 3

    cfg, value = confirm.confirm_best(res.study, store, ev, key.as_dict())
    runner_up = min((c for c in synthetic_space().configs() if c != LUCKY), key=synthetic_cost)
    assert cfg == runner_up and value == pytest.approx(synthetic_cost(runner_up))
    assert all(ev.seen[encoding.config_id(c)] == 1 + confirm.ROUNDS for c in ranked_before)
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == runner_up

    # the best table is derived data: rebuilt from the study, it keeps the confirmed pick
    with database._engine(store).begin() as con:
        from sqlalchemy import text
        con.execute(text(f"DELETE FROM {database.BEST_TABLE}"))
    assert database.rebuild_best() == 1
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == runner_up


def test_a_contender_that_fails_when_measured_again_is_dropped(db):
    second = sorted(synthetic_space().configs(), key=synthetic_cost)[1]
    ev = LuckyOnce(broken=[second])
    res, key, store = _tuned(ev)
    cfg, _ = confirm.confirm_best(res.study, store, ev, key.as_dict())
    assert cfg not in (second, LUCKY)
    kept = [c["config"] for c in res.study.user_attrs["confirmed"]["contenders"]]
    assert second not in kept and LUCKY in kept and len(kept) == 2


def test_nothing_to_confirm_with_one_measured_config(db):
    key = TuningKey.make("synthetic", SHAPE, "float32", "numba", "cpu")
    store = database.open_storage()
    res = tune(synthetic_space(), LuckyOnce(), n_evals=1, key=key, storage=store, seed=0)
    assert confirm.confirm_best(res.study, store, LuckyOnce(), key.as_dict()) is None


class Noisy:
    """The synthetic cost; each measurement's five runs scatter over ±4% of it."""

    def __init__(self, favour=None, by=1.0):
        self.favour, self.by = favour, by

    def __call__(self, cfg):
        cost = synthetic_cost(cfg) * (self.by if cfg == self.favour else 1.0)
        times = [cost * f for f in (1.04, 0.96, 1.0, 0.98, 1.02)]
        return Measurement(cost, None, {"times_s": times})


def test_a_retune_keeps_the_incumbent_unless_the_challenger_wins_by_more_than_the_spread(db):
    """Re-tuning a settled study flipped its stored best on noise (BK=512, 256, 512)."""
    res, key, store = _tuned(Noisy())
    first, _ = confirm.confirm_best(res.study, store, Noisy(), key.as_dict())
    ranked = sorted(synthetic_space().configs(), key=synthetic_cost)
    assert first == ranked[0]
    # a re-measurement in which the runner-up looks 2% faster than the incumbent: within the
    # runs' ~4% spread, so the incumbent stays, and says so
    challenger = ranked[1]
    close = Noisy(favour=challenger, by=0.98 * synthetic_cost(first) / synthetic_cost(challenger))
    kept, _ = confirm.confirm_best(res.study, store, close, key.as_dict())
    confirmed = res.study.user_attrs["confirmed"]
    assert kept == first and confirmed["kept_incumbent_within"] > 0.02
    assert confirmed["contenders"][0]["config"] == first
    database.forget()
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == first
    # a challenger 30% faster wins
    clear = Noisy(favour=challenger, by=0.7 * synthetic_cost(first) / synthetic_cost(challenger))
    won, _ = confirm.confirm_best(res.study, store, clear, key.as_dict())
    assert won == challenger and res.study.user_attrs["confirmed"]["kept_incumbent_within"] is None


def test_the_table_ranks_by_the_confirmed_measure_and_rank_1_is_the_stored_best(db):
    from rich.console import Console

    from autotune.report import table
    ev = LuckyOnce()
    res, key, store = _tuned(ev)
    cfg, _ = confirm.confirm_best(res.study, store, ev, key.as_dict())
    console = Console(width=200, record=True)
    console.print(table(res.study))
    rows = [line for line in console.export_text().splitlines() if line.strip().startswith("│")]
    first = rows[0]
    assert " 1 " in first and "confirmed" in first and "1.00x" in first
    assert all(f"{k}={v}" in first for k, v in cfg.items() if k in ("X", "Y", "Z"))
    assert database.lookup("synthetic", SHAPE, "float32", "numba", "cpu") == cfg
    lucky = next(r for r in rows if "X=4 Y=2 Z=b" in r)
    assert "confirmed" in lucky and "1.00x" not in lucky       # the lucky run ranks by its re-measurement
