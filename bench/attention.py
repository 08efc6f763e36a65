"""Attention benchmarks on this CPU, in one run with the baselines interleaved:

* forward, fp32, B=1 H=8 d=64, seq 1024/2048/4096, causal and not: tilec vs
  torch.nn.functional.scaled_dot_product_attention (when torch is installed) and vs a NumPy
  implementation that materializes the scores;
* peak extra memory of the forward at seq 8192, d=64 (B=1, H=1), sampled RSS in a fresh
  process, against the 256 MiB a seq x seq fp32 score matrix needs;
* decoding one token at 16k cached tokens (B=1, H=32, Hkv=8, d=128): from the 2-bit KIVI cache
  vs from the fp32 cache.

    python -m bench.attention [--json FILE] [--repeats N] [--quick]

Timing as ``bench.timing.interleaved_samples`` (interleaved rounds in rotated order, each turn
settling for 0.15 s before its samples); the tables report medians and the median of the per-sample ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import ops

from .timing import cpu_times, interleaved_samples, machine, report_steal


def numpy_attention(q, k, v, causal):
    """The textbook version: materializes the (H, Lq, Lk) fp32 score matrix."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(1.0 / math.sqrt(q.shape[-1]))
    if causal:
        lq, lk = s.shape[-2:]
        s = np.where(np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq), s, np.float32(-np.inf))
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.matmul(s, v)


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def ratio(times: dict, base: str, other: str) -> float:
    """Median over repeats of other's time / base's time (how many times faster base is)."""
    return float(np.median(np.array(times[other]) / np.array(times[base])))


def forward_fns(q, k, v, causal: bool, torch) -> dict:
    fns = {"tilec": lambda: ops.attention(q, k, v, causal=causal),
           "numpy": lambda: numpy_attention(q, k, v, causal)}
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
        fns["torch"] = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    return fns


def bench_forward(seqs, repeats: int) -> list[dict]:
    torch = _torch()
    rng = np.random.default_rng(0)
    rows = []
    for n in seqs:
        q, k, v = (rng.standard_normal((1, 8, n, 64)).astype(np.float32) for _ in range(3))
        for causal in (False, True):
            fns = forward_fns(q, k, v, causal, torch)
            want = numpy_attention(q, k, v, causal)
            err = float(np.abs(ops.attention(q, k, v, causal=causal) - want).max())
            t = interleaved_samples(fns, repeats)
            flops = 4.0 * 8 * n * n * 64 * (0.5 if causal else 1.0)
            row = {"seq": n, "causal": causal, "max_abs_err_vs_numpy": err,
                   **{f"{name}_ms": 1e3 * float(np.median(ts)) for name, ts in t.items()},
                   "tilec_gflops": flops / float(np.median(t["tilec"])) / 1e9,
                   "speedup_vs_numpy": ratio(t, "tilec", "numpy")}
            if "torch" in t:
                row["speedup_vs_torch"] = ratio(t, "tilec", "torch")
            rows.append(row)
            print(_fmt_forward(row), flush=True)
    return rows


def _fmt_forward(r: dict) -> str:
    torch_part = (f"torch {r['torch_ms']:8.1f} ms  x{r['speedup_vs_torch']:.2f}" if "torch_ms" in r
                  else "torch  (not installed)")
    return (f"seq {r['seq']:5d} {'causal' if r['causal'] else 'full  '}  tilec {r['tilec_ms']:8.1f} ms "
            f"({r['tilec_gflops']:5.1f} GFLOP/s)  {torch_part}  numpy {r['numpy_ms']:8.1f} ms  "
            f"x{r['speedup_vs_numpy']:.2f}")


_MEMORY_PROBE = r"""
import json, sys, threading, time
import numpy as np
import ops
from ops.attention import default_config

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

n = int(sys.argv[1])
rng = np.random.default_rng(0)
small = [rng.standard_normal((1, 1, 256, 64)).astype(np.float32) for _ in range(3)]
cfg = default_config({"Lq": n, "Lk": n, "D": 64}, "numba")
ops.attention(*small, config=cfg)          # compile first: the compiler's memory is not the kernel's
q, k, v = (rng.standard_normal((1, 1, n, 64)).astype(np.float32) for _ in range(3))
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=sample); t.start()
out = ops.attention(q, k, v, config=cfg)
done.set(); t.join()
peak[0] = max(peak[0], rss())
print(json.dumps({"seq": n, "extra_bytes": peak[0] - base, "output_bytes": out.nbytes}))
"""


def bench_memory(n: int = 8192) -> dict:
    env = dict(os.environ)
    # glibc would otherwise serve new buffers from pages freed earlier (already resident, so
    # invisible in RSS): a fixed mmap threshold and trimming make every new buffer show up
    env.update(MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(n)], capture_output=True, text=True, env=env,
                         timeout=900, check=False)
    if res.returncode:
        raise RuntimeError(f"memory probe failed: {res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    scores = n * n * 4
    out["score_matrix_bytes"] = scores
    out["fraction_of_scores"] = out["extra_bytes"] / scores
    print(f"memory seq {n} d 64: peak extra RSS {out['extra_bytes'] / 2**20:.1f} MiB (output "
          f"{out['output_bytes'] / 2**20:.1f} MiB) = {100 * out['fraction_of_scores']:.2f}% of the "
          f"{scores / 2**20:.0f} MiB score matrix", flush=True)
    return out


def bench_decode(tokens: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    b, h, hkv, d = 1, 32, 8, 128
    k, v = (rng.standard_normal((b, hkv, tokens, d)).astype(np.float32) for _ in range(2))
    q = rng.standard_normal((b, h, 1, d)).astype(np.float32)
    lens = np.full(b, tokens, np.int32)
    # KIVI's two usual key-group sizes (the residual window is one group)
    caches = {g: ops.quantize_kv(k, v, lens, bits=2, group=g, residual=g) for g in (32, 128)}
    fns = {"fp32": lambda: ops.decode_attention(q, k, v, lens)}
    for g, cache in caches.items():
        fns[f"kivi2_g{g}"] = lambda cache=cache: ops.decode_attention_quantized(q, cache)
    t = interleaved_samples(fns, repeats)
    row = {"tokens": tokens, **{f"{name}_ms": 1e3 * float(np.median(ts)) for name, ts in t.items()},
           "fp32_cache_bytes": int(k.nbytes + v.nbytes)}
    line = f"decode {tokens} tokens: fp32 cache {row['fp32_ms']:.2f} ms ({row['fp32_cache_bytes'] / 2**20:.0f} MiB)"
    for g, cache in caches.items():
        row[f"kivi2_g{g}_cache_bytes"] = cache.nbytes
        row[f"speedup_2bit_g{g}_vs_fp32"] = ratio(t, f"kivi2_g{g}", "fp32")
        line += (f"; 2-bit G={g} {row[f'kivi2_g{g}_ms']:.2f} ms ({cache.nbytes / 2**20:.1f} MiB) "
                 f"x{row[f'speedup_2bit_g{g}_vs_fp32']:.2f}")
    print(line, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="seq 1024 only, no memory probe (smoke run)")
    args = ap.parse_args(argv)
    seqs = (1024,) if args.quick else (1024, 2048, 4096)
    before = cpu_times()
    results = {"machine": {**machine(), "load_average": os.getloadavg()},
               "forward": bench_forward(seqs, args.repeats)}
    if not args.quick:
        results["memory"] = bench_memory(8192)
    results["decode"] = bench_decode(4096 if args.quick else 16384, args.repeats)
    results["machine"]["cpu_steal"] = report_steal(before)
    if args.json:
        from tilec.runtime.cache import atomic_write
        atomic_write(Path(args.json), json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
