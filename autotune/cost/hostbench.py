"""Training data from this machine: small DSL kernels for the op families the cost models
cover (GEMM, GEMV, int8 weight-only GEMV, attention) and the op library's quantized kernels
(``ops.quant`` int4 group-wise GEMM, ``ops.lut_gemm`` 3-bit BCQ LUT-GEMM), timed on the Numba
backend over a grid of shapes and configs.

    python -m autotune.cost.hostbench pass1.jsonl          # measure (a few minutes)
    python -m autotune.cost.hostbench pass2.jsonl
    python -m autotune.cost.hostbench out.jsonl --merge pass1.jsonl pass2.jsonl   # fastest of each

Each output file gets a sidecar, ``NAME.host.json`` (``records.HOST_FORMAT``): this machine's
calibration (``tilec profiles calibrate``; run it first) and detected figures, with which the
cost models analyse the records wherever they are read. A merge keeps its passes' sidecar.

The real ops in ``ops/`` will supersede these kernels; the tuner's own records feed the same
``records.measured_rows`` path. These exist so the learned model has real CPU data today.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import time

import numpy as np

import tilec as tc
from ops import plain


@tc.kernel
def quant_gemv_kernel(W, s, x, y, BM: tc.constexpr, BK: tc.constexpr):
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, W.shape[1], BK):
        w = tc.cast(tc.load(W, (pm * BM, k), (BM, BK)), tc.float32)
        acc = acc + tc.sum(w * tc.load(x, (k,), (BK,)), 1)
    tc.store(y, (pm * BM,), acc * tc.load(s, (pm * BM,), (BM,)))


@tc.kernel
def attention_kernel(Q, K, V, O, scale, BM: tc.constexpr, BN: tc.constexpr, D: tc.constexpr):
    pm, h = tc.program_id(0), tc.program_id(1)
    n = Q.shape[1]
    q = tc.load(Q, (h, pm * BM, 0), (None, BM, D))
    m = tc.full((BM,), -1e30, tc.float32)
    l = tc.zeros((BM,), tc.float32)
    acc = tc.zeros((BM, D), tc.float32)
    for j in tc.range(0, n, BN):
        k = tc.load(K, (h, j, 0), (None, BN, D))
        s = tc.dot(q, tc.trans(k)) * scale
        s = tc.where(tc.expand_dims(j + tc.arange(BN) < n, 0), s, -1e30)
        # alpha is computed from m before m_new exists: Numba's parfor pass may hoist the
        # allocation of m_new out of the loop so that it aliases the carried m
        row_max = tc.max(s, 1)
        alpha = tc.exp(tc.minimum(m - row_max, 0.0))
        m_new = tc.maximum(m, row_max)
        p = tc.exp(s - tc.expand_dims(m_new, 1))
        l = l * alpha + tc.sum(p, 1)
        acc = acc * tc.expand_dims(alpha, 1) + tc.dot(p, tc.load(V, (h, j, 0), (None, BN, D)))
        m = m_new
    tc.store(O, (h, pm * BM, 0), acc / tc.expand_dims(l, 1), (None, BM, D))


def _cdiv(a, b):
    return -(-a // b)


def _inputs(op: str, shape: dict, rng):
    f = np.float32
    if op == "gemm":
        a, b = rng.standard_normal((shape["M"], shape["K"])).astype(f), rng.standard_normal((shape["K"], shape["N"])).astype(f)
        return (a, b, np.zeros((shape["M"], shape["N"]), f)), lambda: a @ b
    if op == "gemv":
        a, x = rng.standard_normal((shape["M"], shape["K"])).astype(f), rng.standard_normal(shape["K"]).astype(f)
        return (a, x, np.zeros(shape["M"], f)), lambda: a @ x
    if op == "quant_gemv":
        w = rng.integers(-127, 128, (shape["M"], shape["K"]), dtype=np.int8)
        s, x = rng.random(shape["M"]).astype(f) / 64, rng.standard_normal(shape["K"]).astype(f)
        return (w, s, x, np.zeros(shape["M"], f)), lambda: s * (w.astype(f) @ x)
    if op == "attention":
        H, N, D = shape["H"], shape["N"], shape["D"]
        q, k, v = (rng.standard_normal((H, N, D)).astype(f) for _ in range(3))
        scale = 1.0 / math.sqrt(D)

        def ref():
            sc = q @ k.transpose(0, 2, 1) * scale
            p = np.exp(sc - sc.max(-1, keepdims=True))
            return (p / p.sum(-1, keepdims=True)) @ v
        return (q, k, v, np.zeros((H, N, D), f), scale), ref
    if op == "quant_gemm":
        quant = importlib.import_module("ops.quant")
        inp = quant.make_inputs(shape, "float32", rng)
        x, qw = inp["x"], inp["qw"]
        m, n, per = shape["M"], shape["N"], qw.config.per_byte
        scales, zeros = qw.by_byte_lane()
        y = np.zeros((m, n // per, per), f)
        return (x, qw.qweight, scales, zeros, y), lambda: quant.reference(inp).reshape(y.shape)
    if op == "lut_gemm":
        lut_gemm = importlib.import_module("ops.lut_gemm")
        inp = lut_gemm.make_inputs(shape, "float32", rng)
        bw = inp["bw"]
        beta = bw.beta if bw.beta is not None else bw.alpha[0]
        return (inp["x"], bw.bits, bw.alpha, beta, np.zeros((shape["M"], shape["N"]), f)), \
            lambda: lut_gemm.reference(inp)
    raise ValueError(op)


def _launch(op: str, shape: dict, config: dict, args):
    c = {k: v for k, v in config.items()}
    if op == "gemm":
        return lambda: plain.gemm[(_cdiv(shape["M"], c["BM"]), _cdiv(shape["N"], c["BN"]))](*args, **c)
    if op == "gemv":
        return lambda: plain.gemv[(_cdiv(shape["M"], c["BM"]),)](*args, **c)
    if op == "quant_gemv":
        return lambda: quant_gemv_kernel[(_cdiv(shape["M"], c["BM"]),)](*args, **c)
    if op == "attention":
        return lambda: attention_kernel[(_cdiv(shape["N"], c["BM"]), shape["H"])](*args, D=shape["D"], **c)
    if op == "quant_gemm":
        from ops.quant import quant_gemm_kernel
        bits = shape.get("bits", 4)
        grid = (_cdiv(shape["M"], c["BM"]), _cdiv(shape["N"] * bits // 8, c["BNB"]))
        return lambda: quant_gemm_kernel[grid](*args, G=shape["group_size"], BITS=bits, SYMMETRIC=True, **c)
    if op == "lut_gemm":
        from ops.lut_gemm import lut_gemm_kernel
        grid = (_cdiv(shape["M"], c["BM"]), _cdiv(shape["N"], c["BN"]))
        return lambda: lut_gemm_kernel[grid](*args, G=shape["group_size"], Q=shape.get("bits", 3),
                                             HAS_OFFSET=False, **c)
    raise ValueError(op)


def measure(op: str, shape: dict, config: dict, repeats: int = 30, budget_s: float = 1.0, seed: int = 0) -> dict:
    """One record, after a warm-up launch checked against NumPy: the fastest of at least
    ``repeats`` launches. Single-threaded launches (``parallel=False``) are timed by the
    launching thread's CPU clock, which does not run while other processes hold the core, so
    a busy shared machine does not inflate them; parallel launches use the wall clock."""
    rng = np.random.default_rng(seed)
    args, ref = _inputs(op, shape, rng)
    run = _launch(op, shape, config, args)
    run()
    out = args[-2] if op == "attention" else args[-1]
    want = ref()
    if not np.allclose(out, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max() + 1)):
        raise AssertionError(f"{op} {shape} {config}: wrong result")
    clock = time.thread_time if config.get("parallel", True) is False else time.perf_counter
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats or (len(times) < 4 * repeats and time.perf_counter() < deadline):
        t = clock()
        run()
        times.append(clock() - t)
    return {"op": op, "shape": shape, "dtype": "float32", "config": config, "runtime_s": min(times),
            "median_s": statistics.median(times), "repeats": len(times), "clock": clock.__name__,
            "device": "host", "backend": "numba"}


# Single-threaded launches (parallel=False) of a few milliseconds, timed by CPU time: the
# machine these records come from is shared, and only this stays honest under load. The
# configs span good and poor tiles, as a tuner's space does.
PLAN = {
    "gemm": ([{"M": 256, "N": 256, "K": 256}, {"M": 384, "N": 256, "K": 320}, {"M": 200, "N": 300, "K": 500},
              {"M": 512, "N": 128, "K": 384}, {"M": 320, "N": 320, "K": 320}, {"M": 160, "N": 480, "K": 256},
              {"M": 448, "N": 192, "K": 256}, {"M": 128, "N": 384, "K": 448}, {"M": 250, "N": 250, "K": 400}],
             [{"BM": bm, "BN": bn, "BK": bk, "dot": d, "parallel": False} for (bm, bn, bk, d) in
              [(16, 16, 32, "blas"), (32, 32, 32, "blas"), (64, 64, 64, "blas"), (128, 128, 64, "blas"),
               (64, 128, 128, "blas"), (128, 64, 256, "blas"), (32, 128, 64, "blas"), (256, 256, 128, "blas"),
               (16, 64, 16, "loops"), (32, 32, 32, "loops"), (64, 64, 32, "loops"), (16, 128, 64, "loops")]]),
    "gemv": ([{"M": 1024, "K": 1024}, {"M": 2048, "K": 512}, {"M": 512, "K": 2048}, {"M": 1501, "K": 999},
              {"M": 4096, "K": 256}, {"M": 768, "K": 1536}, {"M": 3000, "K": 300}, {"M": 1200, "K": 800}],
             [{"BM": bm, "BK": bk, "parallel": False} for bm, bk in
              [(1, 128), (2, 64), (4, 16), (4, 256), (16, 64), (16, 512), (32, 128), (64, 1024), (128, 256),
               (256, 32)]]),
    "quant_gemv": ([{"M": 1024, "K": 1024, "wbits": 8}, {"M": 2048, "K": 1024, "wbits": 8},
                    {"M": 512, "K": 2048, "wbits": 8}, {"M": 1501, "K": 999, "wbits": 8},
                    {"M": 768, "K": 1536, "wbits": 8}, {"M": 3000, "K": 500, "wbits": 8}],
                   [{"BM": bm, "BK": bk, "parallel": False} for bm, bk in
                    [(1, 256), (4, 32), (8, 256), (16, 64), (32, 512), (64, 128), (128, 32), (64, 1024)]]),
    "attention": ([{"H": 1, "N": 256, "D": 64}, {"H": 2, "N": 128, "D": 64}, {"H": 1, "N": 384, "D": 64},
                   {"H": 1, "N": 200, "D": 64}, {"H": 1, "N": 320, "D": 64}, {"H": 3, "N": 96, "D": 64},
                   {"H": 1, "N": 448, "D": 64}, {"H": 2, "N": 160, "D": 64}],
                  [{"BM": bm, "BN": bn, "parallel": False} for bm, bn in
                   [(8, 16), (16, 16), (16, 64), (32, 32), (32, 128), (64, 64), (64, 16), (128, 64), (128, 128),
                    (256, 64)]]),
    # the op library's kernels: int4 codes in groups of 128 (4-bit, symmetric), 3-bit BCQ
    "quant_gemm": ([{"M": m, "N": n, "K": k, "bits": 4, "group_size": 128} for m, n, k in
                     [(1, 2048, 2048), (1, 4096, 1024), (4, 2048, 2048), (8, 1024, 2048), (1, 1536, 3072),
                     (3, 3072, 1024), (8, 2048, 1536)]],
                   [{"BM": bm, "BNB": bnb, "UNPACK": u, "dot": d, "parallel": False} for bm, bnb, u, d in
                    [(1, 64, "fused", "loops"), (1, 512, "fused", "loops"), (1, 128, "tile", "blas"),
                     (2, 32, "fused", "loops"), (4, 256, "fused", "loops"), (4, 128, "tile", "blas"),
                     (8, 256, "tile", "blas"), (8, 64, "tile", "blas"), (8, 16, "fused", "loops"),
                     (1, 256, "tile", "loops")]]),
    "lut_gemm": ([{"M": m, "N": n, "K": k, "bits": 3, "group_size": 128} for m, n, k in
                  [(1, 2048, 2048), (1, 4096, 1024), (4, 2048, 2048), (8, 1024, 2048), (1, 1536, 3072),
                   (3, 3072, 1024)]],
                 [{"BM": bm, "BN": bn, "MU": mu, "dot": "loops", "parallel": False} for bm, bn, mu in
                  [(1, 512, 4), (1, 64, 4), (1, 256, 8), (2, 128, 2), (4, 512, 4), (4, 32, 4), (8, 128, 4),
                   (1, 128, 1), (8, 512, 8)]]),
}


# More shapes of every family, none in PLAN, with PLAN's configs: grows the records to over
# 100 shapes for selection held out by shape. Measured with fewer repeats (--repeats 8).
EXTRA_SHAPES = {
    "gemm": [{"M": m, "N": n, "K": k} for m, n, k in
             [(192, 192, 192), (288, 160, 224), (96, 512, 256), (400, 200, 160), (224, 352, 288),
              (512, 64, 512), (136, 264, 328), (352, 96, 192), (176, 176, 640), (300, 200, 100)]],
    "gemv": [{"M": m, "K": k} for m, k in
             [(640, 640), (2500, 400), (256, 3072), (1800, 1100), (900, 900), (3500, 150), (1100, 2100),
              (700, 1300), (2048, 2048), (333, 777)]],
    "quant_gemv": [{"M": m, "K": k, "wbits": 8} for m, k in
                   [(640, 640), (2500, 400), (256, 3072), (1800, 1100), (900, 900), (1100, 2100),
                    (2048, 2048), (333, 777), (4000, 256), (1536, 768)]],
    "attention": [{"H": h, "N": n, "D": 64} for h, n in
                  [(1, 192), (1, 288), (2, 96), (1, 160), (4, 64), (1, 352), (2, 224), (1, 128), (3, 128),
                   (1, 416)]],
    "quant_gemm": [{"M": m, "N": n, "K": k, "bits": 4, "group_size": 128} for m, n, k in
                   [(1, 1024, 1024), (2, 2048, 1024), (1, 3072, 2048), (6, 1024, 1024), (1, 2048, 512),
                    (4, 1024, 3072), (2, 1536, 1536), (1, 512, 4096), (5, 2048, 1024)]],
    "lut_gemm": [{"M": m, "N": n, "K": k, "bits": 3, "group_size": 128} for m, n, k in
                 [(1, 1024, 1024), (2, 2048, 1024), (1, 3072, 2048), (6, 1024, 1024), (1, 2048, 512),
                  (4, 1024, 3072), (2, 1536, 1536), (1, 512, 4096), (5, 2048, 1024)]],
}


# per op, PLAN's configs (by index) with the least geometric-mean slowdown over PLAN's shapes
# in host_numba_records.jsonl, best first: the contenders a selection must tell apart
EXTRA_CONFIGS = {"gemm": [2, 3, 4, 5, 6], "gemv": [8, 6, 4, 3, 5], "quant_gemv": [5, 4, 2, 7, 3],
                 "attention": [5, 7, 3, 8, 6], "quant_gemm": [1, 4, 0, 9, 3], "lut_gemm": [0, 4, 2, 1, 6]}


def plan(name: str = "base") -> dict:
    """``base``: PLAN; ``extra``: EXTRA_SHAPES with EXTRA_CONFIGS of PLAN's configs."""
    if name == "base":
        return PLAN
    if name == "extra":
        return {op: (EXTRA_SHAPES[op], [configs[i] for i in EXTRA_CONFIGS[op]]) for op, (_, configs) in PLAN.items()}
    raise ValueError(f"plan must be 'base' or 'extra', got {name!r}")


def _key(op: str, shape: dict, config: dict) -> str:
    return json.dumps([op, shape, config], sort_keys=True)


def collect(ops=None, out=sys.stdout, progress=None, skip: set[str] = frozenset(), which: str = "base",
            repeats: int = 30, budget_s: float = 1.0) -> list[dict]:
    records = []
    # the i-th config of every op before the (i+1)-th: a run cut short still covers every op
    chosen = {op: v for op, v in plan(which).items() if not ops or op in ops}
    rounds = max((len(configs) for _, configs in chosen.values()), default=0)
    order = [(op, shape, configs[i]) for i in range(rounds) for op, (shapes, configs) in chosen.items()
             if i < len(configs) for shape in shapes]
    for op, shape, cfg in order:
        if _key(op, shape, cfg) in skip:
            continue
        rec = measure(op, shape, cfg, repeats=repeats, budget_s=budget_s)
        records.append(rec)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        if progress:
            progress(rec)
    return records


def merge_fastest(*passes: list[dict]) -> list[dict]:
    """Several collection passes -> one record per (op, shape, config): the fastest, with the
    spread between passes kept as ``pass_spread`` (max / min), a measure of the noise."""
    best: dict[str, dict] = {}
    spread: dict[str, list[float]] = {}
    for records in passes:
        for r in records:
            key = _key(r["op"], r["shape"], r["config"])
            spread.setdefault(key, []).append(r["runtime_s"])
            if key not in best or r["runtime_s"] < best[key]["runtime_s"]:
                best[key] = dict(r)
    for key, r in best.items():
        r["pass_spread"] = max(spread[key]) / min(spread[key])
        r["passes"] = len(spread[key])
    return list(best.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", help="JSON-lines file to write")
    ap.add_argument("--ops", nargs="*", help=f"subset of {list(PLAN)}")
    ap.add_argument("--plan", choices=("base", "extra"), default="base", help="PLAN's shapes or EXTRA_SHAPES")
    ap.add_argument("--repeats", type=int, default=30, help="launches timed per record (at least)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per record beyond the first repeats")
    ap.add_argument("--skip", nargs="+", default=[], metavar="DONE.jsonl",
                    help="leave out what these files already measured")
    ap.add_argument("--merge", nargs="+", metavar="PASS.jsonl",
                    help="instead of measuring, merge earlier passes into OUT (fastest of each)")
    args = ap.parse_args(argv)
    from . import records as R
    if args.merge:
        passes = [[json.loads(line) for line in open(p) if line.strip()] for p in args.merge]
        hosts = [R.load_host_figures(p) for p in args.merge]
        known = [h for h in hosts if h is not None]
        if any(h != known[0] for h in known[1:]) or (known and len(known) < len(hosts)):
            print(f"warning: the passes' host figures differ ({[str(R.host_sidecar(p)) for p in args.merge]}); "
                  f"{args.out} keeps the first pass's", file=sys.stderr)
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in merge_fastest(*passes))
        R.write_host_figures(args.out, known[0] if known else None)
        return 0
    host = R.host_figures()
    if host["calibration"] is None:
        print("warning: this host is not calibrated (`tilec profiles calibrate`): the records' sidecar "
              "keeps its detected estimates", file=sys.stderr)
    R.write_host_figures(args.out, host)
    with open(args.out, "w") as f:
        skip = {_key(r["op"], r["shape"], r["config"]) for p in args.skip for r in map(json.loads, open(p)) if r}
        collect(args.ops, f, skip=skip, which=args.plan, repeats=args.repeats, budget_s=args.budget, progress=lambda r: print(r["op"], r["shape"], r["config"], f"{r['runtime_s'] * 1e3:.3f} ms",
                                            file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
