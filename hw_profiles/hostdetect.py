"""The ``host`` profile: this machine's CPU, detected from the OS (cores, SIMD width, caches,
clock) and, after ``tilec profiles calibrate``, measured (streaming bandwidth, fp32 FMA rate).

Detected-only figures are estimates and say so in their source tags; calibrated ones are
tagged [M] with the date. The calibration lives in ``<tilec cache dir>/host_profile.toml`` as a
complete profile, and is only used on the machine it was measured on.
"""
from __future__ import annotations

import os
import platform
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .schema import Profile, ProfileError, load_file, profile_from_dict

KB, MB = 1024, 1024 * 1024
FMA_UNITS_GUESS = 2          # FMA pipes per core on current x86/Arm server cores [E]
CALIBRATION_FILE = "host_profile.toml"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    m = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    return (m.group(1).strip() if m else platform.processor()) or platform.machine()


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def simd_width_bits() -> int:
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    flags = set(m.group(2).split()) if m else set()
    if "avx512f" in flags:
        return 512
    if "avx2" in flags or "avx" in flags:
        return 256
    return 128                   # SSE2 / NEON baseline


def clock_hz() -> tuple[float, str]:
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if khz.isdigit():
        return int(khz) * 1e3, "[M] cpufreq cpuinfo_max_freq"
    m = re.search(r"@\s*([\d.]+)\s*GHz", cpu_model())
    if m:
        return float(m.group(1)) * 1e9, "[M] model name"
    m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", _read("/proc/cpuinfo"), re.M)
    if m:
        return float(m.group(1)) * 1e6, "[M] /proc/cpuinfo cpu MHz"
    return 2.0e9, "[E] unknown clock, 2 GHz assumed"


def caches() -> dict[str, int]:
    """{"L1": bytes, "L2": bytes, "L3": bytes} per instance, data/unified caches only."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        kind = _read(str(idx / "type")).strip()
        if kind == "Instruction":
            continue
        level, size = _read(str(idx / "level")).strip(), _read(str(idx / "size")).strip()
        m = re.fullmatch(r"(\d+)([KMG]?)", size)
        if level.isdigit() and m:
            out[f"L{level}"] = int(m.group(1)) * {"": 1, "K": KB, "M": MB, "G": 1024 * MB}[m.group(2)]
    return out


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024 * MB


def detected_document(machine: dict | None = None) -> dict:
    """The host profile as a TOML-shaped dict, from detection alone; or, given ``machine``
    (``machine_figures``' keys, e.g. from a records file's host sidecar), from those figures of
    another machine instead of this one's."""
    if machine is None:
        model, cores, simd, mem = cpu_model(), core_count(), simd_width_bits(), memory_bytes()
        clock, clock_src = clock_hz()
        cache = caches()
    else:
        model, cores, simd = str(machine["cpu_model"]), int(machine["compute_units"]), int(machine["simd_width_bits"])
        clock, clock_src = float(machine["clock_hz"]), "[M] the records' host figures"
        cache, mem = dict(machine["caches"]), int(machine["memory_bytes"])
    l1, l2, l3 = cache.get("L1", 32 * KB), cache.get("L2", 1 * MB), cache.get("L3", 0)
    lanes = simd // 32
    fp32 = cores * clock * lanes * 2 * FMA_UNITS_GUESS
    dram_bw = 12e9 * cores
    est = "[E] detected: cores x clock x SIMD lanes x 2 (FMA) x 2 FMA units (a guess; run `tilec profiles calibrate`)"
    memory = [
        {"name": "L1", "capacity_bytes": l1, "bandwidth_bytes_per_s": float(2 * simd // 8 * clock * cores),
         "energy_j_per_byte": 1.25e-12, "scope": "cu"},
        {"name": "L2", "capacity_bytes": l2, "bandwidth_bytes_per_s": float(64 * clock * cores),
         "energy_j_per_byte": 2.5e-12, "scope": "cu"},
    ]
    if l3:
        memory.append({"name": "L3", "capacity_bytes": l3, "bandwidth_bytes_per_s": float(32 * clock * cores),
                       "energy_j_per_byte": 5e-12, "scope": "shared"})
    memory.append({"name": "DRAM", "capacity_bytes": mem, "bandwidth_bytes_per_s": dram_bw,
                   "energy_j_per_byte": 160e-12, "scope": "dram"})
    sources = {
        "compute_units": "[M] os.sched_getaffinity", "clock_hz": clock_src,
        "simd_width_bits": "[M] /proc/cpuinfo flags",
        "local_memory_bytes": "[M] sysfs cache size (L2 per core)",
        "peak_flops.float32": est, "peak_flops.float64": est + " / 2",
        "peak_flops.float16": "[D] = float32: the Numba backend computes 16-bit floats in fp32",
        "peak_flops.bfloat16": "[D] = float32: the Numba backend computes 16-bit floats in fp32",
        "peak_flops.int8": "[E] = float32 rate (int8 dot accumulates in int32 lanes)",
        "idle_power_w": "[E] no power sensor read; 2 W per core assumed",
        "tdp_w": "[E] no power sensor read; 10 W per core assumed",
        "memory.L1": "[M] sysfs cache size; [E] bandwidth 2 loads x SIMD width per cycle; energy HOR 45 nm SRAM [D]",
        "memory.L2": "[M] sysfs cache size; [E] bandwidth 64 B/cycle/core; energy [E] 2x L1",
        "memory.L3": "[M] sysfs cache size; [E] bandwidth 32 B/cycle/core; energy [E] 4x L1",
        "memory.DRAM": "[M] sysconf physical pages; [E] bandwidth 12 GB/s per core (run calibrate); "
                       "energy [E] ~20 pJ/bit DDR, recalled",
    }
    return {
        "name": "host", "vendor": platform.machine(),
        "description": f"{'this machine' if machine is None else 'the machine that measured the records'}: "
                       f"{model}, {cores} cores",
        "kind": "cpu", "arch": platform.machine(), "backends": ["numba"], "compute_units": cores,
        "clock_hz": float(clock), "simd_width_bits": simd, "local_memory_bytes": l2, "local_memory_per_cu_bytes": l2,
        "idle_power_w": 2.0 * cores, "tdp_w": 10.0 * cores,
        "peak_flops": {"float32": float(fp32), "float64": float(fp32 / 2), "float16": float(fp32),
                       "bfloat16": float(fp32), "int8": float(fp32)},
        "notes": {"cpu_model": model, "calibrated": False},
        "memory": memory, "sources": sources,
    }


def calibration_path() -> Path:
    from tilec.runtime.cache import cache_dir
    return cache_dir() / CALIBRATION_FILE


def host_profile() -> Profile:
    from tilec.runtime.cache import readable
    path = readable(CALIBRATION_FILE)
    if path.is_file():
        try:
            prof = load_file(path, expected_name="host")
        except ProfileError as e:
            warnings.warn(f"tilec: ignoring the host calibration: {e} (run `tilec profiles calibrate` again)",
                          stacklevel=2)
        else:
            if prof.notes.get("cpu_model") == cpu_model() and prof.compute_units == core_count():
                return prof
            warnings.warn(f"tilec: {path} was measured on another machine "
                          f"({prof.notes.get('cpu_model')}, {prof.compute_units} cores); using detected figures",
                          stacklevel=2)
    return profile_from_dict(detected_document(), "<host: detected>", "host")


# -- calibration -----------------------------------------------------------------------------
def measure(seconds: float = 0.5, stream_bytes: int = 512 * MB) -> dict[str, float]:
    """Short microbenchmarks: best-of-N streaming read and triad bandwidth (bytes/s) over arrays
    far larger than the caches, and the fp32 FMA rate (flop/s) of a register-resident loop."""
    import numpy as np

    from . import microbench as mb
    n = max(1 << 20, stream_bytes // 12)
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    mb.triad(a, b, c, np.float32(2.0))
    mb.read_sum(b)
    out = np.zeros(core_count(), np.float32)
    mul, add = np.float32(0.999999), np.float32(1e-7)     # runtime values (see fma_loop)
    mb.fma_loop(10, out, mul, add)
    triad = read = fma = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t = time.perf_counter(); mb.triad(a, b, c, np.float32(2.0)); dt = time.perf_counter() - t
        triad = max(triad, 12 * n / dt)
        t = time.perf_counter(); mb.read_sum(b); dt = time.perf_counter() - t
        read = max(read, 4 * n / dt)
        iters = 200_000
        t = time.perf_counter(); mb.fma_loop(iters, out, mul, add); dt = time.perf_counter() - t
        fma = max(fma, mb.FMA_FLOPS_PER_ITER * iters * out.size / dt)
        if time.perf_counter() > deadline:
            break
    return {"stream_read_bytes_per_s": read, "stream_triad_bytes_per_s": triad, "fp32_fma_flops": fma}


def calibrated_document(measured: dict[str, float], machine: dict | None = None, stamp: str | None = None) -> dict:
    doc = detected_document(machine)
    stamp = stamp or time.strftime("%Y-%m-%d", time.gmtime())
    bw = max(measured["stream_read_bytes_per_s"], measured["stream_triad_bytes_per_s"])
    fp32 = measured["fp32_fma_flops"]
    doc["memory"][-1]["bandwidth_bytes_per_s"] = float(bw)
    doc["peak_flops"] = {"float32": fp32, "float64": fp32 / 2, "float16": fp32, "bfloat16": fp32, "int8": fp32}
    src = doc["sources"]
    src["memory.DRAM.bandwidth_bytes_per_s"] = (
        f"[M] tilec profiles calibrate {stamp}: best of streaming read "
        f"{measured['stream_read_bytes_per_s'] / 1e9:.1f} GB/s and triad {measured['stream_triad_bytes_per_s'] / 1e9:.1f} GB/s")
    src["peak_flops.float32"] = f"[M] tilec profiles calibrate {stamp}: register-resident fp32 FMA loop on all cores"
    src["peak_flops.float64"] = "[D] half the measured fp32 rate"
    doc["notes"] = {**doc["notes"], "calibrated": True, "calibrated_on": stamp,
                    **{k: float(v) for k, v in measured.items()}}
    return doc


# -- the host figures records were measured with ---------------------------------------------
MEASURED_KEYS = ("stream_read_bytes_per_s", "stream_triad_bytes_per_s", "fp32_fma_flops")


def machine_figures(prof: Profile) -> dict:
    """The detected figures of a host profile that the cost models read, as plain data: what a
    records file's sidecar keeps so that another machine analyses them as this one would."""
    caches = {m.name: m.capacity_bytes for m in prof.memory if m.name in ("L1", "L2", "L3")}
    return {"cpu_model": str(prof.notes.get("cpu_model", "")), "compute_units": prof.compute_units,
            "clock_hz": float(prof.clock_hz), "simd_width_bits": int(prof.simd_width_bits), "caches": caches,
            "memory_bytes": prof.dram.capacity_bytes}


def calibration_figures(prof: Profile) -> dict | None:
    """The three measured figures of a calibrated host profile, None if it is detected only."""
    if not prof.notes.get("calibrated"):
        return None
    return {k: float(prof.notes[k]) for k in MEASURED_KEYS}


def recorded_profile(calibration: dict | None, machine: dict | None, where: str = "<records host>",
                     measured_on: str | None = None) -> Profile:
    """The host profile of the machine that measured a records file: its calibration figures
    (or detected estimates when it had none) on its detected figures (or this machine's when
    the file does not name them)."""
    doc = calibrated_document(calibration, machine, measured_on) if calibration else detected_document(machine)
    return profile_from_dict(doc, where, "host")


STABLE_WITHIN = 0.10      # calibration runs agree when their two best figures are this close
MAX_RUNS = 5


@dataclass
class Calibration:
    """What ``calibrate`` measured and decided: the figures written (``profile`` at ``path``),
    every run's figures, whether the best two runs agreed, and the stored figures kept."""
    profile: Profile
    path: Path
    runs: list[dict]
    stable: bool
    kept: dict = field(default_factory=dict)       # figure -> (stored value kept, this run's best)


def measure_until_stable(seconds: float = 0.5, max_runs: int = MAX_RUNS,
                         within: float = STABLE_WITHIN) -> tuple[dict, list[dict], bool]:
    """Measure again until, for every figure, the two best runs agree within ``within`` (a
    busy machine gives low, scattered figures: 9.4 / 219 / 31.8 GFLOP/s in three runs). Returns
    the best of the runs for each figure, the runs, and whether they settled."""
    runs: list[dict] = []
    stable = False
    while len(runs) < max_runs and not stable:
        runs.append(measure(seconds))
        if len(runs) >= 2:
            stable = all(_agree(sorted(r[k] for r in runs)[-2:], within) for k in MEASURED_KEYS)
    best = {k: max(r[k] for r in runs) for k in MEASURED_KEYS}
    return best, runs, stable


def _agree(pair: list[float], within: float) -> bool:
    low, high = pair
    return high > 0 and low >= high * (1 - within)


def stored_calibration() -> dict | None:
    """The figures of this machine's stored calibration, if there is one."""
    path = calibration_path()
    if not path.is_file():
        return None
    from . import load_file
    try:
        prof = load_file(path, expected_name="host")
    except ProfileError:
        return None
    if prof.notes.get("cpu_model") != cpu_model() or prof.compute_units != core_count():
        return None
    return calibration_figures(prof)


def calibrate(seconds: float = 0.5, force: bool = False, max_runs: int = MAX_RUNS) -> Calibration:
    """Measure until stable, then write ``host_profile.toml`` atomically. A stored figure better
    than this calibration's best by more than the runs' spread is kept (and reported in
    ``Calibration.kept``) unless ``force``: a busy machine does not overwrite a quiet one's figures."""
    from tilec.runtime.cache import atomic_write

    from .tomlwrite import dumps
    best, runs, stable = measure_until_stable(seconds, max_runs)
    kept = {}
    stored = None if force else stored_calibration()
    for k, old in (stored or {}).items():
        if old * (1 - STABLE_WITHIN) > best[k]:
            kept[k] = (old, best[k])
            best[k] = old
    doc = calibrated_document(best)
    path = calibration_path()
    atomic_write(path, dumps(doc, header="tilec host profile: detected and calibrated by `tilec profiles calibrate`"))
    return Calibration(profile_from_dict(doc, str(path), "host"), path, runs, stable, kept)
