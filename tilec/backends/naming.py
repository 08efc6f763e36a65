"""Readable, unique names for IR values in generated source (shared by every renderer)."""
from __future__ import annotations

import keyword
import re

from ..ir import Value


class Namer:
    def __init__(self, reserved: set[str] = frozenset()):
        self.names: dict[int, str] = {}
        self.taken: set[str] = set(reserved)

    def fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint or "t").strip("_") or "t"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = "v_" + base
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name

    def __call__(self, v: Value) -> str:
        if v.id not in self.names:
            self.names[v.id] = self.fresh(v.hint)
        return self.names[v.id]

    def alias(self, v: Value, name: str) -> None:
        self.names[v.id] = name
