"""What a kernel will ask of the GPU, predicted from the IR and the plan (no compiler run).

* shared memory: the arena the renderer declares; exact, since both read the same plan.
* registers: an estimate: a fixed base for indices, pointers and loop counters, plus the most
  32-bit words of register tiles live at any one op, plus the operands a ``dot`` keeps in
  flight (SIMT: one column of A and one row of B per thread; WMMA: three fragments).
  ``REGISTER_TOLERANCE`` says how far from ptxas it may be; the tests hold it to that.
"""
from __future__ import annotations

from ...ir import Function
from .plan import make_plan

BASE_REGISTERS = 24
# |estimate - ptxas| <= max(REGISTER_SLACK, REGISTER_TOLERANCE * ptxas)
REGISTER_TOLERANCE = 0.5
REGISTER_SLACK = 24
WMMA_FRAGMENT_REGISTERS = 8 + 4 + 4    # fp32 accumulator 16x16 (8/lane) + A and B 16x16 halves (4/lane)


def estimate_resources(fn: Function, options: dict) -> dict:
    plan = make_plan(fn, int(options.get("threads", 128)), options.get("mma", "simt"))
    events: dict[int, int] = {}
    for start, end, words in plan.registers.values():
        events[start] = events.get(start, 0) + words
        events[end + 1] = events.get(end + 1, 0) - words
    live = peak = 0
    for pos in sorted(events):
        live += events[pos]
        peak = max(peak, live)
    dot_extra = 0
    for op in fn.walk():
        if op.kind != "dot":
            continue
        if op.result.id in plan.wmma:
            dot_extra = max(dot_extra, WMMA_FRAGMENT_REGISTERS)
        else:
            lay = plan.layout(op.result.shape)
            dot_extra = max(dot_extra, lay.rm + lay.rn)
    barriers = 1 if plan.smem else 0
    return {"shared_bytes": plan.arena_bytes,
            "registers": BASE_REGISTERS + peak + dot_extra,
            "register_tiles_words": peak,
            "barriers": barriers,
            "threads": plan.threads,
            "smem_buffers": len(plan.smem),
            "wmma_dots": len(plan.wmma)}


def registers_agree(estimate: int, actual: int) -> bool:
    return abs(estimate - actual) <= max(REGISTER_SLACK, REGISTER_TOLERANCE * actual)
