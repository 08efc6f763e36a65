"""Loop-private buffers: tiles made in a loop body whose arrays never outlive the iteration
are allocated once in front of the loop (``private`` on the ``for`` lists them) instead of
every step, for backends whose tiles are heap arrays (Numba). A tile a dot accumulates into in
place (``in_place_acc``) lives as long as that dot's result."""
from __future__ import annotations

from ..ir import Function
from .analysis import branch_results, in_place, inlined, readers, used_up, yielded


def loop_private_buffers(fn: Function, options: dict) -> Function:
    reads, outlive, branch = readers(fn), yielded(fn.body), branch_results(fn)
    skip = inlined(fn) | in_place(fn)
    for loop in fn.walk():
        if loop.kind != "for":
            continue
        private = []
        for op in loop.blocks[0].ops:
            if not op.results or op.kind in ("for", "if") or not op.result.shape:
                continue
            r = op.result
            if r.id not in skip and _dead_by_step_end(r, reads, outlive, branch):
                private.append(r)
        if private:
            loop.attrs["private"] = private
    return fn


def _dead_by_step_end(v, reads, outlive, branch) -> bool:
    if used_up(v, reads, outlive, branch):
        return True
    into = reads.get(v.id, [])
    return bool(into) and v.id not in outlive and all(
        o.kind == "dot" and o.attrs.get("in_place_acc") and o.operands[2] is v and o.operands[0] is not v
        and o.operands[1] is not v and _dead_by_step_end(o.result, reads, outlive, branch) for o in into)
