"""Choosing a kernel for a problem shape no record has: ``choose(problem, candidates, model)``.

Picking the model's fastest candidate alone can lose to always running the one kernel that
was best on average. So selection starts from that fixed kernel (the prior: the candidate
with the least geometric-mean slowdown over the training shapes) and moves to the model's
pick only when the model predicts it faster by more than ``margin``, a margin set on the
training shapes (held out from a model fitted on the rest) as the smallest that is never
worse than the fixed kernel there, on average or in the worst case. An infinite margin is
the fixed kernel itself, so the training shapes never see a worse choice than the prior.
Where the target is at hand, ``choose(..., measure=...)`` races instead: it times the
model's ``RACE`` fastest candidates and the prior and keeps the fastest measured
(``select_eval`` reports this as "race", replayed from the records' timings).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from .records import Record

MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, math.inf)
RACE = 2                 # candidates the model ranks first that a race times (where a device exists)


def _cid(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def by_problem(records: list[Record]) -> dict[str, dict[str, Record]]:
    """{problem key (device, op, dtype, shape): {config id: record}}."""
    out: dict[str, dict[str, Record]] = defaultdict(dict)
    for r in records:
        key = f"{r.device}|{r.op}|{r.dtype}|{json.dumps(r.shape, sort_keys=True)}"
        best = out[key].get(_cid(r.config))
        if best is None or r.runtime_s < best.runtime_s:
            out[key][_cid(r.config)] = r
    return dict(out)


def fixed_ranking(records: list[Record]) -> dict[str, list[str]]:
    """Per op: config ids by geometric-mean slowdown over the shapes that measured them
    (configs seen on fewer than half the op's shapes come last)."""
    slow: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    shapes: dict[str, int] = defaultdict(int)
    for runs in by_problem(records).values():
        op = next(iter(runs.values())).op
        shapes[op] += 1
        best = min(r.runtime_s for r in runs.values())
        for cid, r in runs.items():
            slow[op][cid].append(math.log(r.runtime_s / best))
    out = {}
    for op, per in slow.items():
        out[op] = sorted(per, key=lambda c: (len(per[c]) < shapes[op] / 2, sum(per[c]) / len(per[c])))
    return out


@dataclass
class Choice:
    config: dict
    source: str                  # "model", "fixed" or "race"
    predicted_gain: float        # predicted runtime of the fixed kernel / of the model's pick


def choose(problem: Record, candidates: list[dict], model, fixed: list[str] | None = None,
           margin: float = 0.0, measure=None) -> Choice:
    """The candidate to run for ``problem`` (a record whose op, shape, dtype and device are
    read). ``fixed``: the prior's ranking of config ids (``fixed_ranking``); without it,
    the model's pick. ``measure``: config -> seconds on the target; given, the model's
    ``RACE`` fastest candidates and the prior are timed and the fastest is kept."""
    runs = [replace(problem, config=dict(c), runtime_s=1.0, energy_j=None, power_w=None) for c in candidates]
    predicted, _ = model.predict(runs)
    pick = int(np.argmin(predicted))
    ids = [_cid(c) for c in candidates]
    prior = next((ids.index(c) for c in (fixed or []) if c in ids), None)
    if measure is not None:
        racers = sorted(set(np.argsort(predicted, kind="stable")[:RACE].tolist()) | ({prior} - {None}))
        timed = {i: float(measure(dict(candidates[i]))) for i in racers}
        won = min(timed, key=timed.get)
        return Choice(dict(candidates[won]), "race", float(predicted[prior] / predicted[won]) if prior is not None else math.inf)
    if prior is None:
        return Choice(dict(candidates[pick]), "model", math.inf)
    gain = float(predicted[prior] / predicted[pick])
    if gain > 1.0 + margin:
        return Choice(dict(candidates[pick]), "model", gain)
    return Choice(dict(candidates[prior]), "fixed", gain)


def _slowdowns(problems: dict[str, dict[str, Record]], model, fixed: dict[str, list[str]], margins) -> dict:
    """Per margin (and "model", "fixed"): measured slowdown of the choice on each problem."""
    out: dict = defaultdict(list)
    for runs in problems.values():
        cands = list(runs.values())
        best = min(r.runtime_s for r in cands)
        first = cands[0]
        predicted, _ = model.predict([replace(r, runtime_s=1.0) for r in cands])
        ranking = fixed.get(first.op, [])
        ids = list(runs)
        prior = next((ids.index(c) for c in ranking if c in ids), int(np.argmin(predicted)))
        pick = int(np.argmin(predicted))
        gain = predicted[prior] / predicted[pick]
        out["model"].append(cands[pick].runtime_s / best)
        out["fixed"].append(cands[prior].runtime_s / best)
        # a short race: time the model's RACE fastest candidates (and the prior) on the target
        racers = set(np.argsort(predicted, kind="stable")[:RACE].tolist()) | {prior}
        out["race"].append(min(cands[i].runtime_s for i in racers) / best)
        for m in margins:
            out[m].append((cands[pick] if gain > 1 + m else cands[prior]).runtime_s / best)
    return out


def calibrate(records: list[Record], fit, seed: int = 0) -> float:
    """The smallest margin never worse than the fixed kernel (mean and worst slowdown) on
    training shapes predicted by a model fitted on the other half of them."""
    problems = by_problem(records)
    keys = sorted(problems)
    np.random.default_rng(seed).shuffle(keys)
    halves = [keys[0::2], keys[1::2]]
    total: dict = defaultdict(list)
    for a, b in (halves, halves[::-1]):
        if not a or not b:
            continue
        train = [r for k in a for r in problems[k].values()]
        model = fit(train)
        res = _slowdowns({k: problems[k] for k in b}, model, fixed_ranking(train), MARGINS)
        for k, v in res.items():
            total[k] += v
    if not total:
        return math.inf
    fixed = np.array(total["fixed"])
    for m in MARGINS:
        s = np.array(total[m])
        if np.mean(np.log(s)) <= np.mean(np.log(fixed)) + 1e-12 and s.max() <= fixed.max() + 1e-12:
            return m
    return math.inf


def summary(slowdowns: list[float]) -> dict:
    s = np.array(slowdowns)
    return {"problems": int(len(s)), "within_5pct": float(np.mean(s <= 1.05)),
            "within_10pct": float(np.mean(s <= 1.10)),
            "geomean_slowdown": float(np.exp(np.mean(np.log(s)))), "worst_slowdown": float(s.max())}


def select_eval(records: list[Record], fit, folds: int = 5, seed: int = 0) -> dict:
    """Selection held out by problem shape: per fold, fit on the other shapes, calibrate the
    margin inside them, and choose for every held-out shape among its measured configs."""
    problems = by_problem(records)
    keys = sorted(problems)
    np.random.default_rng(seed).shuffle(keys)
    parts = [keys[i::folds] for i in range(min(folds, len(keys)))]
    out: dict = {"model": [], "fixed": [], "choose": [], "race": []}
    margins = []
    for part in parts:
        train = [r for k in keys if k not in set(part) for r in problems[k].values()]
        margin = calibrate(train, fit, seed)
        margins.append(margin)
        res = _slowdowns({k: problems[k] for k in part}, fit(train), fixed_ranking(train), (margin,))
        out["model"] += res["model"]
        out["fixed"] += res["fixed"]
        out["choose"] += res[margin]
        out["race"] += res["race"]
    res = {"folds": len(parts), "margins": margins, **{k: summary(v) for k, v in out.items()}}
    res["slowdowns"] = {k: [float(x) for x in v] for k, v in out.items()}    # per held-out problem
    return res


def plot_regret(res: dict, path: str) -> bool:
    """The share of held-out problems within each slowdown of the fastest kernel, per picker
    (a PNG at ``path``); False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    styles = {"model": dict(ls="--", lw=2.2), "fixed": dict(ls="-", lw=1.2), "choose": dict(ls="-", lw=1.2),
              "race": dict(ls=":", lw=1.6)}
    for name, v in res["slowdowns"].items():
        s = np.sort(np.array(v))
        ax.step(s, np.arange(1, len(s) + 1) / len(s), where="post", label=f"{name} (worst {s.max():.2f}x)",
                **styles.get(name, {}))
    ax.axvline(1.05, color="grey", lw=0.5, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("measured slowdown of the chosen kernel vs the fastest")
    ax.set_ylabel("share of held-out problems")
    ax.set_title(f"selection regret, shapes held out ({res['model']['problems']} problems)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
