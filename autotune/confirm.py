"""Confirm a measured tune's winner: the few fastest configs are measured again in interleaved
rounds, and the lowest median over all rounds wins.

Why: the tuner keeps the single fastest measurement, and on a busy machine that is often a
lucky one. At GEMM 512^3 on a 2-vCPU VM eight configs lie within 9% of each other while one
config's runs spread by about 5%, so the first-measured leader was at times 14% slower than
a config measured next to it. Rounds that alternate the contenders let drifts in machine
speed hit them all alike (Ansor and AutoTVM also re-measure their final candidates).

The confirmed pick is written to the tuning database as the study's best (replacing a lower
but unconfirmed value) and kept in the study's ``confirmed`` attribute, so ``rebuild_best``
gives the same answer.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable

import optuna

from tilec.tuning import database

from . import encoding
from .evaluators import Measurement, TrialFailed

TOP = 3            # contenders re-measured
ROUNDS = 3         # interleaved rounds over them


def leaders(study: optuna.Study, k: int = TOP) -> list[dict]:
    """The ``k`` distinct configs with the lowest measured values, fastest first."""
    best: dict[str, tuple[float, dict]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        cfg = t.user_attrs.get("config")
        if cfg is None or t.user_attrs.get("status") != "measured":
            continue
        cid = encoding.config_id(cfg)
        if cid not in best or t.value < best[cid][0]:
            best[cid] = (t.value, cfg)
    return [cfg for _, cfg in sorted(best.values(), key=lambda vc: vc[0])[:k]]


def remeasure(evaluator: Callable[[dict], Measurement], contenders: list[dict],
              rounds: int = ROUNDS) -> list[tuple[float, dict]]:
    """(median seconds over every timed run of every round, config) per contender that still
    runs, fastest first. Each round visits the contenders in an order rotated by one."""
    return [(v, c) for v, c, _ in remeasure_samples(evaluator, contenders, rounds)]


def remeasure_samples(evaluator: Callable[[dict], Measurement], contenders: list[dict],
                      rounds: int = ROUNDS) -> list[tuple[float, dict, list[float]]]:
    """``remeasure`` with each contender's timed runs, to tell a win from noise."""
    samples: list[list[float]] = [[] for _ in contenders]
    alive = set(range(len(contenders)))
    for r in range(rounds):
        order = list(range(len(contenders)))
        for i in order[r % len(order):] + order[:r % len(order)]:
            if i not in alive:
                continue
            try:
                m = evaluator(contenders[i])
            except TrialFailed:
                alive.discard(i)          # it ran during the tune; now it does not: drop it
                continue
            samples[i].extend(m.info.get("times_s") or [m.runtime_s])
    ranked = [(statistics.median(samples[i]), contenders[i], samples[i]) for i in sorted(alive) if samples[i]]
    return sorted(ranked, key=lambda vcs: vcs[0])


def spread(samples: list[float]) -> float:
    """How far one config's timed runs scatter: their interquartile range over their median."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(samples)


def confirm_best(study: optuna.Study, storage, evaluator: Callable[[dict], Measurement], key_fields: dict,
                 k: int = TOP, rounds: int = ROUNDS) -> tuple[dict, float] | None:
    """Re-measure the study's ``k`` leaders (and the pick an earlier tune confirmed, the
    incumbent), store the winner as its best; (config, seconds), or None when fewer than two
    configs were measured (nothing to confirm). A challenger replaces the incumbent only when
    its median is lower by more than the spread of either one's runs: a re-tune of a settled
    study does not flip its best on noise."""
    contenders = leaders(study, k)
    previous = study.user_attrs.get("confirmed") or {}
    incumbent = previous.get("config")
    if incumbent is not None and encoding.config_id(incumbent) not in {encoding.config_id(c) for c in contenders}:
        contenders.append(incumbent)
    if len(contenders) < 2:
        return None
    ranked = remeasure_samples(evaluator, contenders, rounds)
    if not ranked:
        return None
    kept = None
    if incumbent is not None and encoding.config_id(ranked[0][1]) != encoding.config_id(incumbent):
        held = next((r for r in ranked if encoding.config_id(r[1]) == encoding.config_id(incumbent)), None)
        if held is not None:
            margin = max(spread(ranked[0][2]), spread(held[2]))
            if ranked[0][0] >= held[0] * (1 - margin):
                kept = margin
                ranked = [held] + [r for r in ranked if r is not held]
    value, cfg, _ = ranked[0]
    study.set_user_attr("confirmed", {"config": cfg, "value": value, "rounds": rounds,
                                      "contenders": [{"config": c, "median_s": v, "spread": spread(s)}
                                                     for v, c, s in ranked],
                                      "kept_incumbent_within": kept})
    database.record_best(storage, study.study_name, cfg, value, key_fields, replace=True)
    return cfg, value
