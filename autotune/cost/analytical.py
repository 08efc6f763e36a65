"""The analytical cost model: runtime, energy and the bounding resource of one launch on one
hardware profile, from first principles and the profile's figures.

Runtime
  - occupancy: programs resident per compute unit, limited by threads, registers, on-chip
    memory and the per-unit program limit (GPUs); one program per core elsewhere;
  - waves: programs / (units x resident programs), the last wave possibly partial;
  - compute: flops (padded edge tiles included) / (peak of the compute dtype x utilisation),
    utilisation falling when too few warps are resident to hide latency;
  - memory: a roofline term per level: DRAM moves the compulsory bytes when the footprint fits
    the last on-chip cache, else the tile re-reads divided by the reuse that programs of one
    wave get from that cache (``dram_reuse``); the shared cache carries all re-reads; the
    per-unit level carries the tile traffic, scaled to the units in use;
  - overlap: with pipelining (stages >= 2) or several resident programs, terms overlap (max);
    otherwise part of the smaller terms is exposed;
  - pipelining (GPU/NPU): each main-loop step pays a fixed overhead and the memory latency
    that the stages in flight and the other resident programs do not cover.
Energy
  static (idle) power x time + energy per flop (per dtype) + energy per byte at each level;
  average power above TDP stretches the runtime to the TDP (power capping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .feasibility import feasible
from .workload import Workload

LAUNCH_OVERHEAD_S = {"gpu": 4e-6, "cpu": 20e-6, "npu": 10e-6, "mcu": 50e-6}   # [E] kernel launch / prange dispatch
DEFAULT_THREADS = 128              # GPU threads per program when a workload does not say (4 warps)
DEFAULT_REGISTERS = 64             # GPU registers per thread when unknown
WARPS_TO_HIDE_LATENCY = 8          # resident warps per SM for full issue rate [E], ~2 per scheduler
PARTIAL_OVERLAP = 0.5              # share of the smaller terms hidden without pipelining
# a pipelined main loop (GPU/NPU): each step pays a fixed cost (barrier, address math) and
# whatever memory latency the tiles in flight do not cover
STEP_OVERHEAD_CYCLES = 40          # [E]
MEMORY_LATENCY_CYCLES = {"gpu": 600, "npu": 600}    # [E] DRAM/L2 load-to-use latency


@dataclass
class Prediction:
    runtime_s: float
    energy_j: float
    bound: str                       # "compute", a memory level name, or "launch"
    feasible: bool
    reasons: list[str]
    features: dict = field(default_factory=dict)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.runtime_s if self.runtime_s > 0 else 0.0


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


def dram_reuse(w: Workload, p, slots: int) -> float:
    """How many times the last on-chip cache lets concurrent programs share a tile re-read.

    Programs running together (one wave) touch neighbouring tiles: about sqrt(slots) of them
    share each operand panel when their panels fit the cache (a heuristic, not a cache model).
    """
    shared = [m for m in p.memory if m.scope == "shared"]
    if not shared:
        return 1.0
    cache = max(m.capacity_bytes for m in shared)
    share = math.sqrt(max(1, min(slots, w.programs)))
    panel = w.tile_bytes_local / max(1, w.pipeline_stages) * max(1, w.inner_iterations)
    working_set = share * panel
    if working_set <= cache:
        return share
    return 1.0 + (share - 1.0) * cache / working_set


def _level_traffic(w: Workload, p, slots: int) -> dict[str, float]:
    """Bytes through each memory level of the profile."""
    reread = float(w.traffic.get("dram", w.bytes))
    shared = [m for m in p.memory if m.scope == "shared"]
    last_cache = max((m.capacity_bytes for m in shared), default=0)
    out = {}
    for m in p.memory:
        if m.scope == "dram":
            out[m.name] = float(w.bytes) if w.bytes <= last_cache else max(float(w.bytes), reread / dram_reuse(w, p, slots))
        elif m.scope == "shared":
            out[m.name] = reread
        elif m.scope == "cu" and "local" in w.traffic and m.name.upper() in ("SMEM", "L1", "UB"):
            out[m.name] = float(w.traffic["local"])
    return out


def pipeline_time(w: Workload, p, ppc: int, waves: int, flop_rate: float) -> float:
    """Serial cost of the main loop that the throughput terms miss: per step a fixed overhead,
    plus the memory latency not covered by the compute of the other stages in flight and of
    the other resident programs."""
    latency = MEMORY_LATENCY_CYCLES.get(p.kind)
    if latency is None or w.inner_iterations <= 1:
        return 0.0
    per_cu_flops_per_cycle = flop_rate / (p.compute_units * p.clock_hz)
    step_flops = w.flops / max(w.work_efficiency, 1e-9) / max(1, w.programs) / w.inner_iterations
    step_cycles = step_flops * ppc / per_cu_flops_per_cycle            # resident programs share the unit
    cover = (max(1, w.pipeline_stages) - 1 + (ppc - 1)) * step_cycles
    exposed = max(0.0, latency - cover)
    return waves * w.inner_iterations * (STEP_OVERHEAD_CYCLES + exposed) / p.clock_hz


def predict(w: Workload, p) -> Prediction:
    """Runtime, energy, bound and feasibility of ``w`` on profile ``p`` (a Profile or a name)."""
    if isinstance(p, str):
        import hw_profiles
        p = hw_profiles.load(p)
    reasons = feasible(w, p)
    occ = occupancy(w, p)
    ppc = max(1, occ["programs_per_cu"])
    slots = p.compute_units * ppc
    programs = max(1, w.programs)
    waves = math.ceil(programs / slots)
    wave_eff = programs / (waves * slots)
    active_units = min(p.compute_units, programs)

    peak = p.peak(w.peak_key)
    if peak is None:
        peak = min(p.peak_flops.values())          # infeasible anyway; keeps the numbers finite
    if p.kind == "gpu":
        issue = min(1.0, occ["warps_per_cu"] / WARPS_TO_HIDE_LATENCY)
    else:
        issue = 1.0
    padded_flops = w.flops / max(w.work_efficiency, 1e-9)
    t_compute = padded_flops / (peak * issue * wave_eff) if w.flops else 0.0

    traffic = _level_traffic(w, p, slots)
    terms = {"compute": t_compute}
    for m in p.memory:
        if m.name not in traffic:
            continue
        bw = m.bandwidth_bytes_per_s
        if m.scope == "cu":
            bw *= active_units / p.compute_units
        terms[m.name] = traffic[m.name] / bw
    bound = max(terms, key=terms.get)
    t_max = terms[bound]
    hidden = 1.0 if (w.pipeline_stages >= 2 or ppc >= 2) else PARTIAL_OVERLAP
    t_body = t_max + (1.0 - hidden) * (sum(terms.values()) - t_max)
    t_steps = pipeline_time(w, p, ppc, waves, peak * issue)
    t_body += t_steps
    launch = LAUNCH_OVERHEAD_S.get(p.kind, 1e-5)
    runtime = t_body + launch
    if launch > t_body:
        bound = "launch"

    dyn_flop = p.flop_energy(w.peak_key) * padded_flops
    dyn_mem = sum(traffic[m.name] * m.energy_j_per_byte for m in p.memory if m.name in traffic)
    dynamic = dyn_flop + dyn_mem
    capped = False
    if dynamic / runtime > p.tdp_w - p.idle_power_w > 0:
        runtime = dynamic / (p.tdp_w - p.idle_power_w)
        capped = True
    energy = p.idle_power_w * runtime + dynamic

    dram = p.dram
    t_roof = max(w.flops / (p.peak(w.peak_key) or peak), w.bytes / dram.bandwidth_bytes_per_s, 1e-12)
    features = {
        "log_flops": math.log10(max(w.flops, 1.0)), "log_bytes": math.log10(max(w.bytes, 1.0)),
        "intensity": w.flops / max(w.bytes, 1.0), "log_programs": math.log10(programs),
        "programs_per_cu": ppc, "warps_per_cu": occ["warps_per_cu"], "issue_efficiency": issue,
        "waves": waves, "wave_efficiency": wave_eff, "work_efficiency": w.work_efficiency,
        "tile_fraction_local": w.tile_bytes_local / p.local_memory_bytes,
        "log_tile_bytes": math.log10(max(w.tile_bytes_local, 1)), "inner_iterations": w.inner_iterations,
        "log_steps": math.log10(programs * max(1, w.inner_iterations)),   # serial loop trips in all
        # per-step and tile-copy costs relative to the roofline: what tiles cost beyond the math
        "step_share": math.log10(programs * max(1, w.inner_iterations) / p.clock_hz / max(t_roof, 1e-12)),
        "local_traffic_ratio": float(w.traffic.get("local", 0.0)) / max(w.bytes, 1.0),
        "threads": occ["threads"], "registers": occ["registers"], "pipeline_stages": w.pipeline_stages,
        "reread_factor": float(w.traffic.get("dram", w.bytes)) / max(w.bytes, 1.0),
        "t_roofline": t_roof, "t_compute": t_compute, "t_model": runtime,
        "model_over_roofline": runtime / t_roof if t_roof > 0 else 1.0,
        "power_capped": float(capped), "feasible": float(not reasons), "t_pipeline": t_steps,
    }
    for m in p.memory:
        if m.scope == "cu":                      # how much of each private on-chip level a tile takes
            features[f"fit_{m.name}"] = w.tile_bytes_local / m.capacity_bytes
    for name, t in terms.items():
        features[f"t_{name}"] = t
        features[f"share_{name}"] = t / t_max if t_max > 0 else 0.0
    return Prediction(runtime, energy, bound, not reasons, reasons, features)
