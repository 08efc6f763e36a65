"""A small TOML writer for profile documents (the standard library only reads TOML):
top-level scalars and arrays, tables of scalars, and arrays of tables."""
from __future__ import annotations

import math
from typing import Any


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v}")
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_ESCAPES.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                             for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _value(k)


def dumps(doc: dict, header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    tables, arrays = {}, {}
    for k, v in doc.items():
        if isinstance(v, dict):
            tables[k] = v
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays[k] = v
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, t in tables.items():
        lines += ["", f"[{_key(k)}]"] + [f"{_key(a)} = {_value(b)}" for a, b in t.items()]
    for k, rows in arrays.items():
        for row in rows:
            lines += ["", f"[[{_key(k)}]]"] + [f"{_key(a)} = {_value(b)}" for a, b in row.items()]
    return "\n".join(lines) + "\n"
