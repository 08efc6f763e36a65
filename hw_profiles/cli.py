"""``tilec profiles list | show NAME | calibrate``."""
from __future__ import annotations

import argparse
import json

from . import hostdetect
from . import available, load
from .schema import Profile


def _si(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _bytes(n: int) -> str:
    for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.4g} {suffix}"
    return f"{n} B"


def run_list(args) -> int:
    rows = [("name", "kind", "arch", "CUs", "fp32", "fp16", "main memory", "local/program", "backends")]
    for p in available():
        rows.append((p.name, p.kind, p.arch, str(p.compute_units), _si(p.peak("float32"), "FLOP/s"),
                     _si(p.peak("float16"), "FLOP/s"), _si(p.dram.bandwidth_bytes_per_s, "B/s"),
                     _bytes(p.local_memory_bytes), ",".join(p.backends) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def describe(p: Profile) -> list[str]:
    src = p.sources

    def tag(key: str) -> str:
        s = src.get(key) or src.get(key.rsplit(".", 1)[0])
        return f"   <- {s}" if s else ""
    out = [f"{p.name}: {p.description}", f"  file: {p.path}",
           f"  kind {p.kind}, arch {p.arch}, backends {', '.join(p.backends) or 'none'}",
           f"  compute units: {p.compute_units}{tag('compute_units')}",
           f"  clock: {_si(p.clock_hz, 'Hz')}{tag('clock_hz')}",
           f"  local memory per program: {_bytes(p.local_memory_bytes)}{tag('local_memory_bytes')}"]
    for key in ("max_threads_per_block", "registers_per_thread", "registers_per_cu", "max_threads_per_cu",
                "max_programs_per_cu", "local_memory_per_cu_bytes", "warp_size", "matrix_unit", "simd_width_bits"):
        v = getattr(p, key)
        if v is not None:
            out.append(f"  {key}: {v}{tag(key)}")
    out.append("  peak:")
    for d, v in p.peak_flops.items():
        out.append(f"    {d:9s} {_si(v, 'FLOP/s'):>14s}  {p.energy_j_per_flop[d] * 1e12:7.3f} pJ/flop{tag('peak_flops.' + d)}")
    out.append("  memory (nearest first):")
    for m in p.memory:
        out.append(f"    {m.name:5s} {_bytes(m.capacity_bytes):>10s}  {_si(m.bandwidth_bytes_per_s, 'B/s'):>10s}  "
                   f"{m.energy_j_per_byte * 1e12:6.2f} pJ/B  scope {m.scope}{tag(f'memory.{m.name}.bandwidth_bytes_per_s')}")
    out.append(f"  power: idle {p.idle_power_w:g} W{tag('idle_power_w')}")
    out.append(f"         TDP {p.tdp_w:g} W{tag('tdp_w')}")
    for k, v in p.notes.items():
        out.append(f"  note {k}: {v}")
    return out


def run_show(args) -> int:
    p = load(args.name)
    if args.json:
        import dataclasses
        print(json.dumps(dataclasses.asdict(p), indent=1, default=str))
    else:
        print("\n".join(describe(p)))
    return 0


_FIGURES = (("stream_read_bytes_per_s", "streaming read ", 1e9, "GB/s"),
            ("stream_triad_bytes_per_s", "streaming triad", 1e9, "GB/s"),
            ("fp32_fma_flops", "fp32 FMA       ", 1e9, "GFLOP/s"))


def run_calibrate(args) -> int:
    print(f"measuring streaming bandwidth and fp32 FMA rate, about {args.seconds:g} s a run, until two runs "
          f"agree within {hostdetect.STABLE_WITHIN:.0%} (at most {args.runs} runs; plus a few seconds to compile "
          "the microbenchmarks)...")
    cal = hostdetect.calibrate(args.seconds, force=args.force, max_runs=args.runs)
    n = cal.profile.notes
    for key, label, scale, unit in _FIGURES:
        runs = " / ".join(f"{r[key] / scale:.1f}" for r in cal.runs)
        print(f"  {label} {n[key] / scale:8.1f} {unit:7s} (runs: {runs})")
    if not cal.stable:
        print(f"  the runs did not settle within {hostdetect.STABLE_WITHIN:.0%} in {len(cal.runs)} tries (a busy "
              "machine?): kept the best of each; calibrate again when the machine is quieter")
    for key, (old, new) in cal.kept.items():
        label, scale, unit = next((lb.strip(), sc, u) for k, lb, sc, u in _FIGURES if k == key)
        print(f"  kept the stored {label} of {old / scale:.1f} {unit}: better than this calibration's "
              f"{new / scale:.1f} (--force replaces it)")
    print(f"wrote {cal.path}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("profiles", help="hardware profiles: list, show, calibrate the host")
    sub = parser.add_subparsers(dest="profiles_command", required=True)
    p = sub.add_parser("list", help="every known profile, one line each")
    p.set_defaults(run=run_list)
    p = sub.add_parser("show", help="one profile with the source of each figure")
    p.add_argument("name", help="profile name (see `tilec profiles list`) or path to a .toml file")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run_show)
    p = sub.add_parser("calibrate", help="measure this machine and save the host profile")
    p.add_argument("--seconds", type=float, default=0.5, help="measuring time of a run after warm-up (default 0.5)")
    p.add_argument("--runs", type=int, default=hostdetect.MAX_RUNS, help="most runs while waiting for two to agree")
    p.add_argument("--force", action="store_true", help="replace stored figures even when they were better")
    p.set_defaults(run=run_calibrate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tilec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)
