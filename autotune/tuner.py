"""The tuning loop: ask a strategy for a config, skip what cannot or need not run, evaluate
the rest, and tell the study. One Optuna study per tuning key.

- Infeasible configs (the space's constraints on the profile) are pruned without being
  compiled or run; they do not count as evaluations.
- A config already evaluated in the study (by this or another process, before a crash or
  now) is not run again: its recorded value is told again.
- A failing config (compile error, wrong result, crash in a backend) is pruned with the
  reason in the trial's ``reason`` attribute; the tune goes on.
- The budget ``n_evals`` counts distinct evaluated configs in the whole study, so a tune
  that is killed and started again continues to the same total, and several processes on
  one study share it.
- Each trial records ``config``, ``origin`` (host:pid), ``status`` (measured, failed,
  infeasible, duplicate, interrupted) and, when not measured, its ``reason``.
- A tuner killed mid-trial leaves that trial RUNNING; the next tuner on the same host
  marks it failed (its process is gone) and carries on.
"""
from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from tilec.errors import TilecError
from tilec.space import Space
from tilec.tuning import database
from tilec.tuning.keys import TuningKey

from . import encoding, strategies
from .evaluators import Measurement, TrialFailed

optuna.logging.set_verbosity(optuna.logging.WARNING)

TrialState = optuna.trial.TrialState
HOST = socket.gethostname()
EVALUATED = ("measured", "failed")     # trial statuses that cost an evaluation


@dataclass
class TuneResult:
    study_name: str
    best_config: dict | None
    best_value: float | None
    evaluations: int                      # distinct configs evaluated in the study
    evaluated_now: int                    # ... by this call
    history: list[dict] = field(default_factory=list)   # this call's evaluations, in order
    study: Any = None
    confirmed: bool = False               # best_config won a re-measurement of the leaders (confirm.py)
    reused_from: list | None = None       # tune_op ran nothing: the exact shapes the study was tuned at

    def as_dict(self) -> dict:
        return {"study": self.study_name, "best_config": self.best_config, "best_value": self.best_value,
                "confirmed": self.confirmed, "evaluations": self.evaluations, "evaluated_now": self.evaluated_now,
                "history": self.history}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: optuna.Study) -> int:
    """RUNNING trials started on this host by a process that no longer exists -> FAIL."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("origin", "")).rpartition(":")
        if host == HOST and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            study._storage.set_trial_user_attr(t._trial_id, "reason", "its tuner was killed mid-trial")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
    return n


class _Known:
    """What the study already knows: evaluated configs and their values (None = failed)."""

    def __init__(self):
        self.values: dict[str, float | None] = {}
        self.best: tuple[float, dict] | None = None
        self.waiting: set[str] = set()

    def refresh(self, study: optuna.Study) -> None:
        self.values.clear()
        self.waiting.clear()
        self.best = None
        for t in study.get_trials(deepcopy=False):
            cfg = t.user_attrs.get("config")
            if t.state == TrialState.WAITING:
                self.waiting.add(encoding.config_id(t.params))
            if cfg is None or t.user_attrs.get("status") not in EVALUATED or t.state not in (TrialState.COMPLETE,
                                                                                              TrialState.PRUNED):
                continue
            cid = encoding.config_id(cfg)
            value = t.value if t.state == TrialState.COMPLETE else None
            self.values[cid] = value
            if value is not None and (self.best is None or value < self.best[0]):
                self.best = (value, cfg)

    def add(self, cfg: dict, value: float | None) -> None:
        self.values[encoding.config_id(cfg)] = value
        if value is not None and (self.best is None or value < self.best[0]):
            self.best = (value, cfg)

    @property
    def evaluations(self) -> int:
        return len(self.values)


def tune(space: Space, evaluator: Callable[[dict], Measurement], *, n_evals: int,
         key: TuningKey | None = None, study_name: str | None = None, storage: Any = None,
         strategy: str = strategies.DEFAULT, seed: int | None = None, seeds: list[dict] = (),
         profile: Any = None, objective: str = "time", max_asks: int | None = None,
         stop_at: float | None = None,
         progress: Callable[[dict], None] | None = None) -> TuneResult:
    """Tune ``space`` with ``evaluator`` until the study holds ``n_evals`` evaluated configs
    (or the feasible space is exhausted, or a value <= ``stop_at`` is found).

    ``storage``: a URL, "memory" or an Optuna storage; default: the tuning database
    (``database.default_url()``). Tuning for energy uses its own study (the key's name plus
    ``|objective=energy``), so op calls, which read the time-tuned study, never get it."""
    if n_evals < 1:
        raise TilecError(f"the number of trials must be at least 1, got {n_evals}")
    if objective not in ("time", "energy"):
        raise TilecError(f"objective {objective!r} is not 'time' or 'energy'")
    name = study_name or (key.study_name if key else None)
    if not name:
        raise TilecError("tune needs a tuning key or a study name")
    if objective != "time":
        name = f"{name}|objective={objective}"
    store = database.open_storage(storage)
    dists = encoding.distributions(space)
    sampler = strategies.get(strategy)(dists, seed, n_evals)
    study = optuna.create_study(study_name=name, storage=store, sampler=sampler, direction="minimize",
                                load_if_exists=True)
    if key is not None and "key" not in study.user_attrs:
        study.set_user_attr("key", key.as_dict())
    fail_stale_trials(study)
    shared = not isinstance(store, optuna.storages.InMemoryStorage)   # other tuners may write too
    known = _Known()
    known.refresh(study)
    for cfg in seeds:
        cfg = {k: cfg[k] for k in space.names if k in cfg}
        if len(cfg) != len(space.names) or space.reasons(cfg, profile):
            continue
        if encoding.config_id(cfg) in known.values or encoding.config_id(encoding.encode(space, cfg)) in known.waiting:
            continue
        study.enqueue_trial(encoding.encode(space, cfg), user_attrs={"seed": True})
    rng = random.Random(seed)
    feasible: list[dict] | None = None
    max_asks = max_asks or 20 * n_evals + 200
    history: list[dict] = []
    idle, asks = 0, 0
    while known.evaluations < n_evals and asks < max_asks:
        asks += 1
        if idle >= 5:                    # the sampler keeps proposing known configs: explore instead
            if feasible is None:
                feasible = list(space.configs(profile))
            fresh = [c for c in feasible if encoding.config_id(c) not in known.values]
            if not fresh:
                break                    # every feasible config has been evaluated
            study.enqueue_trial(encoding.encode(space, rng.choice(fresh)), user_attrs={"fallback": "random"})
            idle = 0
        trial = study.ask(dists)
        cfg = encoding.decode(space, trial.params)
        trial.set_user_attr("config", cfg)
        trial.set_user_attr("origin", f"{HOST}:{os.getpid()}")
        reasons = space.reasons(cfg, profile)
        if reasons:
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("reason", "; ".join(reasons))
            study.tell(trial, state=TrialState.PRUNED)
            idle += 1
            continue
        cid = encoding.config_id(cfg)
        if cid in known.values:
            trial.set_user_attr("status", "duplicate")
            if known.values[cid] is None:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, known.values[cid])
            idle += 1
            continue
        idle = 0
        record = _evaluate(study, trial, evaluator, cfg, objective)
        history.append(record)
        if shared:
            known.refresh(study)
        else:
            known.add(cfg, record["value"])
        if record["value"] is not None and key is not None and known.best and record["value"] <= known.best[0]:
            database.record_best(store, name, cfg, record["value"], key.as_dict())
        if progress:
            progress({"evaluations": known.evaluations, "n_evals": n_evals, "record": record,
                      "best_value": known.best[0] if known.best else None,
                      "best_config": known.best[1] if known.best else None})
        if stop_at is not None and known.best and known.best[0] <= stop_at:
            break
    database.forget()
    known.refresh(study)
    return TuneResult(name, known.best[1] if known.best else None, known.best[0] if known.best else None,
                      known.evaluations, len(history), history, study)


def _evaluate(study, trial, evaluator, cfg: dict, objective: str) -> dict:
    try:
        m = evaluator(cfg)
        value = m.objective(objective)
    except TrialFailed as e:
        return _failed(study, trial, cfg, str(e))
    except (KeyboardInterrupt, SystemExit):
        trial.set_user_attr("status", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:               # an evaluator bug prunes the trial, never the tune
        return _failed(study, trial, cfg, f"evaluator error: {type(e).__name__}: {e}")
    trial.set_user_attr("status", "measured")
    if objective != "time":
        trial.set_user_attr("runtime_s", m.runtime_s)
    if m.energy_j is not None:
        trial.set_user_attr("energy_j", m.energy_j)
    study.tell(trial, value)
    return {"number": trial.number, "config": cfg, "value": value, "runtime_s": m.runtime_s,
            "energy_j": m.energy_j, "reason": None}


def _failed(study, trial, cfg, reason: str) -> dict:
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("reason", reason[:2000])
    study.tell(trial, state=TrialState.PRUNED)
    return {"number": trial.number, "config": cfg, "value": None, "runtime_s": None, "energy_j": None,
            "reason": reason}
