"""Can a launch run on a target at all? Each problem is one plain sentence; an empty list
means feasible. Space constraints, the analytical model and the tuner all ask here."""
from __future__ import annotations

from .occupancy import occupancy
from .workload import Workload

TENSOR_DTYPES = ("float16", "bfloat16", "tf32", "float8", "int8")
MIN_DOT_DIM = 16                   # tensor-core tile products need every dim >= 16 (Triton tl.dot, WMMA)


def feasible(w: Workload, p) -> list[str]:
    if isinstance(p, str):
        import hw_profiles
        p = hw_profiles.load(p)
    reasons = []
    if p.peak(w.peak_key) is None:
        note = p.notes.get("fpu")
        reasons.append(f"{p.name} cannot compute {w.peak_key} (no peak_flops entry"
                       + (f"; fpu: {note})" if note else ")"))
    # a CPU's L2 is a cache: a larger tile spills to L3 (priced by the model), not infeasible
    if p.kind != "cpu" and w.tile_bytes_local > p.local_memory_bytes:
        reasons.append(f"a program needs {w.tile_bytes_local} bytes of on-chip memory but {p.name} allows "
                       f"{p.local_memory_bytes} per program")
    levels = {m.name.upper(): m for m in p.memory}
    for name, need in w.level_bytes.items():
        m = levels.get(name.upper())
        if m is not None and need > m.capacity_bytes:
            reasons.append(f"{name} tile needs {int(need)} bytes; {p.name} {m.name} holds {m.capacity_bytes}")
    if p.kind == "gpu":
        threads = w.threads_per_program
        if threads and p.max_threads_per_block and threads > p.max_threads_per_block:
            reasons.append(f"{threads} threads per program exceed {p.name}'s {p.max_threads_per_block} per block")
        regs = w.registers_per_thread
        if regs and p.registers_per_thread and regs > p.registers_per_thread:
            reasons.append(f"about {regs} registers per thread needed, {p.name} has {p.registers_per_thread}: "
                           "it would spill")
        if regs and threads and p.registers_per_cu and regs * threads > p.registers_per_cu:
            reasons.append(f"{regs} registers x {threads} threads exceed the {p.registers_per_cu} registers of one SM")
        occ = occupancy(w, p)
        if occ["programs_per_cu"] == 0 and not reasons:
            reasons.append(f"no program fits on one {p.name} SM (limited by {occ['occupancy_limit']})")
        if w.dot_shape and p.matrix_unit and w.peak_key in TENSOR_DTYPES and min(w.dot_shape) < MIN_DOT_DIM:
            reasons.append(f"tile product {w.dot_shape} has a dim below {MIN_DOT_DIM}: tensor cores cannot take it")
    return reasons


def space_constraint(op: str, dtype: str, shape: dict | None = None):
    """A constraint for ``tilec.space.Space``: (config, profile) -> the first reason the
    config cannot run on the profile, or None. Tile resources do not depend on the problem
    size, so a nominal shape (4096 in every dimension) stands in when none is given."""
    from .workload import workload_for

    def check(config: dict, profile) -> str | None:
        if profile is None:
            return None
        size = shape or _NOMINAL.get(op, {})
        reasons = feasible(workload_for(op, size, dtype, config), profile)
        return reasons[0] if reasons else None
    check.__name__ = f"fits_{op}_{dtype}"
    return check


_NOMINAL = {"gemm": {"M": 4096, "N": 4096, "K": 4096}, "gemv": {"M": 4096, "K": 4096},
            "quant_gemv": {"M": 4096, "K": 4096}, "attention": {"N": 4096, "D": 128, "H": 1},
            "decode_attention": {"B": 1, "H": 32, "Hkv": 8, "T": 1, "L": 16384, "D": 128},
            "decode_attention_quantized": {"B": 1, "H": 32, "Hkv": 8, "T": 1, "L": 16384, "D": 128}}
