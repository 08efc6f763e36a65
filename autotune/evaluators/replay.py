"""Replay a recorded search space: every config was measured before, so a strategy can be
judged without hardware. Reads Kernel Tuner cache files (JSON, optionally .gz) and CSV
tables (one column per parameter plus the objective column(s)).

Configs missing from the record are infeasible (never "evaluated"); recorded failures
(``CompilationFailedConfig`` ...) are evaluations that fail, as they did on the device.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tilec.errors import TilecError

from ..encoding import config_id
from ..space import Param, Space
from . import Measurement, TrialFailed


@dataclass
class RecordedSpace:
    name: str
    params: dict[str, list]                     # name -> choices
    records: dict[str, float | str]             # config_id -> objective value, or failure text
    unit_s: float = 1e-3                        # seconds per recorded unit (Kernel Tuner: ms)
    meta: dict = field(default_factory=dict)

    def space(self) -> Space:
        def recorded(cfg: dict, profile) -> str | None:
            return None if config_id(cfg) in self.records else "not in the recorded space"
        return Space([Param(n, tuple(c)) for n, c in self.params.items()], [recorded])

    def valid(self) -> dict[str, float]:
        return {k: v for k, v in self.records.items() if not isinstance(v, str)}

    def optimum(self) -> float:
        valid = self.valid()
        if not valid:
            raise TilecError(f"{self.name}: no valid measurement in the record")
        return min(valid.values())

    def evaluator(self) -> ReplayEvaluator:
        return ReplayEvaluator(self)

    @property
    def context(self) -> tuple:
        """What the record measured: the device and the parameters held fixed (a clock, ...)."""
        return (self.meta.get("device_name") or self.name, tuple(sorted(self.meta.get("fixed", {}).items())))

    def fix(self, values: dict) -> RecordedSpace:
        """The part of the record where the named parameters have the given values, as a space
        without them (e.g. one locked clock of a cache that tuned the clock too)."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise TilecError(f"{self.name}: cannot fix {unknown}; its parameters are {list(self.params)}")
        bad = [f"{k}={v!r}" for k, v in values.items() if v not in self.params[k]]
        if bad:
            raise TilecError(f"{self.name}: {', '.join(bad)} not among the recorded values")
        records = {}
        for cid, v in self.records.items():
            cfg = json.loads(cid)
            if all(cfg.get(k) == x for k, x in values.items()):
                records[config_id({k: x for k, x in cfg.items() if k not in values})] = v
        params = {n: c for n, c in self.params.items() if n not in values}
        meta = {**self.meta, "fixed": {**self.meta.get("fixed", {}), **values}}
        return RecordedSpace(self.name, params, records, self.unit_s, meta)

    def split(self, names: list[str]) -> list[RecordedSpace]:
        """One record per combination of values of ``names`` (those present)."""
        names = [n for n in names if n in self.params]
        if not names:
            return [self]
        combos = {tuple(json.loads(cid)[n] for n in names) for cid in self.records}
        return [self.fix(dict(zip(names, c))) for c in sorted(combos)]


class ReplayEvaluator:
    def __init__(self, recorded: RecordedSpace):
        self.recorded = recorded
        self.calls = 0

    def __call__(self, config: dict) -> Measurement:
        self.calls += 1
        v = self.recorded.records.get(config_id(config))
        if v is None:
            raise TrialFailed("not in the recorded space")
        if isinstance(v, str):
            raise TrialFailed(f"recorded failure: {v}")
        return Measurement(v * self.recorded.unit_s, None, {"recorded": v})


def _number(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) else f


def load(path: str | Path, objective: str | None = None) -> RecordedSpace:
    """A Kernel Tuner cache (``.json``/``.json.gz``) or a ``.csv`` table."""
    p = Path(path)
    if not p.is_file():
        raise TilecError(f"recorded search space {str(p)!r} does not exist")
    if p.name.endswith((".json", ".json.gz")):
        return load_kerneltuner(p, objective)
    if p.name.endswith((".csv", ".csv.gz")):
        return load_csv(p, objective)
    raise TilecError(f"{p.name}: expected a Kernel Tuner cache (.json, .json.gz) or a .csv table")


def _open_text(p: Path):
    return gzip.open(p, "rt") if p.name.endswith(".gz") else open(p, newline="")


def load_kerneltuner(path: str | Path, objective: str | None = None) -> RecordedSpace:
    p = Path(path)
    try:
        with _open_text(p) as f:
            text = f.read()
        # Kernel Tuner leaves an unfinished cache without its closing braces.
        try:
            data = json.loads(text)
        except ValueError:
            data = json.loads(text.rstrip().rstrip(",") + "}}")
    except (OSError, ValueError, EOFError) as e:
        raise TilecError(f"{p.name} is not a readable Kernel Tuner cache: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cache"), dict) or not data.get("tune_params"):
        raise TilecError(f"{p.name} lacks the Kernel Tuner fields 'tune_params' and 'cache'")
    names = list(data.get("tune_params_keys") or data["tune_params"])
    params = {n: [_number(v) for v in data["tune_params"][n]] for n in names}
    objective = objective or data.get("objective") or "time"
    records: dict[str, float | str] = {}
    for entry in data["cache"].values():
        if not isinstance(entry, dict):
            continue
        try:
            cfg = {n: _number(entry[n]) for n in names}
        except KeyError as e:
            raise TilecError(f"{p.name}: a cache entry lacks parameter {e}") from None
        v = entry.get(objective)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            records[config_id(cfg)] = float(v)
        else:
            records[config_id(cfg)] = str(v if v is not None else f"no {objective!r} recorded")
    if not records:
        raise TilecError(f"{p.name}: the cache holds no entries")
    unit = 1e-3 if objective == "time" else 1.0
    meta = {k: data.get(k) for k in ("device_name", "kernel_name", "problem_size", "objective")}
    return RecordedSpace(p.name, params, records, unit, meta)


def load_csv(path: str | Path, objective: str | None = None) -> RecordedSpace:
    """CSV: ``objective`` names the column (or ``a,b,...`` columns, averaged); default ``time``.
    Every other column is a parameter."""
    p = Path(path)
    with _open_text(p) as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        targets = [c.strip() for c in (objective or "time").split(",")]
        missing = [c for c in targets if c not in columns]
        if missing:
            raise TilecError(f"{p.name}: objective column(s) {missing} not found; columns are {columns}")
        names = [c for c in columns if c not in targets]
        if not names:
            raise TilecError(f"{p.name}: no parameter columns besides the objective")
        choices: dict[str, set] = {n: set() for n in names}
        records: dict[str, float | str] = {}
        for row in reader:
            row = {k.strip(): v for k, v in row.items() if k is not None}
            cfg = {n: _number(row[n]) for n in names}
            for n in names:
                choices[n].add(cfg[n])
            vals = [_number(row[c]) for c in targets]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                records[config_id(cfg)] = sum(vals) / len(vals)
            else:
                records[config_id(cfg)] = f"recorded failure {vals}"
    if not records:
        raise TilecError(f"{p.name}: no rows")
    params = {n: sorted(c, key=lambda x: (str(type(x)), x)) for n, c in choices.items()}
    time_like = all(t == "time" or "ms" in t.lower() for t in targets)
    return RecordedSpace(p.name, params, records, 1e-3 if time_like else 1.0, {"objective": targets})
