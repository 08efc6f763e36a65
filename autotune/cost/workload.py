"""What a cost model needs to know about one launch: a ``Workload``.

``workload_for(op, shape, dtype, config)`` counts it from the IR of the launched kernel
(``launches.launch`` -> ``tilec.workload.count``), so a change to a kernel changes its
workload; counts are cached per (op, shape, dtype, config, backend). Records of kernels tilec
does not have (datasets of other tuners) carry their own description instead: a record's
``workload`` field, read by ``from_description``. Fields:

- ``flops``: useful arithmetic work of the whole launch (2 per multiply-add, inside the tensors).
- ``bytes``: minimal main-memory traffic (each tensor the launch touches read or written once).
- ``traffic``: {memory level: bytes}: "dram", what the tiles ask for inside the tensors (re-reads
  included); "local", whole tile boxes through on-chip memory.
- ``grid``: programs launched; ``tile_bytes_local``: on-chip bytes one program keeps live (the
  tiles it loads and the tiles its loops carry; on GPUs the tiles loaded in loops, once per
  pipeline stage); ``level_bytes``: per-level needs (e.g. {"L0A": ..., "L0C": ...} on an NPU),
  from the largest dot's operand and accumulator tiles.
- ``threads_per_program`` / ``registers_per_thread``: GPU launch resources: threads from the
  config, registers estimated from the IR (``triton_registers``; for the CUDA backend
  ``tilec.backends.cuda.resources``) or an offline compile's figure (``compiled_resources``),
  or measured (``resources.apply``).
- ``compute_dtype``: the key into the profile's ``peak_flops``: the dots' operand type.
- ``pipeline_stages``: tiles in flight per program (software pipelining / double buffering).
- ``inner_iterations``: loop trips per program; ``work_efficiency``: useful over computed work
  (edge tiles compute padding); ``dot_shape``: (m, n, k) of the tile products, if any.
- CPU loop nests (the Numba backend; the analytical CPU model reads these): ``library_calls``,
  the BLAS calls of a launch (fp32 tile products with ``dot=blas``), ``call_flops``,
  ``call_bytes`` (operands) and ``call_out_bytes`` (the result read and written) of one such
  call; ``loop_ops``, element operations in the kernel's own loops (fills, conversions, dots
  without BLAS as multiply-adds), by the contiguous extent each runs along in
  ``loop_lengths`` ({extent: ops}; ``vector_length`` the extent with the most);
  ``special``, special-function evaluations among them; ``edge_steps``, the (program, loop
  step) pairs that access a tile reaching outside a tensor (read through a masked copy), and
  ``edge_elements``, the elements of those tiles;
  ``lookups`` from a table of ``table_entries``, in ``lookup_rows`` rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from tilec.errors import TilecError


@dataclass(frozen=True)
class Workload:
    op: str
    shape: dict
    dtype: str
    config: dict
    flops: float
    bytes: float
    grid: tuple[int, ...]
    tile_bytes_local: int
    threads_per_program: int | None = None
    registers_per_thread: int | None = None
    compute_dtype: str | None = None
    traffic: dict = field(default_factory=dict)
    level_bytes: dict = field(default_factory=dict)
    pipeline_stages: int = 1
    inner_iterations: int = 1            # sequential steps per program (K loop trips), for pipelining
    work_efficiency: float = 1.0         # useful / computed work (edge tiles compute padding)
    dot_shape: tuple[int, int, int] | None = None   # (m, n, k) of the tile products, if any
    library_calls: float = 0.0           # BLAS calls per launch (CPU, dot=blas)
    call_flops: float = 0.0              # flops of one such call
    call_bytes: float = 0.0              # operand bytes of one such call
    call_out_bytes: float = 0.0          # result bytes one such call reads and writes (C += A @ B)
    loop_ops: float = 0.0                # element operations in the kernel's own loops
    vector_length: int = 0               # contiguous extent those loops run along
    edge_steps: float = 0.0              # (program, step) pairs touching a partial tile
    edge_elements: float = 0.0           # elements copied through masked loads at those steps
    lookups: float = 0.0                 # table lookups (gathers from a small table) per launch
    table_entries: int = 0               # entries of that table
    lookup_rows: float = 0.0             # rows of lookups (one vector-helper call each when vectorized)
    table_ops: float = 0.0               # multiply-adds building tables along table_entries (descriptions only)
    loop_lengths: dict = field(default_factory=dict)   # {contiguous extent: element ops along it}
    special: float = 0.0                 # special-function evaluations (exp, log, ...) among loop_ops

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    @property
    def peak_key(self) -> str:
        return self.compute_dtype or self.dtype


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def itemsize(dtype: str) -> float:
    sizes = {"float64": 8, "float32": 4, "tf32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "int8": 1,
             "uint8": 1, "int4": 0.5, "int32": 4}
    if dtype not in sizes:
        raise TilecError(f"unknown dtype {dtype!r} for a workload; known: {sorted(sizes)}")
    return sizes[dtype]


def blas(config: dict) -> bool:
    """Whether tile products become library (BLAS) calls: the Numba backend's ``dot`` option."""
    return config.get("dot", "blas") == "blas"


_FIELDS = {f for f in Workload.__dataclass_fields__ if f not in ("op", "shape", "dtype", "config")}


def from_description(op: str, shape: dict, dtype: str, config: dict, desc: dict) -> Workload:
    """A workload given as data (a record's ``workload`` field, for kernels tilec does not have):
    ``flops``, ``bytes`` and ``grid`` at least, other fields by their names."""
    if not isinstance(desc, dict):
        raise TilecError(f"{op}: a record's workload description must be a mapping, got {type(desc).__name__}")
    miss = [k for k in ("flops", "bytes", "grid") if k not in desc]
    bad = sorted(set(desc) - _FIELDS)
    if miss or bad:
        raise TilecError(f"{op}: workload description {'lacks ' + str(miss) if miss else 'has unknown fields ' + str(bad)}")
    d = dict(desc)
    d["grid"] = tuple(int(g) for g in d["grid"])
    d.setdefault("tile_bytes_local", 0)
    if d.get("dot_shape") is not None:
        d["dot_shape"] = tuple(d["dot_shape"])
    return Workload(op, dict(shape), dtype, dict(config), **d)


def backend_of(config: dict) -> str:
    """The backend a config is for when not said: GPU configs name num_warps (Triton)."""
    return "triton" if "num_warps" in config else "numba"


def _freeze(d: dict) -> tuple:
    return tuple(sorted((k, _freeze(v) if isinstance(v, dict) else v) for k, v in d.items()))


_CACHE: dict[tuple, Workload] = {}


def workload_for(op: str, shape: dict, dtype: str, config: dict, backend: str | None = None) -> Workload:
    """The workload of one launch, counted from the IR of the kernel it launches (cached)."""
    backend = backend or backend_of(config)
    itemsize(dtype)
    key = (op, _freeze(shape), dtype, _freeze(config), backend)
    w = _CACHE.get(key)
    if w is None:
        from .launches import launch
        try:
            w = from_ir(op, shape, dtype, config, launch(op, shape, dtype, config), backend)
        except (KeyError, TypeError, ValueError) as e:
            raise TilecError(f"{op}: cannot count the workload of shape {shape}, config {config}: {e}") from None
        if len(_CACHE) > 50000:
            _CACHE.clear()
        _CACHE[key] = w
    return w


def from_ir(op: str, shape: dict, dtype: str, config: dict, launch, backend: str) -> Workload:
    """Map a ``tilec.workload.count`` of ``launch`` to the cost models' fields."""
    from tilec import workload as counted
    c = counted.count(launch.fn, launch.grid, launch.extents, launch.scalars, launch.values)
    for follow in launch.then:      # e.g. a split's combine kernel: its work and traffic add up
        more = counted.count(follow.fn, follow.grid, follow.extents, follow.scalars, follow.values)
        c.add(more)
        c.tensor_extents.update(more.tensor_extents)
    programs = max(1, c.programs)
    gpu = backend in ("triton", "cuda")
    warps = config.get("num_warps")
    threads = int(warps) * 32 if warps else (int(config["threads"]) if "threads" in config else None)
    stages = int(config.get("num_stages", 1))
    dots = _triton_dots(c.dots, threads or 128) if backend == "triton" else dict(c.dots)
    dot_shape = max(dots, key=lambda s: dots[s] * s[0] * s[1] * s[2]) if dots else None
    dot_dtype = max(c.dot_dtypes, key=c.dot_dtypes.get) if c.dot_dtypes else None
    if c.dots and not dots:         # every product a broadcast on the CUDA cores, in fp32
        dot_dtype = "float32"
    calls = float(sum(c.dots.values()))
    lib = backend == "numba" and blas(config) and calls > 0
    lengths = {int(k): float(v) for k, v in c.elementwise.items()}
    if not lib:
        for (m, n, k), times in c.dots.items():
            lengths[n] = lengths.get(n, 0.0) + times * m * n * k
    loop_ops = float(sum(lengths.values()))
    ops_in_calls = [(m * k + k * n, m * n, times) for (m, n, k), times in c.dots.items()]
    level = {}
    if dot_shape:
        m, n, k = dot_shape
        e = itemsize(dtype)
        level = {"L0A": m * k * e, "L0B": k * n * e, "L0C": m * n * 4}
    regs = None
    if gpu and threads:
        regs = triton_registers(launch.fn, threads) if backend == "triton" else \
            estimated_registers(launch.fn, threads, dot_dtype)
        tile = counted.loop_tile_bytes(launch.fn) * max(1, stages)
    else:
        tile = counted.tile_bytes(launch.fn)
    return Workload(
        op, dict(shape), dtype, dict(config), flops=c.useful_flops, bytes=c.min_bytes(), grid=tuple(launch.grid),
        tile_bytes_local=int(tile), threads_per_program=threads, registers_per_thread=regs,
        compute_dtype=dot_dtype if dot_dtype and dot_dtype != dtype else None,
        traffic={"dram": c.valid_bytes, "local": c.bytes_loaded + c.bytes_stored}, level_bytes=level,
        pipeline_stages=stages, inner_iterations=max(1, round(c.loop_trips / programs)),
        work_efficiency=c.useful_flops / c.flops if c.flops else 1.0, dot_shape=dot_shape,
        library_calls=calls if lib else 0.0, call_flops=c.dot_flops / calls if lib else 0.0,
        call_bytes=sum(4.0 * a * t for a, _, t in ops_in_calls) / calls if lib else 0.0,
        call_out_bytes=sum(8.0 * o * t for _, o, t in ops_in_calls) / calls if lib else 0.0,
        loop_ops=loop_ops, vector_length=max(lengths, key=lengths.get) if lengths else 0,
        edge_steps=c.edge_steps, edge_elements=c.edge_elements, lookups=c.lookups,
        table_entries=c.table_entries, lookup_rows=c.lookup_rows, loop_lengths=lengths, special=c.special)


def _triton_dots(dots: dict, threads: int) -> dict:
    """The tile products the Triton renderer issues for the IR's dots: extents rounded up to
    powers of two; below tl.dot's least extent a broadcast product on the CUDA cores (no
    tile product) while it is small per thread, else the short extents padded to it."""
    from tilec.backends.triton.renderer import BROADCAST_PER_THREAD, DOT_MIN
    out: dict = {}
    for (m, n, k), times in dots.items():
        m, n, k = (1 << max(0, int(e) - 1).bit_length() for e in (m, n, k))
        if min(m, n, k) < DOT_MIN:
            if m * n * k <= BROADCAST_PER_THREAD * threads:
                continue
            m, n, k = (max(e, DOT_MIN) for e in (m, n, k))
        out[(m, n, k)] = out.get((m, n, k), 0) + times
    return out


TRITON_ACC_WORDS = 1.5      # registers per loop-carried element (the epilogue converts it while live)
TRITON_BASE_REGISTERS = 40  # indices, pointers, loop state


def triton_registers(fn, threads: int) -> int:
    """Registers per thread of a Triton program, from its IR: 1.5 per element of the tiles its
    loops carry (accumulators, running statistics), one per byte of the tiles it loads per
    loop step (operands in flight and their addresses), spread over the threads, plus 40.
    Checked against ptxas (sm_80) in tests/test_cost_analytical.py; it errs towards
    predicting a spill."""
    from tilec import workload as counted
    carried = sum(r.type.numel for op in fn.walk() if op.kind == "for" for r in op.results if r.shape)
    return int((TRITON_ACC_WORDS * carried + counted.loop_tile_bytes(fn)) / threads + TRITON_BASE_REGISTERS)


def estimated_registers(fn, threads: int, dot_dtype: str | None) -> int | None:
    """Registers per thread the CUDA backend's estimate gives the IR (None where it cannot plan it)."""
    from tilec.backends.cuda.resources import estimate_resources
    try:
        mma = "wmma" if dot_dtype in ("float16", "bfloat16") else "simt"
        return int(estimate_resources(fn, {"threads": threads, "mma": mma})["registers_wanted"])
    except Exception:       # noqa: BLE001 - an estimate is optional; the model has its own
        return None


def compiled_resources(w: Workload, arch: str, backend: str = "triton") -> Workload:
    """``w`` with the registers and shared memory of an offline compile of its kernel
    (``tilec.backends.triton.offline``), where one can run here; else ``w`` unchanged."""
    from dataclasses import replace

    from .launches import launch
    try:
        from tilec.backends.triton.offline import compile_offline
        fn = launch(w.op, w.shape, w.dtype, w.config).fn
        rep = compile_offline(fn, {k: w.config[k] for k in ("num_warps", "num_stages") if k in w.config}, arch)
    except (TilecError, ImportError, OSError):
        return w
    return replace(w, registers_per_thread=rep.registers, tile_bytes_local=rep.shared_bytes)
