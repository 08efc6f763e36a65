"""Attention inside models on this CPU, in one run with the peers interleaved (fp32):

* a padded batch of 32 sequences, lengths uniform in 16..128, B=32 H=12 d=32: tilec with a
  (B, 1, 1, L) key-padding mask vs torch SDPA with the same mask (target >= 1.0x);
* the same sequences packed, ``ops.attention_varlen`` vs torch SDPA on the padded batch
  (target >= 1.3x);
* a sliding window: 4096 tokens, each seeing its last 512 (window=(511, 0), causal), B=1 H=8
  d=64, vs full causal attention (target >= 4x: time grows with the window, not the sequence).

    python -m bench.attention_masked [--json FILE] [--repeats N]

Ratios are medians of per-sample ratios (bench.timing.interleaved_samples); results go to
bench/results/attention_masked.json with the load average and the hypervisor's steal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import ops

from .timing import cpu_times, interleaved_samples, machine, report_steal

DEFAULT_JSON = Path(__file__).parent / "results" / "attention_masked.json"


def ratio(times: dict, base: str, other: str) -> float:
    """Median over samples of other's time / base's time (how many times faster base is)."""
    return float(np.median(np.array(times[other]) / np.array(times[base])))


def _summary(times: dict) -> dict:
    return {f"{name}_ms": 1e3 * float(np.median(ts)) for name, ts in times.items()}


def bench_padded(repeats: int, seed: int = 0) -> dict:
    """Key-padding mask and packed batch against torch SDPA on the padded batch."""
    import torch
    rng = np.random.default_rng(seed)
    b, h, d = 32, 12, 32
    lens = rng.integers(16, 129, b)
    width = int(lens.max())
    q, k, v = (rng.standard_normal((b, h, width, d)).astype(np.float32) for _ in range(3))
    mask = np.arange(width)[None, None, None, :] < lens[:, None, None, None]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    # packed (total, H, d) copies of the real tokens
    packed = [np.ascontiguousarray(np.concatenate([x[i, :, :n].transpose(1, 0, 2) for i, n in enumerate(lens)]))
              for x in (q, k, v)]
    tq, tk, tv, tmask = (torch.from_numpy(x) for x in (q, k, v, mask))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    fns = {"tilec_masked": lambda: ops.attention(q, k, v, mask=mask),
           "tilec_varlen": lambda: ops.attention_varlen(*packed, cu, cu, width, width),
           "torch_sdpa_masked": lambda: sdpa(tq, tk, tv, attn_mask=tmask)}
    want = sdpa(tq, tk, tv, attn_mask=tmask).numpy()
    err_masked = float(np.abs(fns["tilec_masked"]() - want).max())
    got = fns["tilec_varlen"]()
    err_varlen = max(float(np.abs(got[cu[i]:cu[i + 1]] - want[i, :, :n].transpose(1, 0, 2)).max())
                     for i, n in enumerate(lens))
    t = interleaved_samples(fns, repeats)
    return {"B": b, "H": h, "D": d, "lengths": lens.tolist(), "padded_to": width,
            "real_token_fraction": float(lens.sum() / (b * width)),
            "max_abs_err_vs_torch": {"masked": err_masked, "varlen": err_varlen}, **_summary(t),
            "masked_vs_torch": ratio(t, "tilec_masked", "torch_sdpa_masked"),
            "varlen_vs_torch_padded": ratio(t, "tilec_varlen", "torch_sdpa_masked")}


def bench_window(repeats: int, n: int = 4096, window: int = 512, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, 8, n, 64)).astype(np.float32) for _ in range(3))
    fns = {"tilec_window": lambda: ops.attention(q, k, v, causal=True, window=(window - 1, 0)),
           "tilec_causal": lambda: ops.attention(q, k, v, causal=True)}
    t = interleaved_samples(fns, repeats)
    return {"B": 1, "H": 8, "D": 64, "seq": n, "window": window, **_summary(t),
            "window_vs_causal": ratio(t, "tilec_window", "tilec_causal")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="write the results here")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    before = cpu_times()
    results = {"machine": {**machine(), "load_average_before": os.getloadavg()},
               "padded_batch": bench_padded(args.repeats), "sliding_window": bench_window(args.repeats)}
    results["machine"]["load_average_after"] = os.getloadavg()
    results["machine"]["cpu_steal"] = report_steal(before)
    print(json.dumps({k: v for k, v in results["padded_batch"].items() if k != "lengths"}, indent=1))
    print(json.dumps(results["sliding_window"], indent=1))
    if args.json:
        from tilec.runtime.cache import atomic_write
        atomic_write(Path(args.json), json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
