"""Attention forward + backward on this CPU, in one run with torch interleaved:

* fp32, B=1 H=8 d=64, seq 1024/2048/4096, causal and not: ``ops.attention(return_lse=True)``
  then ``ops.attention_backward`` vs torch.nn.functional.scaled_dot_product_attention forward
  and ``torch.autograd.grad`` of it (the gradients of the same upstream dO);
* peak extra memory of forward + backward at seq 8192, d=64 (B=1, H=1), sampled RSS in a
  fresh process, against the 256 MiB a seq x seq fp32 matrix needs.

    python -m bench.attention_backward [--json FILE] [--repeats N] [--quick]

Timing as ``bench.timing.interleaved_samples``; the table reports medians and the median of
the per-sample ratios (torch's time / tilec's: above 1, tilec is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import ops

from .attention import ratio
from .timing import cpu_times, interleaved_samples, machine, report_steal


def fns_for(q, k, v, do, causal: bool, torch) -> dict:
    def tilec():
        o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
        return ops.attention_backward(q, k, v, o, lse, do, causal=causal)

    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    tdo = torch.from_numpy(do)

    def sdpa():
        o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        return torch.autograd.grad(o, (tq, tk, tv), tdo)

    return {"tilec": tilec, "torch": sdpa}


def bench_training_step(seqs, repeats: int) -> list[dict]:
    import torch
    rng = np.random.default_rng(0)
    rows = []
    for n in seqs:
        q, k, v, do = (rng.standard_normal((1, 8, n, 64)).astype(np.float32) for _ in range(4))
        for causal in (False, True):
            fns = fns_for(q, k, v, do, causal, torch)
            err = max(float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(fns["tilec"](), fns["torch"]()))
            t = interleaved_samples(fns, repeats)
            row = {"seq": n, "causal": causal, "max_abs_err_vs_torch": err,
                   **{f"{name}_ms": 1e3 * float(np.median(ts)) for name, ts in t.items()},
                   "speedup_vs_torch": ratio(t, "tilec", "torch")}
            rows.append(row)
            print(f"seq {n:5d} {'causal' if causal else 'full  '}  tilec fwd+bwd {row['tilec_ms']:8.1f} ms  "
                  f"torch SDPA fwd+bwd {row['torch_ms']:8.1f} ms  x{row['speedup_vs_torch']:.2f}  "
                  f"(max |diff| {err:.1e})", flush=True)
    return rows


_MEMORY_PROBE = r"""
import json, sys, threading, time
import numpy as np
import ops

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

n = int(sys.argv[1])
rng = np.random.default_rng(0)
small = [rng.standard_normal((1, 1, 256, 64)).astype(np.float32) for _ in range(4)]
o, lse = ops.attention(*small[:3], return_lse=True)
ops.attention_backward(*small[:3], o, lse, small[3])   # compile first: not the kernels' memory
q, k, v, do = (rng.standard_normal((1, 1, n, 64)).astype(np.float32) for _ in range(4))
base = rss()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=sample); t.start()
o, lse = ops.attention(q, k, v, return_lse=True)
grads = ops.attention_backward(q, k, v, o, lse, do)
done.set(); t.join()
peak[0] = max(peak[0], rss())
print(json.dumps({"seq": n, "extra_bytes": peak[0] - base,
                  "output_bytes": o.nbytes + lse.nbytes + sum(g.nbytes for g in grads)}))
"""


def bench_memory(n: int = 8192) -> dict:
    env = dict(os.environ)
    # as bench.attention: every new buffer must show up in RSS, not reuse freed resident pages
    env.update(MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(n)], capture_output=True, text=True, env=env,
                         timeout=1800, check=False)
    if res.returncode:
        raise RuntimeError(f"memory probe failed: {res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    scores = n * n * 4
    out["score_matrix_bytes"] = scores
    out["fraction_of_scores"] = out["extra_bytes"] / scores
    print(f"memory seq {n} d 64 fwd+bwd: peak extra RSS {out['extra_bytes'] / 2**20:.1f} MiB (outputs and "
          f"gradients {out['output_bytes'] / 2**20:.1f} MiB) = {100 * out['fraction_of_scores']:.2f}% of the "
          f"{scores / 2**20:.0f} MiB score matrix", flush=True)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "attention_backward.json"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="seq 512 only, memory at seq 2048")
    a = p.parse_args(argv)
    seqs, mem_n = ([512], 2048) if a.quick else ([1024, 2048, 4096], 8192)
    start = cpu_times()
    rows = bench_training_step(seqs, a.repeats)
    memory = bench_memory(mem_n)
    payload = {"machine": machine(), "steal": report_steal(start), "training_step": rows, "memory": memory}
    if a.json and not a.quick:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
