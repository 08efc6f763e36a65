"""How many programs of a workload one compute unit holds at once, and what limits them
(threads, registers, local memory): read by the feasibility check and the analytical model."""
from __future__ import annotations

import math

from .workload import Workload

DEFAULT_THREADS = 128              # GPU threads per program when a workload does not say (4 warps)
DEFAULT_REGISTERS = 64             # GPU registers per thread when unknown


def occupancy(w: Workload, p) -> dict:
    """Programs resident per compute unit and what limits them."""
    if p.kind != "gpu":
        return {"programs_per_cu": 1, "occupancy_limit": "one program per core", "warps_per_cu": 1,
                "threads": 1, "registers": 0}
    threads = w.threads_per_program or DEFAULT_THREADS
    regs = w.registers_per_thread or DEFAULT_REGISTERS
    limits = {"programs": p.max_programs_per_cu or 32}
    if p.max_threads_per_cu:
        limits["threads"] = p.max_threads_per_cu // threads
    if p.registers_per_cu:
        limits["registers"] = p.registers_per_cu // max(1, regs * threads)
    per_cu_mem = p.local_memory_per_cu_bytes or p.local_memory_bytes
    if w.tile_bytes_local > 0:
        limits["local memory"] = per_cu_mem // (w.tile_bytes_local + 1024)   # 1 KB reserved per block (CPG)
    name, n = min(limits.items(), key=lambda kv: kv[1])
    n = max(0, n)
    warp = p.warp_size or 32
    # an unlaunchable program (n == 0) is reported by feasible(); time it as if one fit
    return {"programs_per_cu": n, "occupancy_limit": name, "warps_per_cu": max(1, n) * math.ceil(threads / warp),
            "threads": threads, "registers": regs}
