"""The learned cost model: gradient-boosted trees (LightGBM) on the analytical features plus
the raw config, predicting log(runtime / baseline) (the analytical runtime on CPUs, the roofline bound
elsewhere) and log(energy / analytical energy).

Normalising by the analytical model is what lets it extrapolate: for an unseen shape the
trees only correct a physically scaled baseline. Saved as one JSON file holding the column
layout, category vocabularies and LightGBM's own text model: data, never pickle.

    m = LearnedModel.fit(records)            # records.Record rows
    runtime_s, energy_j = m.predict(records)  # numpy arrays
    m.save("model.json"); m = LearnedModel.load("model.json")
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tilec.errors import TilecError

from . import features as feat
from .records import Record

FORMAT = "tilec-cost-model/1"
MIN_ENERGY_ROWS = 20                 # fewer measured energies: fall back to the analytical split


# What the trees correct: on CPUs the analytical model's own runtime (it models the loop
# nests' launch, program, step and BLAS-call costs, which dominate small configs there and
# which the roofline knows nothing of); elsewhere the roofline bound. Models saved before
# this have no "baseline" entry and were trained on the roofline alone.
BASELINE = "cpu-model"


def _baseline(records: list[Record], analysed, kind: str) -> np.ndarray:
    out = []
    for r, (_, p) in zip(records, analysed):
        cpu = kind == "cpu-model" and feat.profile_of(r).kind == "cpu"
        out.append(p.features["t_model"] if cpu else p.features["t_roofline"])
    return np.array(out)


def _params(n_rows: int, seed: int) -> dict:
    # one thread: LightGBM's OpenMP threads slow it down ten-fold on a busy 2-core machine
    return {"objective": "regression", "learning_rate": 0.1 if n_rows > 50000 else 0.05, "num_leaves": 63 if n_rows > 5000 else 15,
            "min_data_in_leaf": 20 if n_rows > 5000 else 3, "feature_fraction": 0.9, "bagging_fraction": 0.9,
            "bagging_freq": 1, "lambda_l2": 1.0, "seed": seed, "deterministic": True, "num_threads": 1,
            "verbosity": -1, "min_data_in_bin": 1, "force_col_wise": True,
            # linear models in the leaves extend trends (steps, padding) past the training shapes;
            # on large data sets plain leaves are as good and much faster
            "linear_tree": n_rows <= 20000, "linear_lambda": 0.1}


def _rounds(n_rows: int) -> int:
    return 800 if n_rows > 5000 else 400


class LearnedModel:
    def __init__(self, columns: list[str], vocab: dict[str, list[str]], runtime_model, energy_model=None,
                 meta: dict | None = None):
        self.columns, self.vocab = columns, vocab
        self.runtime_model, self.energy_model = runtime_model, energy_model
        self.meta = meta or {}

    # -- features ---------------------------------------------------------------------------
    @staticmethod
    def _rows(records: list[Record]):
        analysed = [feat.analyse(r) for r in records]
        rows = [feat.row(r, w, p) for r, (w, p) in zip(records, analysed)]
        return rows, analysed

    def _matrix(self, rows: list[dict]) -> np.ndarray:
        X = np.full((len(rows), len(self.columns)), np.nan)
        for i, r in enumerate(rows):
            for j, c in enumerate(self.columns):
                v = r.get(c)
                if v is None:
                    continue
                if c in self.vocab:
                    codes = self.vocab[c]
                    X[i, j] = codes.index(str(v)) if str(v) in codes else np.nan
                else:
                    X[i, j] = float(v) if not isinstance(v, str) else np.nan
        return X

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, records: list[Record], seed: int = 0, rounds: int | None = None) -> "LearnedModel":
        import lightgbm as lgb
        if len(records) < 8:
            raise TilecError(f"a learned model needs at least 8 records, got {len(records)}")
        rows, analysed = cls._rows(records)
        columns = sorted({k for r in rows for k in r})
        vocab = {c: sorted({str(r[c]) for r in rows if c in r})
                 for c in columns if any(isinstance(r.get(c), str) for r in rows)}
        model = cls(columns, vocab, None)
        X = model._matrix(rows)
        t_base = _baseline(records, analysed, BASELINE)
        y = np.log(np.array([r.runtime_s for r in records]) / t_base)
        cats = [columns.index(c) for c in vocab]
        params = _params(len(records), seed)
        n = rounds or _rounds(len(records))
        ds = lgb.Dataset(X, y, categorical_feature=cats or "auto", free_raw_data=False)
        model.runtime_model = lgb.train(params, ds, num_boost_round=n)
        energy_idx = [i for i, r in enumerate(records) if r.energy_j]
        if len(energy_idx) >= MIN_ENERGY_ROWS:
            e_model = np.array([analysed[i][1].energy_j for i in energy_idx])
            ye = np.log(np.array([records[i].energy_j for i in energy_idx]) / e_model)
            dse = lgb.Dataset(X[energy_idx], ye, categorical_feature=cats or "auto")
            model.energy_model = lgb.train(params, dse, num_boost_round=n)
        model.meta = {"rows": len(records), "energy_rows": len(energy_idx), "rounds": n,
                      "ops": sorted({r.op for r in records}), "devices": sorted({r.device for r in records}),
                      "baseline": BASELINE,
                      "target": "log(runtime_s / baseline): the analytical CPU model's runtime on CPUs, "
                                "the roofline bound elsewhere"}
        return model

    # -- prediction -------------------------------------------------------------------------
    def predict(self, records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
        """(runtime_s, energy_j) per record; only op/shape/dtype/config/device (and a host
        record's host figures) are read."""
        if not records:
            return np.zeros(0), np.zeros(0)
        rows, analysed = self._rows(records)
        X = self._matrix(rows)
        t_base = _baseline(records, analysed, self.meta.get("baseline", "roofline"))
        runtime = t_base * np.exp(self.runtime_model.predict(X))
        if self.energy_model is not None:
            energy = np.array([p.energy_j for _, p in analysed]) * np.exp(self.energy_model.predict(X))
        else:
            # analytical dynamic energy + static power over the learned runtime
            energy = np.array([p.energy_j - feat.profile_of(r).idle_power_w * p.runtime_s
                               + feat.profile_of(r).idle_power_w * t
                               for r, (_, p), t in zip(records, analysed, runtime)])
        return runtime, energy

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from tilec.runtime.cache import atomic_write
        doc = {"format": FORMAT, "columns": self.columns, "vocab": self.vocab, "meta": self.meta,
               "runtime_model": self.runtime_model.model_to_string(),
               "energy_model": self.energy_model.model_to_string() if self.energy_model is not None else None}
        atomic_write(Path(path), json.dumps(doc))

    @classmethod
    def load(cls, path: str | Path) -> "LearnedModel":
        import lightgbm as lgb
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise TilecError(f"no cost model at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TilecError(f"{path}: not a tilec cost model (invalid JSON: {e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TilecError(f"{path}: not a tilec cost model (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                             f"expected {FORMAT!r})")
        try:
            runtime = lgb.Booster(model_str=doc["runtime_model"])
            energy = lgb.Booster(model_str=doc["energy_model"]) if doc.get("energy_model") else None
            return cls(list(doc["columns"]), {k: list(v) for k, v in doc["vocab"].items()}, runtime, energy,
                       dict(doc.get("meta", {})))
        except (KeyError, TypeError, lgb.basic.LightGBMError) as e:
            raise TilecError(f"{path}: damaged cost model: {e}") from None
