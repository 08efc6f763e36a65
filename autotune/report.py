"""What a person sees of a tune: a progress bar with the best so far, a final table, plots
(optimization history, parameter importances) as PNG or HTML, and a JSON record."""
from __future__ import annotations

import base64
import io
import json
import math
import warnings
from pathlib import Path

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tilec.errors import TilecError
from tilec.runtime.cache import atomic_write

from . import encoding

TrialState = optuna.trial.TrialState


def fmt_value(v: float | None, objective: str = "time") -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if objective == "energy":
        return f"{v:.4g} J"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if v >= scale:
            return f"{v / scale:.4g} {unit}"
    return f"{v:.3g} s"


class ProgressBar:
    """``with ProgressBar(n) as bar: tune(..., progress=bar.update)``"""

    def __init__(self, total: int, objective: str = "time", console: Console | None = None, enabled: bool = True):
        self.objective = objective
        self.progress = Progress(TextColumn("[bold]tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console or Console(stderr=True),
                                 disable=not enabled, transient=False)
        self.task = self.progress.add_task("best -", total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, info: dict) -> None:
        best = fmt_value(info["best_value"], self.objective)
        self.progress.update(self.task, completed=info["evaluations"], total=info["n_evals"],
                             description=f"best {best} {info['best_config'] or ''}")


def evaluated_trials(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.user_attrs.get("status") in ("measured", "failed")]


def table(study: optuna.Study, objective: str = "time", top: int = 10) -> Table:
    """The study's configs, best first. After a confirmation (confirm.py) the contenders come
    first in the order it decided, by their re-measured medians (so rank 1 is the stored best),
    then the other configs by their search measurement; the ``measure`` column says which."""
    trials = evaluated_trials(study)
    ok = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    failed = [t for t in trials if t.state == TrialState.PRUNED]
    out = Table(title=f"{study.study_name}: {len(ok)} configs evaluated, {len(failed)} failed")
    varying = _varying([t.user_attrs["config"] for t in trials])
    rows = confirmed_rows(study) if objective == "time" else []
    shown = {encoding.config_id(cfg) for cfg, _, _ in rows}
    rows += [(t.user_attrs["config"], t.value, "search") for t in ok
             if encoding.config_id(t.user_attrs["config"]) not in shown]
    out.add_column("rank", justify="right")
    out.add_column("config")
    out.add_column(objective, justify="right")
    out.add_column("vs best", justify="right")
    out.add_column("measure")
    for i, (cfg, value, measure) in enumerate(rows[:top], 1):
        out.add_row(str(i), _config_text(cfg, varying), fmt_value(value, objective), f"{value / rows[0][1]:.2f}x",
                    measure)
    for t in failed[:5]:
        out.add_row("fail", _config_text(t.user_attrs["config"], varying), "-",
                    str(t.user_attrs.get("reason", ""))[:60], "")
    return out


def confirmed_rows(study: optuna.Study) -> list[tuple[dict, float, str]]:
    """(config, median, label) of the confirmed contenders, in the confirmation's order."""
    confirmed = study.user_attrs.get("confirmed") or {}
    rows = []
    for c in confirmed.get("contenders", ()):
        label = f"confirmed ({confirmed.get('rounds', '?')} rounds, ±{c.get('spread', 0) / 2:.0%})"
        rows.append((c["config"], c["median_s"], label))
    kept = confirmed.get("kept_incumbent_within")
    if kept is not None and rows:
        rows[0] = (rows[0][0], rows[0][1], rows[0][2] + f"; kept: no challenger faster by over {kept:.0%}")
    return rows


def _varying(configs: list[dict]) -> set:
    """Parameters that differ between configs (constants would only clutter the table)."""
    return {k for k in (configs[0] if configs else {}) if len({repr(c.get(k)) for c in configs}) > 1}


def _config_text(cfg: dict, keys: set | None = None) -> str:
    return " ".join(f"{k}={v}" for k, v in cfg.items() if keys is None or k in keys or len(keys) == 0)


def study_record(study: optuna.Study, extra: dict | None = None) -> dict:
    trials = []
    for t in evaluated_trials(study):
        trials.append({"number": t.number, "config": t.user_attrs["config"],
                       "value": t.value if t.state == TrialState.COMPLETE else None,
                       "reason": t.user_attrs.get("reason"),
                       "runtime_s": t.user_attrs.get("runtime_s", t.value if t.state == TrialState.COMPLETE else None),
                       "energy_j": t.user_attrs.get("energy_j")})
    return {**(extra or {}), "study": study.study_name, "key": study.user_attrs.get("key"), "trials": trials}


def write_json(path: str | Path, data: dict) -> None:
    atomic_write(Path(path), json.dumps(data, indent=1, sort_keys=True, default=str))


def write_plots(study: optuna.Study, path: str | Path) -> list[Path]:
    """``path`` ending .png or .html; writes <stem>-history and <stem>-importance beside it."""
    path = Path(path)
    if path.suffix not in (".png", ".html"):
        raise TilecError(f"plot file {path.name} must end in .png or .html")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm
    figures = {"history": lambda: ovm.plot_optimization_history(study)}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) >= 2 and len(study.get_trials(deepcopy=False)[0].distributions) >= 1:
        figures["importance"] = lambda: ovm.plot_param_importances(study)
    written = []
    for label, make in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = make()
        except Exception as e:       # e.g. importances on a study whose params never varied
            print(f"tilec: skipped the {label} plot: {e}")
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        target = path.with_name(f"{path.stem}-{label}{path.suffix}")
        if path.suffix == ".png":
            atomic_write(target, buf.getvalue())
        else:
            img = base64.b64encode(buf.getvalue()).decode()
            atomic_write(target, f"<!doctype html><meta charset='utf-8'><title>{study.study_name} {label}</title>"
                                 f"<h3>{study.study_name}: {label}</h3><img alt='{label}' "
                                 f"src='data:image/png;base64,{img}'>\n")
        written.append(target)
    return written
