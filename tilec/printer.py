"""Text form of the tile IR, for `tilec show` and error messages."""
from __future__ import annotations

from .ir import Block, Function, Op


def format_function(fn: Function) -> str:
    params = ", ".join(f"{p!r}: {p.type}" for p in fn.params)
    consts = ", ".join(f"{k}={v}" for k, v in fn.constexprs.items())
    lines = [f"func {fn.name}({params})" + (f"  [{consts}]" if consts else "") + " {"]
    _block(fn.body, lines, 1)
    lines.append("}")
    return "\n".join(lines)


def _attrs(op: Op) -> str:
    if not op.attrs:
        return ""
    return " {" + ", ".join(f"{k}={v}" for k, v in op.attrs.items()) + "}"


def _block(block: Block, lines: list[str], depth: int) -> None:
    pad = "  " * depth
    for op in block.ops:
        lhs = ", ".join(f"{r!r}: {r.type}" for r in op.results)
        rhs = f"{op.kind} " + ", ".join(map(repr, op.operands)) + _attrs(op)
        lines.append(f"{pad}{lhs + ' = ' if lhs else ''}{rhs.rstrip()}")
        for i, child in enumerate(op.blocks):
            args = ", ".join(f"{a!r}: {a.type}" for a in child.args)
            label = {"for": "body", "if": ("then", "else")[min(i, 1)]}.get(op.kind, f"block{i}")
            lines.append(f"{pad}  {label}({args}):")
            _block(child, lines, depth + 2)
            if child.yields:
                lines.append(f"{pad}    yield " + ", ".join(map(repr, child.yields)))
