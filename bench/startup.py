"""Start-up, each measure in a fresh process: the README's "Calling ops" snippet on a cold
cache (and the first call of each op in it), then again on the warm cache (``import ops``, the
first ``ops.gemm``, the first call of each op, an F-order and a read-only input after a C-order
one); then the per-call overhead of a small GEMM (bench/overhead.py) and, with ``--threads``,
torch and tilec ops interleaved (bench/threads.py).

Each measure is taken as wall time and as the process's CPU time (``cpu``: on a loaded machine
the wall time is mostly waiting for a core). The probes write Python bytecode to a directory
of their own (``PYTHONPYCACHEPREFIX``) even where ``PYTHONDONTWRITEBYTECODE`` is set, as an
installed package has its bytecode: the cold process compiles it, the warm ones load it.

    python -m bench startup [--threads] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .timing import write_json

ROOT = Path(__file__).resolve().parents[1]
OPS = ("gemm", "gemv", "quantize", "quant_gemm", "bcq_quantize", "lut_gemm", "attention", "decode_attention",
       "quantize_kv", "append_kv", "decode_attention_quantized")

_PROBE = r"""
import json, sys, time
T, P = time.perf_counter, time.process_time
cpu = {{"first_call_s": {{}}, "after_c_order_s": {{}}}}
t, c = T(), P()
import ops
imports = T() - t
cpu["import_ops_s"] = P() - c
import numpy as np
first = {{}}


def timed(name, fn):
    def call(*args, **kwargs):
        t, c = T(), P()
        out = fn(*args, **kwargs)
        if name not in first:
            first[name] = T() - t
            cpu["first_call_s"][name] = P() - c
        return out
    return call


OPS = {ops}
for name in OPS:
    setattr(ops, name, timed(name, getattr(ops, name)))
a = np.ones((64, 64), np.float32)
t, c = T(), P(); ops.gemm(a, a); first_gemm = T() - t; cpu["first_gemm_64_s"] = P() - c
namespace = {{}}
t, c = T(), P(); exec(compile({snippet!r}, "README", "exec"), namespace); snippet = T() - t; cpu["snippet_s"] = P() - c
q = namespace["q"]
ops.decode_attention(q[:, :, :1], namespace["kv"], namespace["kv"], namespace["lengths"])
a, b = namespace["a"], namespace["b"]
after = {{}}   # the README's own gemm call (gelu) again: only the layout or the flags differ
for name, x in (("F-order", np.asfortranarray(a)), ("read-only", a.copy())):
    if name == "read-only":
        x.flags.writeable = False
    t, c = T(), P(); ops.gemm(x, b, bias=np.zeros(300, np.float32), activation="gelu", alpha=0.5)
    after[name] = T() - t
    cpu["after_c_order_s"][name] = P() - c
print(json.dumps({{"import_ops_s": imports, "first_gemm_64_s": first_gemm, "snippet_s": snippet,
                  "first_call_s": first, "after_c_order_s": after, "cpu": cpu}}))
"""


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Calling ops"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _probe(cache: str) -> dict:
    env = dict(os.environ, TILEC_CACHE_DIR=cache, PYTHONPATH=str(ROOT), TILEC_QUIET="1",
               PYTHONPYCACHEPREFIX=os.path.join(cache, "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    script = _PROBE.format(ops=OPS, snippet=readme_snippet())
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=False, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _conditions() -> dict:
    load = os.getloadavg()
    steal = next((int(line.split()[8]) for line in Path("/proc/stat").read_text().splitlines()
                  if line.startswith("cpu ")), None) if Path("/proc/stat").exists() else None
    return {"load_average": [round(x, 2) for x in load], "cpus": os.cpu_count(), "steal_jiffies": steal}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench startup")
    p.add_argument("--threads", action="store_true", help="also run bench/threads.py (a few minutes)")
    p.add_argument("--warm-runs", type=int, default=3, help="warm processes; the median by first gemm is kept")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = {"conditions_before": _conditions()}
    with tempfile.TemporaryDirectory() as cache:
        result["cold"] = _probe(cache)
        print("cold:", json.dumps(result["cold"]), flush=True)
        warm = []
        for _ in range(max(1, args.warm_runs)):
            warm.append(_probe(cache))
            print("warm:", json.dumps(warm[-1]), flush=True)
        result["warm"] = sorted(warm, key=lambda r: r["first_gemm_64_s"])[len(warm) // 2]
    from . import overhead
    result["overhead"] = overhead.measure()
    if args.threads:
        from . import threads
        result["threads"] = threads.measure()
    result["conditions_after"] = _conditions()
    cold, warm = result["cold"], result["warm"]
    print(f"cold cache: README snippet {cold['snippet_s']:.1f} s; first calls: "
          + ", ".join(f"{k} {v:.1f}" for k, v in cold["first_call_s"].items()))
    print(f"warm cache (median of 3 processes by first gemm): import ops {warm['import_ops_s']:.2f} s, first "
          f"ops.gemm {warm['first_gemm_64_s']:.2f} s, README snippet {warm['snippet_s']:.2f} s; first calls: "
          + ", ".join(f"{k} {v:.2f}" for k, v in warm["first_call_s"].items()))
    print("after a C-order input: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in warm["after_c_order_s"].items()))
    print(f"CPU time, cold: README snippet {cold['cpu']['snippet_s']:.1f} s; warm: import ops "
          f"{warm['cpu']['import_ops_s']:.2f} s, first ops.gemm {warm['cpu']['first_gemm_64_s']:.2f} s, first calls: "
          + ", ".join(f"{k} {v:.2f}" for k, v in warm["cpu"]["first_call_s"].items()))
    o = result["overhead"]
    print(f"ops.gemm 64^3: overhead {o['overhead_us']:.1f} us over its kernel's {o['kernel_us']:.1f} us "
          f"(NumPy {o['numpy_us']:.1f} us), thread CPU time")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
