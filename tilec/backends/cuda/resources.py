"""What a kernel will ask of the GPU, predicted from the IR and the plan (no compiler run).

* shared memory: the arena the renderer declares; exact, since both read the same plan (over
  48 KiB it is dynamic shared memory: ptxas does not see it, the launch passes this size).
* registers: an estimate, the most over all ops of
  ``BASE + register tiles live there + the op's own working set``:
  a load keeps a value and a 64-bit address per owned element in flight (3 words each), a store
  an address (2 words), a copy or elementwise op one word per element, a SIMT ``dot`` one column of A and one row of B
  per thread, a WMMA ``dot`` its accumulator fragment plus one A/B fragment pair (its 16-deep
  steps run as a loop). Tiles that are only copied into a loop-carried value are not counted twice
  (the compiler coalesces the copy). ``registers_agree`` states the tolerance the tests hold.
"""
from __future__ import annotations

from ...ir import Function, Op, uses
from ...passes import lower
from .limits import STATIC_SMEM_PER_BLOCK
from .plan import Plan, make_plan

BASE_REGISTERS = 24
REGISTER_FILE = 65536             # 32-bit registers per SM and per block (CPG Table 27)
MAX_REGISTERS_PER_THREAD = 255
SPILL_MARGIN = 0.95               # an estimate this close to the cap is treated as a likely spill
REGISTER_FACTOR = 2.0     # ptxas within [estimate / 2, estimate * 2] ...
REGISTER_SLACK = 24       # ... or within 24 registers of it
WMMA_ACC_REGISTERS = 8    # 16x16 fp32 accumulator over 32 lanes
WMMA_AB_REGISTERS = 8     # a 16x16 f16/bf16 A plus B fragment pair per lane


def _copy_only(fn: Function) -> set[int]:
    """Values read only as loop inits or block yields (they share the carried registers)."""
    total = uses(fn)
    copies: dict[int, int] = {}
    for op in fn.walk():
        if op.kind == "for":
            for v in op.operands[3:]:
                copies[v.id] = copies.get(v.id, 0) + 1
        for b in op.blocks:
            for v in b.yields:
                copies[v.id] = copies.get(v.id, 0) + 1
    return {vid for vid, n in copies.items() if n == total.get(vid)}


def _working_set(op: Op, plan: Plan) -> int:
    """Registers an op needs beyond the tiles that stay live across it."""
    if op.kind == "dot":
        if op.result.id in plan.wmma:
            return WMMA_ACC_REGISTERS + WMMA_AB_REGISTERS  # the 16-deep steps are not unrolled
        lay = plan.layout(op.result.shape)
        return lay.rm + lay.rn + (lay.elems if op.result.id in plan.smem else 0)
    if op.kind == "load" and op.result.shape:
        return 3 * plan.layout(op.result.shape).elems
    if op.kind == "store" and op.operands[-1].shape:
        return 2 * plan.layout(op.operands[-1].shape).elems
    if op.kind in ("for", "if"):
        shapes = {r.shape for r in op.results if r.shape}
        return sum(plan.layout(s).elems for s in shapes)
    if op.results and op.result.shape and op.kind != "reduce":
        return plan.layout(op.result.shape).elems
    return 0


def estimate_resources(fn: Function, options: dict) -> dict:
    fn = lower(fn, "cuda", options)   # the IR the renderer prints
    plan = make_plan(fn, int(options.get("threads", 128)), options.get("mma", "simt"))
    skip = _copy_only(fn)
    live_at: dict[int, int] = {}
    for vid, (start, end, words) in plan.registers.items():
        if vid in skip:
            continue
        for pos in range(start, end + 1):
            live_at[pos] = live_at.get(pos, 0) + words
    peak, peak_live = 0, 0
    for op in fn.walk():
        pos = plan.positions[id(op)]
        if op.results and op.result.id in plan.inline:
            continue
        peak = max(peak, live_at.get(pos, 0) + _working_set(op, plan))
        peak_live = max(peak_live, live_at.get(pos, 0))
    # __launch_bounds__(threads, min_blocks) makes ptxas fit that many blocks in the 64K-register file
    per_thread = REGISTER_FILE // (plan.threads * int(options.get("min_blocks", 1)))
    cap = min(MAX_REGISTERS_PER_THREAD, per_thread // 8 * 8)
    wanted = BASE_REGISTERS + peak
    return {"shared_bytes": plan.arena_bytes,
            "dynamic_shared": plan.arena_bytes > STATIC_SMEM_PER_BLOCK,
            "registers": min(cap, wanted),
            "register_cap": cap,
            "registers_wanted": wanted,     # before the cap: what the cost models compare with a device's
            "may_spill": wanted >= SPILL_MARGIN * cap,
            "register_tiles_words": peak_live,
            "barriers": 1 if plan.smem else 0,
            "threads": plan.threads,
            "smem_buffers": len(plan.smem),
            "wmma_dots": len(plan.wmma)}


def registers_agree(estimate: int, actual: int) -> bool:
    """The stated tolerance: within a factor of two, or within REGISTER_SLACK registers."""
    return abs(estimate - actual) <= REGISTER_SLACK or estimate / REGISTER_FACTOR <= actual <= estimate * REGISTER_FACTOR
