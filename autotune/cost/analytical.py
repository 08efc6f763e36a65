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
GPU kernel descriptions (kernel.py: warp layout, split-K, dtypes, layouts, instruction shape,
per-thread register tiles) reshape the workload first; then
  - register spills: registers needed beyond the per-thread limit live in local memory;
    occupancy counts the limit, and every update of a spilled value is a load and a store
    that hit L1 while the spilled working set of the resident threads fits, else L2, else
    DRAM (a spill penalty, never "infinitely slow");
  - Little's law: traffic beyond the SM moves at most (resident warps x loads each has in
    flight x 128 B) per latency, so few warps with few independent loads cannot fill the
    bandwidth;
  - SIMT kernels with a register tile per thread: compute time is the issued instructions
    (multiply-adds, operand loads, loop overhead) over the schedulers' issue rate, or the
    multiply-adds over the FP32 lanes, whichever is slower.
CPU (the Numba backend: programs run as loop nests on the cores, tile products as BLAS calls)
  - fixed costs measured on the development host (a 2-vCPU AVX-512 VM, single-thread CPU time):
    a launch (Python dispatch and argument checks, ~20 us; with a thread pool ~15 us more),
    each program (~0.1 us: accumulator, stores), each loop step (~50 ns: tile views, bounds),
    each BLAS call (~0.2 us) plus the packing of its operands (~17 GB/s per core) and its
    result tile read and written at the core's L2 bandwidth (BK=16 GEMM tiles measure 5-19%
    slower than BK=256 at 512^3, whatever the tile);
  - BLAS products run at a share of the core's peak; the kernel's own loops at a smaller
    share, and what does not fill the compiler's vector body (4 registers: 64 fp32 lanes with
    AVX-512) runs scalar, so a 32-wide loop is ~12x slower per element than a 64-wide one;
  - partial (edge) tiles are copied through masks instead of read in place; table lookups
    are one permute per register when the table fills exactly one register, else scalar;
    the loops that build lookup tables run along the table's entries (16 for LUT-GEMM's MU=4:
    one register, below the vector body, so scalar), not along the program's strip;
  - all of this is divided over the threads in use (one with ``parallel=False``), the last
    round of programs possibly partial; memory beyond the private caches (the shared cache
    and DRAM, compulsory traffic from DRAM as on the GPUs) overlaps with it as roofline terms.
Energy
  static (idle) power x time + energy per flop (per dtype) + energy per byte at each level;
  average power above TDP stretches the runtime to the TDP (power capping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .feasibility import feasible
from .kernel import KernelDesc, describe
from .kernel import apply as apply_kernel
from .occupancy import DEFAULT_REGISTERS, DEFAULT_THREADS, occupancy  # noqa: F401 (re-exported)
from .workload import Workload

LAUNCH_OVERHEAD_S = {"gpu": 4e-6, "cpu": 20e-6, "npu": 10e-6, "mcu": 50e-6}   # [E] kernel launch / prange dispatch
WARPS_TO_HIDE_LATENCY = 8          # resident warps per SM for full issue rate [E], ~2 per scheduler
PARTIAL_OVERLAP = 0.5              # share of the smaller terms hidden without pipelining
# a pipelined main loop (GPU/NPU): each step pays a fixed cost (barrier, address math) and
# whatever memory latency the tiles in flight do not cover
STEP_OVERHEAD_CYCLES = 40          # [E]
MEMORY_LATENCY_CYCLES = {"gpu": 600, "npu": 600}    # [E] DRAM/L2 load-to-use latency
L2_LATENCY_CYCLES = 250            # [E] an L2 hit (Kepler..Ampere: ~200-300 cycles)
MAX_LOADS_IN_FLIGHT = 8            # [E] independent loads one warp keeps outstanding
LINE_BYTES = 128                   # [V] one warp's coalesced 32 x 4-byte access
ISSUE_PER_CLOCK = 4                # [V] warp schedulers per SM (Kepler through Hopper), one instruction each
LOOP_INSTRUCTIONS = 4              # [E] per loop trip: counter, compare, branch, address step
SPILL_L1_BYTES = 16384             # [E] L1 left beside 48 KB of shared memory, when a profile has no L1 level
# CPU loop nests (Numba backend); [M] figures from microbenchmarks of ops.plain.gemm on the
# development host (thread CPU time, 1x1x1 and 4..128-wide tiles), not from the cost-model records
CPU_LAUNCH_S = 20e-6               # [M] one launch, one thread (17.8-26 us)
CPU_POOL_LAUNCH_S = 15e-6          # [M] more when the programs are handed to a thread pool (~35 us)
CPU_PROGRAM_CYCLES = 250           # [M] per program (75-133 ns at 2.6 GHz)
CPU_STEP_CYCLES = 150              # [M] per tile-loop step (40-100 ns)
CPU_CALL_CYCLES = 500              # [M] per BLAS call (0.16-0.2 us)
CPU_PACK_BYTES_PER_CYCLE = 6.5     # [M] BLAS operand packing (~0.23 ns per fp32 element)
CPU_BLAS_EFFICIENCY = 0.65         # [M] single-core sgemm on 128-wide tiles: ~110 of 166 GFLOP/s
CPU_LOOP_EFFICIENCY = 0.3          # [M] loop-nest products (64+ wide): ~45 of 166 GFLOP/s
CPU_INTERLEAVE = 4                 # [M] LLVM's vector body: 4 registers per trip (64 fp32 on AVX-512)
CPU_SCALAR_PENALTY = 0.75          # [M] a scalar element costs lanes x this many vector ones (3.8 vs 45 GFLOP/s)
CPU_LOOKUP_CYCLES = 1.0            # [M] a scalar lookup (LUT-GEMM, 2- and 256-entry tables: 0.37-0.53 ns)
# [M] one register of lookups from a table held in a register (vpermps, index widening, add):
# tilec.backends.numba.support, one 32-table x 512-column lookup_sum in 0.8 us = 1024 registers
CPU_VECTOR_LOOKUP_CYCLES = 2.0
CPU_EDGE_CYCLES_PER_ELEMENT = 1.0  # [E] masked copy of an edge tile, element by element


@dataclass
class Prediction:
    runtime_s: float
    energy_j: float
    bound: str                       # "compute", a memory level name, "latency" (GPU: too little in flight) or "launch"
    feasible: bool
    reasons: list[str]
    features: dict = field(default_factory=dict)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.runtime_s if self.runtime_s > 0 else 0.0


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
            out[m.name] = float(w.traffic.get(m.name, reread))     # a builder may count it exactly
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


def simd_lanes(p) -> int:
    """fp32 lanes per vector register, from the profile's peak (cores x clock x lanes x 2 FMA units x 2)."""
    peak = p.peak("float32") or min(p.peak_flops.values())
    return 2 ** max(0, round(math.log2(max(1.0, peak / (max(1, p.compute_units) * p.clock_hz * 4)))))


def vector_efficiency(length: int, p) -> float:
    """Share of the vector rate a loop of ``length`` contiguous elements reaches: the compiler's
    vector body takes CPU_INTERLEAVE registers per trip, and what does not fill one (a loop
    shorter than that, or the remainder) runs scalar."""
    if not length:
        return 1.0
    lanes = simd_lanes(p)
    body = CPU_INTERLEAVE * lanes
    vector = length - length % body
    return length / (vector + (length - vector) * lanes * CPU_SCALAR_PENALTY)


def private_bandwidth(p) -> float:
    """One core's bandwidth to its largest private cache (L2 here), where a BLAS call's
    result tile is read and written once per call."""
    private = [m for m in p.memory if m.scope == "cu"]
    if not private:
        return p.dram.bandwidth_bytes_per_s / max(1, p.compute_units)
    return max(private, key=lambda m: m.capacity_bytes).bandwidth_bytes_per_s / max(1, p.compute_units)


def lookup_time(w: Workload, p) -> float:
    """Table lookups: a table of one register's lanes (16 fp32 with AVX-512) stays in that
    register and one permute does a register of lookups, one vector-helper call per row;
    any other table is read one lookup at a time."""
    if not w.lookups:
        return 0.0
    lanes = simd_lanes(p)
    if w.table_entries == lanes:
        cycles = w.lookups / lanes * CPU_VECTOR_LOOKUP_CYCLES + w.lookup_rows * CPU_CALL_CYCLES
    else:
        cycles = w.lookups * CPU_LOOKUP_CYCLES
    return cycles / p.clock_hz


CPU_SPECIAL_OPS = 10               # [E] a vectorized exp/log costs about this many multiply-adds


def _loop_ops(w: Workload, p, vec: float) -> float:
    """Loop operations weighted by how well each vectorizes: by the extent it runs along when
    the workload says (``loop_lengths``), else all at ``vector_length``; special functions
    count CPU_SPECIAL_OPS each, spread over the loops in proportion."""
    extra = (CPU_SPECIAL_OPS - 1) * w.special
    if w.loop_lengths:
        share = extra / max(1.0, w.loop_ops)
        return sum(n * (1 + share) / vector_efficiency(int(length), p) for length, n in w.loop_lengths.items())
    return (w.loop_ops + extra) / vec


def cpu_time(w: Workload, p) -> dict:
    """The CPU loop-nest costs of one launch (seconds, all threads together)."""
    threads = 1 if w.config.get("parallel", True) is False else max(1, p.compute_units)
    programs = max(1, w.programs)
    used = min(threads, programs)
    # programs are handed out in runs; the last round may leave threads idle
    balance = programs / (math.ceil(programs / used) * used)
    hz = p.clock_hz
    core_peak = (p.peak(w.peak_key) or min(p.peak_flops.values())) / max(1, p.compute_units)
    steps = programs * max(1, w.inner_iterations)
    vec = vector_efficiency(w.vector_length, p)
    blas_flops = w.library_calls * w.call_flops
    parts = {
        "launch": CPU_LAUNCH_S + (CPU_POOL_LAUNCH_S if used > 1 else 0.0),
        "programs": programs * CPU_PROGRAM_CYCLES / hz,
        "steps": steps * CPU_STEP_CYCLES / hz,
        "calls": w.library_calls * ((CPU_CALL_CYCLES + w.call_bytes / CPU_PACK_BYTES_PER_CYCLE) / hz
                                    + w.call_out_bytes / private_bandwidth(p)),
        "blas": blas_flops / (core_peak * CPU_BLAS_EFFICIENCY),
        # a loop-nest operation is one multiply-add: 2 flops at the peak rate
        "loops": 2.0 * _loop_ops(w, p, vec) / (core_peak * CPU_LOOP_EFFICIENCY),
        # lookup tables are built in loops over their entries, whatever the strip width
        "tables": 2.0 * w.table_ops / (core_peak * CPU_LOOP_EFFICIENCY * vector_efficiency(w.table_entries, p)),
        "edges": w.edge_elements * CPU_EDGE_CYCLES_PER_ELEMENT / hz,
        "lookups": lookup_time(w, p),
    }
    work = sum(v for k, v in parts.items() if k != "launch")
    return {"threads": used, "balance": balance, "parts": parts,
            "t_core": work / (used * balance), "t_launch": parts["launch"]}


def spill_traffic(w: Workload, p, k: KernelDesc, spilled: int, resident_threads: int) -> dict[str, float]:
    """Bytes the spilled registers move through L1, L2 and DRAM: each update of a spilled value
    (an accumulator, once per multiply-add sweep over the register tile) loads and stores it;
    what the resident threads' spilled working set does not fit in a level goes one further."""
    if not spilled or not w.flops:
        return {}
    tile = (k.thread_tile[0] * k.thread_tile[1]) if k.thread_tile else max(1, w.registers_per_thread or 1)
    threads = max(1, w.programs) * (w.threads_per_program or DEFAULT_THREADS)
    sweeps = w.flops / (2.0 * threads * tile)
    total = 2.0 * 4 * spilled * sweeps * threads
    l1 = max((m.capacity_bytes for m in p.memory if m.scope == "cu" and m.name.upper() == "L1"), default=SPILL_L1_BYTES)
    l2 = max((m.capacity_bytes for m in p.memory if m.scope == "shared"), default=0)
    per_cu = 4.0 * spilled * max(1, resident_threads)
    beyond_l1 = total * (1.0 - min(1.0, l1 / per_cu))
    to_dram = beyond_l1 * (1.0 - min(1.0, l2 / (per_cu * p.compute_units)))
    return {"l1": total - beyond_l1, "l2": beyond_l1, "dram": to_dram}


def simt_compute_time(w: Workload, p, k: KernelDesc) -> float:
    """Issue-bound time of a kernel with a per-thread register tile (all units busy)."""
    tm, tn = k.thread_tile
    warp = p.warp_size or 32
    threads = max(1, w.programs) * (w.threads_per_program or DEFAULT_THREADS)
    steps = w.flops / max(w.work_efficiency, 1e-9) / (2.0 * threads * tm * tn)
    lanes = (p.peak("float32") or min(p.peak_flops.values())) / (2.0 * p.compute_units * p.clock_hz)
    fma = tm * tn * warp / lanes
    issue = (tm * tn + k.loads_per_step + LOOP_INSTRUCTIONS / max(1, k.unroll)) / ISSUE_PER_CLOCK
    return threads / warp * steps * max(fma, issue) / (p.compute_units * p.clock_hz)


def predict(w: Workload, p, kernel: KernelDesc | None = None) -> Prediction:
    """Runtime, energy, bound and feasibility of ``w`` on profile ``p`` (a Profile or a name).
    ``kernel``: the kernel's description (default: from the workload's op and config)."""
    if isinstance(p, str):
        import hw_profiles
        p = hw_profiles.load(p)
    if kernel is None:
        kernel = describe(w.op, w.shape, w.dtype, w.config)
    if p.kind == "gpu":
        w = apply_kernel(w, kernel)
    reasons = feasible(w, p)
    spilled = 0
    if p.kind == "gpu" and w.registers_per_thread and p.registers_per_thread:
        spilled = max(0, w.registers_per_thread - p.registers_per_thread)
    occ = occupancy(replace(w, registers_per_thread=p.registers_per_thread) if spilled else w, p)
    ppc = max(1, occ["programs_per_cu"])
    slots = p.compute_units * ppc
    programs = max(1, w.programs)
    waves = math.ceil(programs / slots)
    wave_eff = programs / (waves * slots)
    if p.kind == "gpu" and kernel.stream_k and programs > slots:
        wave_eff = 1.0                  # stream-K hands out K shares evenly: no partial last wave
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
    simt = p.kind == "gpu" and kernel.thread_tile is not None and w.flops > 0
    if simt:
        t_compute = simt_compute_time(w, p, kernel) / wave_eff
        issue = 1.0

    traffic = _level_traffic(w, p, slots)
    spill = spill_traffic(w, p, kernel, spilled, ppc * occ["threads"]) if p.kind == "gpu" else {}
    if spill:
        cu_levels = [m for m in p.memory if m.scope == "cu"]
        for m, part in ((next((m for m in cu_levels if m.name.upper() == "L1"), cu_levels[0] if cu_levels else None), "l1"),
                        (next((m for m in p.memory if m.scope == "shared"), None), "l2"),
                        (p.dram, "dram")):
            if m is not None:
                traffic[m.name] = traffic.get(m.name, 0.0) + spill[part]
    terms = {"compute": t_compute}
    for m in p.memory:
        if m.name not in traffic:
            continue
        bw = m.bandwidth_bytes_per_s
        if m.scope == "cu":
            bw *= active_units / p.compute_units
        terms[m.name] = traffic[m.name] / bw
    if p.kind == "gpu" and (spill or kernel.loads_in_flight):
        # Little's law: what the resident warps keep in flight bounds the off-SM traffic
        def rate(loads, latency):
            return (occ["warps_per_cu"] * min(loads, MAX_LOADS_IN_FLIGHT) * LINE_BYTES
                    * p.compute_units * p.clock_hz / latency)
        t_lat = 0.0
        if spill:
            t_lat += spill["l2"] / rate(spilled, MEMORY_LATENCY_CYCLES.get(p.kind, 600))
        shared = next((m.name for m in p.memory if m.scope == "shared"), None)
        if kernel.loads_in_flight and shared in traffic:
            t_lat += (traffic[shared] - spill.get("l2", 0.0)) / rate(kernel.loads_in_flight, L2_LATENCY_CYCLES)
        terms["latency"] = t_lat
    bound = max(terms, key=terms.get)
    t_max = terms[bound]
    hidden = 1.0 if (w.pipeline_stages >= 2 or ppc >= 2) else PARTIAL_OVERLAP
    t_body = t_max + (1.0 - hidden) * (sum(terms.values()) - t_max)
    t_steps = pipeline_time(w, p, ppc, waves, padded_flops / max(t_compute * wave_eff, 1e-30) if simt else peak * issue)
    t_body += t_steps
    launch = LAUNCH_OVERHEAD_S.get(p.kind, 1e-5)
    cpu = None
    if p.kind == "cpu" and (w.loop_ops or w.library_calls or w.lookups or w.table_ops):
        # loop nests on the cores: their own costs replace the compute and per-core terms;
        # memory beyond the private caches still overlaps (the larger one shows)
        cpu = cpu_time(w, p)
        launch = cpu["t_launch"]
        outer = {k: v for k, v in terms.items() if k != "compute" and
                 any(m.name == k and m.scope != "cu" for m in p.memory)}
        terms = {"compute": cpu["t_core"], **outer}
        bound = max(terms, key=terms.get)
        t_max = terms[bound]
        t_body = t_max + PARTIAL_OVERLAP * (sum(terms.values()) - t_max)
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
    if cpu is not None:
        # what the CPU loop nests spend, each relative to the whole prediction, and their counts
        for name, t in cpu["parts"].items():
            features[f"cpu_share_{name}"] = t / runtime
        features.update({
            "cpu_threads": cpu["threads"], "cpu_balance": cpu["balance"],
            "log_library_calls": math.log10(1.0 + w.library_calls), "log_call_flops": math.log10(1.0 + w.call_flops),
            "log_loop_ops": math.log10(1.0 + w.loop_ops), "log_vector_length": math.log2(max(1, w.vector_length)),
            "edge_fraction": w.edge_steps / max(1.0, programs * max(1, w.inner_iterations)),
            "log_steps_per_program": math.log10(max(1, w.inner_iterations)),
        })
    for name, t in terms.items():
        features[f"t_{name}"] = t
        features[f"share_{name}"] = t / t_max if t_max > 0 else 0.0
    return Prediction(runtime, energy, bound, not reasons, reasons, features)
