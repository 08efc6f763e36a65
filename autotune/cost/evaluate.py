"""How good is a cost model on data it did not train on: R^2 (on runtimes and on log
runtimes), MAPE, Spearman rank correlation overall and within each shape (what a tuner needs:
the right order of configs), for a random row split and for hold-outs of whole groups
(a problem shape, a device, or every row with a given value of one parameter)."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tilec.errors import TilecError

from .records import Record


def r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - p) ** 2).sum()) / ss if ss > 0 else float("nan")


def mape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y) / np.abs(y)))


def spearman(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) < 3:
        return float("nan")
    from scipy.stats import spearmanr
    rho = spearmanr(y, p).statistic
    return float(rho) if rho == rho else float("nan")


def metrics(y, p, groups: list[str] | None = None) -> dict:
    y, p = np.asarray(y, float), np.asarray(p, float)
    out = {"n": int(len(y)), "r2": r2(y, p), "r2_log": r2(np.log(y), np.log(p)), "mape": mape(y, p),
           "spearman": spearman(y, p)}
    if groups is not None:
        by = defaultdict(list)
        for i, g in enumerate(groups):
            by[g].append(i)
        rhos = [spearman(y[ix], p[ix]) for ix in by.values() if len(ix) >= 3]
        rhos = [r for r in rhos if r == r]
        if rhos:
            out["spearman_within_shape_mean"] = float(np.mean(rhos))
            out["spearman_within_shape_min"] = float(np.min(rhos))
            out["shapes"] = len(rhos)
    return out


@dataclass
class Split:
    name: str
    folds: list[tuple[list[int], list[int]]]     # (train indices, test indices)
    note: str = ""


def random_split(n: int, test_fraction: float = 0.2, seed: int = 0) -> Split:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    k = max(1, int(round(n * test_fraction)))
    return Split(f"random {int(test_fraction * 100)}% rows", [(sorted(idx[k:]), sorted(idx[:k]))])


def group_split(records: list[Record], by: str, max_folds: int = 5, seed: int = 0) -> Split:
    """Leave-groups-out: the distinct groups (by shape, device or a parameter's value) are
    dealt into at most ``max_folds`` folds; each fold is held out once."""
    keys = [r.group_key(by) for r in records]
    groups = sorted(set(keys))
    if len(groups) < 2:
        raise TilecError(f"hold-out by {by!r} needs at least 2 groups; the records have {groups}")
    random.Random(seed).shuffle(groups)
    k = min(max_folds, len(groups))
    fold_of = {g: i % k for i, g in enumerate(groups)}
    folds = []
    for f in range(k):
        test = [i for i, g in enumerate(keys) if fold_of[g] == f]
        train = [i for i, g in enumerate(keys) if fold_of[g] != f]
        folds.append((train, test))
    return Split(f"hold out by {by} ({len(groups)} groups, {k} folds)", folds)


@dataclass
class Result:
    split: str
    metrics: dict
    measured: np.ndarray = field(repr=False, default=None)
    predicted: np.ndarray = field(repr=False, default=None)
    energy: dict | None = None
    groups: list = field(repr=False, default_factory=list)     # each held-out row's shape group
    ops: list = field(repr=False, default_factory=list)        # and its op

    def by_op(self) -> dict[str, dict]:
        """The metrics of each op family's held-out rows (within-shape ranks included)."""
        out = {}
        for op in sorted(set(self.ops)):
            ix = [i for i, o in enumerate(self.ops) if o == op]
            out[op] = metrics(self.measured[ix], self.predicted[ix], [self.groups[i] for i in ix])
        return out


def cross_validate(records: list[Record], split: Split, fit, predict) -> Result:
    """Train on each fold's rows, predict its held-out rows, and score all held-out rows together."""
    ys, ps, groups, ops, ey, ep = [], [], [], [], [], []
    for train, test in split.folds:
        model = fit([records[i] for i in train])
        test_recs = [records[i] for i in test]
        rt, en = predict(model, test_recs)
        ys += [r.runtime_s for r in test_recs]
        ps += list(rt)
        groups += [r.group_key("shape") for r in test_recs]
        ops += [r.op for r in test_recs]
        for r, e in zip(test_recs, en):
            if r.energy_j:
                ey.append(r.energy_j)
                ep.append(e)
    res = Result(split.name, metrics(ys, ps, groups), np.array(ys), np.array(ps), groups=groups, ops=ops)
    if ey:
        res.energy = metrics(ey, ep)
    return res


def plot(results: list[Result], path: str, title: str = "") -> None:
    """Predicted vs measured runtime, one panel per split, log-log with the y = x line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.4), squeeze=False)
    for ax, res in zip(axes[0], results):
        y, p = res.measured, res.predicted
        ax.scatter(y, p, s=4, alpha=0.35, edgecolors="none")
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())          # minor labels overlap on short ranges
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("measured runtime (s)")
        ax.set_ylabel("predicted runtime (s)")
        m = res.metrics
        ax.set_title(f"{res.split}\nR²={m['r2']:.3f}  MAPE={m['mape'] * 100:.1f}%  ρ={m['spearman']:.3f}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(m: dict) -> str:
    s = f"n={m['n']:6d}  R2={m['r2']:.4f}  R2(log)={m['r2_log']:.4f}  MAPE={m['mape'] * 100:6.2f}%  Spearman={m['spearman']:.4f}"
    if "spearman_within_shape_mean" in m:
        s += f"  within-shape Spearman mean={m['spearman_within_shape_mean']:.3f} min={m['spearman_within_shape_min']:.3f}"
    return s
