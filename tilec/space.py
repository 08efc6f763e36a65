"""Search spaces: named parameters with choices, and constraints that may read the target's
hardware profile. An infeasible config is never compiled or run: ``reasons`` says why."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

# A constraint gets (config, profile or None) and returns None when fine, else the reason.
Constraint = Callable[[dict, Any], "str | None"]


@dataclass(frozen=True)
class Param:
    name: str
    choices: tuple
    doc: str = ""


@dataclass
class Space:
    params: list[Param]
    constraints: list[Constraint] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def reasons(self, config: dict, profile: Any = None) -> list[str]:
        """Why ``config`` cannot run on ``profile`` (empty when it can)."""
        out = []
        for p in self.params:
            if p.name in config and config[p.name] not in p.choices:
                out.append(f"{p.name}={config[p.name]!r} is not one of {list(p.choices)}")
        for c in self.constraints:
            r = c(config, profile)
            if r:
                out.append(r)
        return out

    def configs(self, profile: Any = None) -> Iterator[dict]:
        """Every feasible config, in a fixed order."""
        for values in itertools.product(*(p.choices for p in self.params)):
            cfg = dict(zip(self.names, values))
            if not self.reasons(cfg, profile):
                yield cfg

    def size(self, profile: Any = None) -> int:
        return sum(1 for _ in self.configs(profile))

    def extend(self, params: list[Param], constraints: list[Constraint] = ()) -> "Space":
        """This space plus more parameters (e.g. a backend's num_warps)."""
        return Space(self.params + list(params), self.constraints + list(constraints))

    def fix(self, values: dict) -> "Space":
        """This space with the named parameters held at one value each (e.g. the padded head
        size a problem's shape decides), so a search does not spend trials on the others."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise KeyError(f"cannot fix {unknown}: the space has {self.names}")
        return Space([Param(p.name, (values[p.name],), p.doc) if p.name in values else p for p in self.params],
                     list(self.constraints))
