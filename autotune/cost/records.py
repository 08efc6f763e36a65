"""Measured records, the rows every model trains on, from wherever they come from:

- the tuner's measurements (``measured_rows``: op, shape, dtype, config, runtime_s[, energy_j]);
- JSON-lines files written by ``save_jsonl`` or ``hostbench``;
- CSV files with one column per shape dimension and config parameter (``load_csv``), and
  the UCI "SGEMM GPU kernel performance" CSV (CLTune gemm_fast on a GTX 680);
- Kernel Tuner cache files (``.json`` or ``.json.gz``), including their power/energy fields.

A JSON-lines or CSV file of host records carries the figures of the machine that measured
them in a sidecar next to it, ``NAME.host.json`` for ``NAME.jsonl[.gz]`` / ``NAME.csv``
(``HOST_FORMAT``; written by ``save_jsonl`` and ``hostbench``). Its host records are analysed
with that machine's profile (``Record.host``), not this machine's; without a sidecar they
get this machine's ``host`` profile.

Nothing here executes what it reads: JSON, CSV and gzip only.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from tilec.errors import TilecError

from . import cltune


@dataclass
class Record:
    op: str
    shape: dict
    dtype: str
    config: dict
    runtime_s: float
    device: str = "host"                 # a hardware profile name when one exists
    energy_j: float | None = None
    power_w: float | None = None
    clock_hz: float | None = None        # core clock during the run, when the source reports it
    source: str = ""
    extra: dict = field(default_factory=dict)
    # device "host" only: the figures of the machine that measured it (a host sidecar's
    # "calibration" and "machine"); None: this machine's host profile
    host: dict | None = field(default=None, repr=False)
    # a launch of a kernel tilec has no IR of, described as data (workload.from_description)
    workload: dict | None = None

    def group_key(self, by: str) -> str:
        """The hold-out group this record belongs to: "shape", "device" or a config parameter."""
        if by == "shape":
            return f"{self.device}|{self.op}|{json.dumps(self.shape, sort_keys=True)}"
        if by == "device":
            return self.device
        if by == "op":
            return self.op
        if by in self.config:
            return f"{by}={self.config[by]}"
        raise TilecError(f"cannot group records by {by!r}: use shape, device, op or a config parameter")


def _check(rec: Record, where: str) -> Record:
    if not isinstance(rec.runtime_s, (int, float)) or not math.isfinite(rec.runtime_s) or rec.runtime_s <= 0:
        raise TilecError(f"{where}: runtime_s must be a positive number, got {rec.runtime_s!r}")
    if not isinstance(rec.shape, dict) or not isinstance(rec.config, dict):
        raise TilecError(f"{where}: shape and config must be mappings")
    return rec


def measured_rows(measurements: Iterable[dict], device: str = "host", source: str = "tuner",
                  host: dict | None = None) -> list[Record]:
    """Tuner measurements -> records. Each item needs op, shape, dtype, config, runtime_s;
    energy_j, power_w and device are optional. This is the tuner's entry point. ``host``: the
    measuring machine's figures (``host_figures()``), kept by the records of device "host"."""
    out = []
    for i, m in enumerate(measurements):
        missing = [k for k in ("op", "shape", "dtype", "config", "runtime_s") if k not in m]
        if missing:
            raise TilecError(f"measurement {i} lacks {missing}: {m!r}")
        out.append(_check(Record(op=str(m["op"]), shape=dict(m["shape"]), dtype=str(m["dtype"]),
                                 config=dict(m["config"]), runtime_s=float(m["runtime_s"]),
                                 device=str(m.get("device", device)), energy_j=m.get("energy_j"),
                                 power_w=m.get("power_w"), clock_hz=m.get("clock_hz"),
                                 source=str(m.get("source", source)), workload=m.get("workload")),
                          f"measurement {i}"))
        if host is not None and out[-1].device == "host":
            out[-1].host = host
    return out


# -- the host figures a records file was measured with -------------------------------------------
HOST_FORMAT = "tilec-records-host/1"
_CALIBRATION_KEYS = ("stream_read_bytes_per_s", "stream_triad_bytes_per_s", "fp32_fma_flops")
_MACHINE_KEYS = {"cpu_model": str, "compute_units": int, "clock_hz": float, "simd_width_bits": int,
                 "caches": dict, "memory_bytes": int}


def host_sidecar(path: str | Path) -> Path:
    """``runs.jsonl``, ``runs.jsonl.gz``, ``runs.csv`` -> ``runs.host.json`` beside it."""
    path = Path(path)
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return path.with_name(stem + ".host.json")


def host_figures() -> dict:
    """This machine's host figures, as a sidecar holds them: its calibration (None when
    ``tilec profiles calibrate`` has not run here) and its detected figures."""
    import time

    import hw_profiles
    from hw_profiles import hostdetect
    prof = hw_profiles.host()
    return {"format": HOST_FORMAT, "measured_on": time.strftime("%Y-%m-%d", time.gmtime()),
            "calibration": hostdetect.calibration_figures(prof), "machine": hostdetect.machine_figures(prof)}


def _positive(v, where: str, integer: bool = False):
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not math.isfinite(v) or v <= 0:
        raise TilecError(f"{where}: expected a positive {'integer' if integer else 'number'}, got {v!r}")
    return v


def _exact_keys(block, name: str, keys, where: str) -> None:
    """``block`` is a JSON object with exactly ``keys``; else an error naming the first odd key."""
    if not isinstance(block, dict):
        raise TilecError(f"{where}: damaged host figures: key {name!r} must be an object")
    bad = sorted(set(block) ^ set(keys))
    if bad:
        raise TilecError(f"{where}: damaged host figures: key '{name}.{bad[0]}' "
                         f"{'is unknown' if bad[0] in block else 'is missing'}")


def check_host_figures(doc, where: str) -> dict:
    """A sidecar's document, checked key by key; errors name ``where`` and the key."""
    if not isinstance(doc, dict):
        raise TilecError(f"{where}: damaged host figures: expected a JSON object, got {type(doc).__name__}")
    bad = sorted(set(doc) - {"format", "calibration", "machine", "measured_on", "note"})
    if bad:
        raise TilecError(f"{where}: damaged host figures: unknown key {bad[0]!r}")
    if doc.get("format") != HOST_FORMAT:
        raise TilecError(f"{where}: damaged host figures: key 'format' is {doc.get('format')!r}, "
                         f"expected {HOST_FORMAT!r}")
    for k in ("measured_on", "note"):
        if k in doc and not isinstance(doc[k], str):
            raise TilecError(f"{where}: damaged host figures: key {k!r} must be a string")
    cal, machine = doc.get("calibration"), doc.get("machine")
    if cal is None and machine is None:
        raise TilecError(f"{where}: damaged host figures: needs key 'calibration' or 'machine'")
    if cal is not None:
        _exact_keys(cal, "calibration", _CALIBRATION_KEYS, where)
        for k in _CALIBRATION_KEYS:
            _positive(cal[k], f"{where}: damaged host figures: key 'calibration.{k}'")
    if machine is not None:
        _exact_keys(machine, "machine", _MACHINE_KEYS, where)
        for k, kind in _MACHINE_KEYS.items():
            key = f"{where}: damaged host figures: key 'machine.{k}'"
            if kind is str and not isinstance(machine[k], str):
                raise TilecError(f"{key}: expected a string, got {machine[k]!r}")
            if kind in (int, float):
                _positive(machine[k], key, integer=kind is int)
        caches = machine["caches"]
        if not {"L1", "L2"} <= set(caches) or not set(caches) <= {"L1", "L2", "L3"}:
            raise TilecError(f"{where}: damaged host figures: key 'machine.caches' needs L1, L2 (and L3), "
                             f"got {sorted(caches)}")
        for k, v in caches.items():
            _positive(v, f"{where}: damaged host figures: key 'machine.caches.{k}'", integer=True)
    out = {"calibration": dict(cal) if cal is not None else None,
           "machine": dict(machine, caches=dict(machine["caches"])) if machine is not None else None}
    out.update({k: doc[k] for k in ("measured_on", "note") if k in doc})
    return out


def load_host_figures(path: str | Path) -> dict | None:
    """The checked host figures of the records file ``path`` (its sidecar), None without one."""
    side = host_sidecar(path)
    return read_host_file(side) if side.is_file() else None


def read_host_file(side: str | Path) -> dict:
    """The checked figures of one ``.host.json`` file."""
    try:
        doc = json.loads(Path(side).read_text())
    except OSError as e:
        raise TilecError(f"{side}: cannot read the host figures: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TilecError(f"{side}: damaged host figures: not JSON: {e}") from None
    return check_host_figures(doc, str(side))


def write_host_figures(path: str | Path, figures: dict | None) -> None:
    """Write (None: remove) the sidecar of the records file ``path``."""
    from tilec.runtime.cache import atomic_write
    side = host_sidecar(path)
    if figures is None:
        side.unlink(missing_ok=True)
        return
    doc = {"format": HOST_FORMAT, **{k: v for k, v in figures.items() if k != "format"}}
    check_host_figures(doc, str(side))
    atomic_write(side, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _with_host(records: list[Record], path: Path) -> list[Record]:
    figures = load_host_figures(path)
    if figures is not None:
        for r in records:
            if r.device == "host":
                r.host = figures
    return records


def save_jsonl(records: Iterable[Record], path: str | Path) -> None:
    """One JSON line per record; the host figures of its host records go to the sidecar
    (a stale one is removed when they have none)."""
    from tilec.runtime.cache import atomic_write
    records = list(records)
    hosts = []
    for r in records:
        if r.host is not None and r.host not in hosts:
            hosts.append(r.host)
    if len(hosts) > 1:
        raise TilecError(f"{path}: the records were measured on {len(hosts)} different hosts; "
                         "one file carries the figures of one")
    rows = []
    for r in records:
        row = asdict(r)
        del row["host"]
        if row["workload"] is None:
            del row["workload"]
        rows.append(json.dumps(row, sort_keys=True) + "\n")
    atomic_write(Path(path), "".join(rows))
    write_host_figures(path, hosts[0] if hosts else None)


def load_jsonl(path: str | Path) -> list[Record]:
    path = Path(path)
    out = []
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise TilecError(f"{path}:{n}: not JSON: {e}") from None
            out += measured_rows([item], source=item.get("source") or path.name)
    return _with_host(out, path)


def _open_text(path: Path):
    if not path.is_file():
        raise TilecError(f"no such file: {path}")
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


# -- UCI SGEMM (CLTune gemm_fast, GTX 680) ------------------------------------------------------
UCI_PARAMS = ("MWG", "NWG", "KWG", "MDIMC", "NDIMC", "MDIMA", "NDIMB", "KWI", "VWM", "VWN", "STRM", "STRN", "SA", "SB")


def load_uci_sgemm(path: str | Path, limit: int | None = None, seed: int = 0) -> list[Record]:
    """Rows of sgemm_product.csv: 14 parameters and 4 runtimes (ms); the record keeps their mean.
    ``limit`` keeps a random subset (fixed ``seed``) for quick experiments."""
    path = Path(path)
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:14]] != list(UCI_PARAMS):
            raise TilecError(f"{path}: not the UCI SGEMM CSV (header {header[:14] if header else None})")
        rows = list(reader)
    if limit is not None and limit < len(rows):
        import random
        rows = random.Random(seed).sample(rows, limit)
    out = []
    for row in rows:
        cfg = {k: int(v) for k, v in zip(UCI_PARAMS, row[:14])}
        runs = [float(x) for x in row[14:18]]
        out.append(describe(Record("gemm_cltune", {"M": 2048, "N": 2048, "K": 2048}, "float32", cfg,
                                   sum(runs) / len(runs) / 1e3, device="gtx680", source=path.name)))
    return out


# -- Kernel Tuner cache files ------------------------------------------------------------------
DEVICE_PROFILES = {"NVIDIA A100-PCIE-40GB": "a100_pcie_40gb", "NVIDIA RTX A4000": "rtx_a4000",
                   "NVIDIA RTX 4000 Ada Generation": "rtx4000_ada", "NVIDIA GeForce GTX 680": "gtx680",
                   "NVIDIA A100-SXM4-40GB": "a100_sxm4_40gb", "NVIDIA A100-SXM4-80GB": "a100_sxm4_80gb",
                   "NVIDIA H100 PCIe": "h100_pcie", "NVIDIA H100 80GB HBM3": "h100_sxm",
                   "NVIDIA GeForce RTX 4090": "rtx4090", "NVIDIA GeForce RTX 4070": "rtx4070", "NVIDIA L4": "l4",
                   "NVIDIA GeForce RTX 3090": "rtx3090", "NVIDIA GeForce RTX 3060 Laptop GPU": "rtx3060_laptop",
                   "NVIDIA GeForce RTX 2080 Ti": "rtx2080ti", "NVIDIA TITAN RTX": "titan_rtx"}
_NOT_PARAMS = {"time", "times", "compile_time", "verification_time", "benchmark_time", "strategy_time",
               "framework_time", "timestamp", "GFLOP/s", "GFLOPS/W", "temperature", "core_freq", "pwr_core_freq",
               "f", "energy", "ps_energy", "nvml_energy", "nvml_power", "ps_power", "power",
               "registers", "num_regs", "shared_bytes", "shared_mem_bytes", "threads"}


def load_kernel_tuner(path: str | Path) -> list[Record]:
    """Every valid entry of a Kernel Tuner cache: parameters -> config, ``time`` (ms) -> runtime;
    energy from ``energy``/``ps_energy``/``nvml_energy`` (J) or ``nvml_power`` (W) x time."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise TilecError(f"{path}: not a Kernel Tuner cache (invalid JSON: {e})") from None
    if not isinstance(doc, dict) or "cache" not in doc:
        raise TilecError(f"{path}: not a Kernel Tuner cache (no 'cache' key)")
    keys = doc.get("tune_params_keys") or []
    device_name = str(doc.get("device_name", "unknown"))
    device = DEVICE_PROFILES.get(device_name, device_name)
    op = str(doc.get("kernel_name", "kernel"))
    ps = doc.get("problem_size", [])
    ps = ps if isinstance(ps, list) else [ps]
    shape = {f"n{i}": int(v) for i, v in enumerate(ps)}
    out = []
    for entry in doc["cache"].values():
        t = entry.get("time")
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            continue                     # "CompilationFailedConfig", "RuntimeFailedConfig", ...
        cfg = {k: entry[k] for k in (keys or [k for k in entry if k not in _NOT_PARAMS]) if k in entry}
        runtime = t / 1e3
        energy = next((float(entry[k]) for k in ("energy", "ps_energy", "nvml_energy") if isinstance(entry.get(k), (int, float))), None)
        power = next((float(entry[k]) for k in ("nvml_power", "ps_power", "power") if isinstance(entry.get(k), (int, float))), None)
        if energy is None and power is not None:
            energy = power * runtime
        if power is None and energy is not None:
            power = energy / runtime
        clock = entry.get("core_freq") or entry.get("nvml_gr_clock")
        from .resources import FIELDS
        extra = {n: entry[n] for names in FIELDS.values() for n in names if isinstance(entry.get(n), (int, float))}
        out.append(describe(Record(op, shape, "float32", cfg, runtime, device=device, energy_j=energy,
                                   power_w=power, clock_hz=float(clock) * 1e6 if isinstance(clock, (int, float)) else None,
                                   source=path.name, extra=extra)))
    return out


# -- generic CSV ---------------------------------------------------------------------------------
def load_csv(path: str | Path) -> list[Record]:
    """A CSV of records: columns ``op``, ``dtype``, ``runtime_s`` (required), ``device``,
    ``energy_j``, ``power_w`` (optional), and one column per shape dimension (``shape.M``)
    and per config parameter (``config.BM``). The UCI SGEMM file is recognised and read as such."""
    path = Path(path)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if [h.strip() for h in header[:14]] == list(UCI_PARAMS):
            return load_uci_sgemm(path)
        missing = [c for c in ("op", "dtype", "runtime_s") if c not in header]
        if missing:
            raise TilecError(f"{path}: a records CSV needs columns {missing} (and shape.*/config.* columns)")
        out = []
        for n, row in enumerate(reader, 2):
            def num(v):
                try:
                    return int(v)
                except ValueError:
                    try:
                        return float(v)
                    except ValueError:
                        return v
            item = {"op": row["op"], "dtype": row["dtype"], "device": row.get("device") or "host",
                    "shape": {k[6:]: num(v) for k, v in row.items() if k.startswith("shape.") and v != ""},
                    "config": {k[7:]: num(v) for k, v in row.items() if k.startswith("config.") and v != ""}}
            try:
                item["runtime_s"] = float(row["runtime_s"])
                for k in ("energy_j", "power_w"):
                    if row.get(k):
                        item[k] = float(row[k])
            except ValueError as e:
                raise TilecError(f"{path}:{n}: {e}") from None
            out += measured_rows([item], source=path.name)
        return _with_host(out, path)


def load_any(path: str | Path) -> list[Record]:
    """Pick the loader from the file: a records or UCI CSV, a Kernel Tuner cache, or JSON lines."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".host.json"):
        raise TilecError(f"{path}: the host figures of a records file, not records (pass the records file)")
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return load_csv(path)
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        return load_jsonl(path)
    if name.endswith(".json") or name.endswith(".json.gz"):
        return load_kernel_tuner(path)
    raise TilecError(f"{path}: unknown record format (use .jsonl, .csv or a Kernel Tuner .json[.gz])")


# -- workload descriptions of the external kernels these files describe -------------------------
# tilec has no IR of these kernels: their loaders describe each launch as data, the record's
# ``workload`` field (autotune.cost.workload.from_description)
def _cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def _vector_add(shape: dict, c: dict) -> dict:
    n = shape["n0"]
    b = int(c.get("block_size_x", 256))
    return dict(flops=float(n), bytes=12.0 * n, grid=(_cdiv(n, b),), tile_bytes_local=0, threads_per_program=b,
                registers_per_thread=16)


def _fp32_kernel(shape: dict, c: dict) -> dict:
    """Kernel Tuner's synthetic FMA kernel: grid = problem_size blocks of block_size_x threads,
    each thread nr_outer x nr_inner x 4 FMAs (nominal count from its source)."""
    blocks = shape["n0"] * shape.get("n1", 1)
    b = int(c.get("block_size_x", 1024))
    flops = 8.0 * blocks * b * int(c.get("nr_outer", 1)) * int(c.get("nr_inner", 1))
    return dict(flops=flops, bytes=4.0 * blocks * b, grid=(shape["n0"], shape.get("n1", 1)), tile_bytes_local=0,
                threads_per_program=b, registers_per_thread=16)


def _convolution(shape: dict, c: dict) -> dict:
    """Kernel Tuner's 2-D convolution (image n0 x n1, filter fh x fw): a block of
    block_size_x x block_size_y threads computes a tile_size_x x tile_size_y patch per thread,
    staging its input window (output tile + filter halo) in shared memory."""
    W, H = shape["n0"], shape.get("n1", shape["n0"])
    fw, fh = int(c.get("filter_width", 15)), int(c.get("filter_height", 15))
    ox, oy = c["block_size_x"] * c.get("tile_size_x", 1), c["block_size_y"] * c.get("tile_size_y", 1)
    gx, gy = _cdiv(W, ox), _cdiv(H, oy)
    window = (ox + fw - 1) * (oy + fh - 1) * 4
    threads = c["block_size_x"] * c["block_size_y"]
    per_thread = c.get("tile_size_x", 1) * c.get("tile_size_y", 1)
    return dict(flops=2.0 * W * H * fw * fh, bytes=4.0 * ((W + fw - 1) * (H + fh - 1) + W * H + fw * fh),
                grid=(gx, gy), tile_bytes_local=window, threads_per_program=threads,
                registers_per_thread=int(per_thread * 2 + 24),
                traffic={"dram": gx * gy * window + 4.0 * W * H, "local": gx * gy * ox * oy * fw * fh * 4.0},
                work_efficiency=(W * H) / (gx * ox * gy * oy))


DESCRIBE = {"gemm_cltune": cltune.description, "vector_add": _vector_add, "fp32_kernel": _fp32_kernel,
            "convolution_kernel": _convolution}


def describe(rec: Record) -> Record:
    """Give a record of an external kernel its workload description (a known kernel name)."""
    if rec.workload is None and rec.op in DESCRIBE:
        try:
            rec.workload = DESCRIBE[rec.op](rec.shape, rec.config)
        except KeyError as e:
            raise TilecError(f"{rec.op} record lacks {e} to describe its workload (config {rec.config})") from None
    return rec

