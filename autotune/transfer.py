"""Transfer: what other devices (or other fixed settings, e.g. other locked clocks) already
measured for the same kernel, as seeds (their best configs, evaluated first) and as a prior
(a score per config: the mean over sources of log(time / that source's best), lower is more
promising) for the strategies that use one.

Leave-one-device-out by construction: a source whose context (device, fixed parameters)
equals the target's is dropped, so a device never learns from its own measurements.
"""
from __future__ import annotations

import json
import math

from .encoding import config_id
from .evaluators.replay import RecordedSpace, load

FAILED_PENALTY = math.log(10.0)      # a config that failed there: worse than its worst by 10x


class Transfer:
    def __init__(self, target: RecordedSpace, sources: list[RecordedSpace]):
        self.names = list(target.params)
        self.sources = [s for s in sources if s.context != target.context and s.valid()]
        self._cache: dict[int, dict[str, float]] = {}

    @classmethod
    def from_files(cls, target: RecordedSpace, paths, objective: str | None = None) -> Transfer:
        """Sources from replay files; a file that tuned the target's fixed parameters (a clock)
        gives one source per value of them."""
        fixed = list(target.meta.get("fixed", {}))
        sources = []
        for p in paths:
            sources += load(p, objective).split(fixed)
        return cls(target, sources)

    @property
    def contexts(self) -> list[tuple]:
        return [s.context for s in self.sources]

    def _scores(self, source: RecordedSpace) -> dict[str, float]:
        if id(source) not in self._cache:
            self._cache[id(source)] = self._score(source)
        return self._cache[id(source)]

    def _score(self, source: RecordedSpace) -> dict[str, float]:
        valid = source.valid()
        best, worst = min(valid.values()), max(valid.values())
        out = {}
        for cid, v in source.records.items():
            cfg = json.loads(cid)
            if not set(self.names) <= set(cfg):
                continue
            key = config_id({n: cfg[n] for n in self.names})
            out[key] = math.log(worst / best) + FAILED_PENALTY if isinstance(v, str) else math.log(v / best)
        return out

    def prior(self) -> dict[str, float]:
        """Mean score over the sources that recorded the config."""
        total: dict[str, list[float]] = {}
        for s in self.sources:
            for cid, v in self._scores(s).items():
                total.setdefault(cid, []).append(v)
        return {cid: sum(v) / len(v) for cid, v in total.items()}

    def seeds(self, k: int = 3) -> list[dict]:
        """Each source's best ``k`` configs, round robin (best of every source first)."""
        ranked = [sorted((v, cid) for cid, v in self._scores(s).items()) for s in self.sources]
        out, seen = [], set()
        for i in range(k):
            for r in ranked:
                if i < len(r) and r[i][1] not in seen:
                    seen.add(r[i][1])
                    out.append(json.loads(r[i][1]))
        return out


def database_seeds(url: str, key, k: int = 3) -> list[dict]:
    """The best configs other devices recorded in the tuning database for the same op, dtype
    and backend (time-tuned studies only), nearest shape bucket first; never the key's own
    device."""
    from .database import best_rows
    found = []
    for name, cfg, _, fields in best_rows(url):
        if name.endswith("|objective=energy") or fields.get("device") == key.device:
            continue
        if (fields.get("op"), fields.get("dtype"), fields.get("backend")) != (key.op, key.dtype, key.backend):
            continue
        other = fields.get("shape_bucket") or {}
        distance = sum(abs(math.log2(max(int(other.get(d, 1)), 1)) - math.log2(max(int(v), 1)))
                       for d, v in dict(key.shape).items())
        found.append((distance, json.dumps(cfg, sort_keys=True)))
    out = []
    for _, cid in sorted(found):
        if cid not in out:
            out.append(cid)
    return [json.loads(c) for c in out[:k]]
