"""A copy of a function's IR with fresh ops and values (same ids, hints and types), so a
backend's lowering can annotate or rewrite it while the kernel's cached IR stays as built.
Iterative over blocks, not ``copy.deepcopy``: a long chain of values would recurse deeply."""
from __future__ import annotations

from ..ir import Block, Function, Op, Value


def clone(fn: Function) -> Function:
    values: dict[int, Value] = {}

    def new(v: Value) -> Value:
        if v.id not in values:
            values[v.id] = Value(v.type, v.hint, None, v.id)
        return values[v.id]

    def block(b: Block) -> Block:
        out = Block([new(a) for a in b.args])
        for op in b.ops:
            copy = Op(op.kind, [new(v) for v in op.operands], [new(r) for r in op.results], dict(op.attrs),
                      [block(child) for child in op.blocks], op.loc)
            for r in copy.results:
                r.producer = copy
            out.ops.append(copy)
        out.yields = [new(v) for v in b.yields]
        return out

    params = [new(p) for p in fn.params]
    return Function(fn.name, params, block(fn.body), dict(fn.constexprs), fn.grid_rank, fn.source_file)
