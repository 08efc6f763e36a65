"""Best-so-far curves of replayed tunes: per recorded file, per strategy, the median over
seeds (and the 25-75th percentile band) of best value / recorded optimum against the number
of evaluations. Runs stop at the target, so a curve holds its last value after that."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tilec.errors import TilecError
from tilec.runtime.cache import atomic_write


def band(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(25th, 50th, 75th percentile) per evaluation over the seeds' curves."""
    n = max((len(c) for c in curves), default=0)
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    rows = np.array([list(c) + [c[-1] if c else np.inf] * (n - len(c)) for c in curves], dtype=float)
    return tuple(np.percentile(rows, q, axis=0) for q in (25, 50, 75))


def plot(path: str | Path, panels: list[tuple[str, dict[str, list[list[float]]]]], within: float) -> Path:
    """``panels``: (title, {strategy: curves}) per file; one PNG with a panel per file."""
    path = Path(path)
    if path.suffix != ".png":
        raise TilecError(f"curve plot {path.name} must end in .png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(3, len(panels)) or 1
    rows = (len(panels) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, by_strategy) in zip(axes.flat, panels):
        for name, curves in by_strategy.items():
            lo, mid, hi = band(curves)
            x = np.arange(1, len(mid) + 1)
            ax.plot(x, mid, label=name)
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.axhline(1 + within, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best / optimum")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path
