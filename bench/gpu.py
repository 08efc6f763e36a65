"""GPU day one: one command that checks and measures tilec on a CUDA GPU, within a time budget.

    python -m bench gpu --budget 600 --json bench/results/gpu-<device>.json
    python -m bench gpu --dry-run          # no GPU: every step reached, GPU work skipped

Steps, in priority order (a step whose estimate exceeds the time left is skipped and says so):
  1. correctness of every op on the Triton and CUDA backends against the NumPy reference, with
     Torch and CuPy arrays in and out, in every dtype the op declares;
  2. timings against the peers in the same run (torch.matmul/cuBLAS, SDPA, FlashAttention if
     installed, torch's int4 kernel, dequantize-then-cuBLAS), TFLOP/s and GB/s against the
     profile's peaks;
  3. a short measured tune of GEMM fp16 4096^3 on Triton beside the cost model's prediction for
     the same configs on the matching profile (Spearman);
  4. energy through NVML (power sampled during repeated runs, energy per run) beside the energy
     model's prediction;
  5. ptxas registers/shared memory of what ran against the cost model's estimates.
The results file is rewritten after every step, so a run cut off by its lease still leaves
what it measured. ``bench/gpu.sh`` sets up a bare device machine (wheels carried in, no network).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Peak figures and the cost model come from the profile a device name maps to.
PROFILE_BY_NAME = [("H200", "h200"), ("H100 PCIe", "h100_pcie"), ("H100", "h100_sxm"),
                   ("A100-PCIE-40GB", "a100_pcie_40gb"), ("A100-SXM4-40GB", "a100_sxm4_40gb"), ("A100", "a100_sxm4_80gb"),
                   ("L4", "l4"), ("RTX 4090", "rtx4090"), ("RTX 4070", "rtx4070"), ("RTX 4000 Ada", "rtx4000_ada"),
                   ("RTX 3090", "rtx3090"), ("RTX A4000", "rtx_a4000"), ("2080 Ti", "rtx2080ti")]
GEMM_TUNE_SHAPE = {"M": 4096, "N": 4096, "K": 4096}


def profile_for(device_name: str) -> str | None:
    """The hw_profiles name for a CUDA device name (``torch.cuda.get_device_name``), or None."""
    for needle, name in PROFILE_BY_NAME:
        if needle.lower() in device_name.lower():
            return name
    return None


# -- budget and report --------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    name: str
    estimate_s: float
    run: Callable[["Run"], Any]


class Run:
    """The budget, the device, and the results file written after every step."""

    def __init__(self, budget_s: float, out: Path | None, dry_run: bool):
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.out = out
        self.dry_run = dry_run
        self.gpu = None if dry_run else _gpu()
        self.results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                        "budget_s": budget_s, "dry_run": dry_run, "host": platform.node(),
                                        "device": self.gpu["name"] if self.gpu else None,
                                        "profile": profile_for(self.gpu["name"]) if self.gpu else "h100_sxm",
                                        "steps": {}}
        if self.gpu:
            self.results["gpu"] = self.gpu

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def say(self, line: str) -> None:
        print(line, flush=True)

    def save(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=_jsonable))
        tmp.replace(self.out)

    def step(self, step: Step) -> None:
        left = self.left()
        record: dict[str, Any] = {"estimate_s": step.estimate_s}
        if step.estimate_s > left:
            record.update(status="skipped", reason=f"estimated {step.estimate_s:.0f} s, {left:.0f} s left")
            self.say(f"== {step.name}: skipped ({record['reason']})")
        else:
            self.say(f"== {step.name} (estimated {step.estimate_s:.0f} s, {left:.0f} s left)")
            t = time.perf_counter()
            try:
                record["result"] = step.run(self)
                record["status"] = "done"
            except Exception as e:            # one failing step must not cost the others
                record.update(status="error", error=f"{type(e).__name__}: {e}",
                              traceback=traceback.format_exc()[-3000:])
                self.say(f"   error: {type(e).__name__}: {e}")
            record["spent_s"] = round(time.perf_counter() - t, 2)
            self.say(f"   {step.name}: {record['status']} in {record['spent_s']:.1f} s "
                     f"(estimated {step.estimate_s:.0f} s)")
        self.results["steps"][step.name] = record
        self.save()


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def _gpu() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "capability": f"sm_{p.major}{p.minor}",
            "multiprocessors": p.multi_processor_count, "memory_gib": round(p.total_memory / 2 ** 30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda}


# -- arrays on the device -----------------------------------------------------------------------

def to_device(x: Any, lib: str) -> Any:
    """NumPy arrays (also inside dataclasses such as QuantizedWeight) as ``lib`` CUDA arrays."""
    if isinstance(x, np.ndarray):
        if lib == "torch":
            import torch
            if x.dtype.name == "bfloat16":
                return torch.from_numpy(x.view(np.uint16).copy()).view(torch.bfloat16).cuda()
            return torch.from_numpy(np.ascontiguousarray(x)).cuda()
        import cupy
        return cupy.asarray(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        moved = {f.name: to_device(getattr(x, f.name), lib) for f in dataclasses.fields(x) if f.init}
        return dataclasses.replace(x, **moved)
    if isinstance(x, dict):
        return {k: to_device(v, lib) for k, v in x.items()}
    return x


def to_host(x: Any) -> Any:
    if isinstance(x, tuple):
        return tuple(to_host(v) for v in x)
    if hasattr(x, "detach"):                     # torch
        t = x.detach().cpu()
        return t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy()
    if hasattr(x, "get"):                        # cupy
        return x.get()
    return np.asarray(x)


def library_of(x: Any) -> str:
    if isinstance(x, tuple):
        return library_of(x[0])
    mod = type(x).__module__.split(".")[0]
    return {"torch": "torch", "cupy": "cupy"}.get(mod, "numpy")


def sync() -> None:
    import torch
    torch.cuda.synchronize()


def bench_ms(fn: Callable[[], Any], min_time_s: float = 0.2) -> float:
    """Median milliseconds of ``fn`` (CUDA events; Triton's do_bench with its L2 flush when there)."""
    try:
        from triton.testing import do_bench
        return float(do_bench(fn, return_mode="median"))
    except ImportError:
        import torch
        fn(), sync()
        times = []
        end_by = time.perf_counter() + min_time_s
        while time.perf_counter() < end_by or len(times) < 5:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(), fn(), e.record(), e.synchronize()
            times.append(s.elapsed_time(e))
        return float(np.median(times))


# -- step 1: correctness ------------------------------------------------------------------------

def correctness(run: Run) -> dict:
    import ops
    cases = []
    libs = {"triton": ("torch", "cupy"), "cuda": ("cupy", "torch")}
    for name, spec in ops.REGISTRY.items():
        shapes = spec.extra.get("test_shapes") or [spec.typical_shape()]
        for dtype in spec.dtypes:
            for backend, arrays in libs.items():
                for lib in arrays:
                    case = {"op": name, "dtype": dtype, "backend": backend, "arrays": lib, "shape": shapes[0]}
                    if run.dry_run:
                        case["status"] = "skipped: no GPU (dry run)"
                    else:
                        case.update(_check_case(spec, shapes[0], dtype, backend, lib))
                    cases.append(case)
                    if not run.dry_run:
                        run.say(f"   {name:28s} {dtype:9s} {backend:6s} {lib:5s} {case['status']}"
                                + (f" (max error {case['max_err']:.2e})" if "max_err" in case else ""))
    passed = sum(c["status"] == "ok" for c in cases)
    run.say(f"   {len(cases)} cases skipped: no GPU (dry run)" if run.dry_run
            else f"   {passed} of {len(cases)} cases correct")
    return {"cases": cases, "passed": passed, "total": len(cases)}


def _check_case(spec, shape: dict, dtype: str, backend: str, lib: str) -> dict:
    rng = np.random.default_rng(0)
    inputs = spec.make_inputs(shape, dtype, rng)
    ref = spec.reference(inputs)
    try:
        out = spec.run(to_device(inputs, lib), backend=backend)
        sync()
    except Exception as e:
        return {"status": f"error: {type(e).__name__}: {str(e)[:300]}"}
    got_lib = library_of(out)
    got, want = to_host(out), ref
    if isinstance(want, tuple):
        got, want = got[0], want[0]
    rtol, atol = spec.tolerance(dtype)
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol)
    status = "ok" if ok and got_lib == lib else (
        f"wrong arrays out: {got_lib}" if ok else f"wrong result (rtol {rtol}, atol {atol})")
    return {"status": status, "max_err": err}


# -- step 2: timings against the peers ----------------------------------------------------------

def timings(run: Run) -> dict:
    if run.dry_run:
        run.say("   skipped: no GPU (dry run); cases: " + ", ".join(c[0] for c in TIMING_CASES))
        return {"rows": [], "skipped": "no GPU (dry run)"}
    import hw_profiles
    prof = hw_profiles.load(run.results["profile"]) if run.results["profile"] else None
    rows = []
    for label, fn in TIMING_CASES:
        if run.left() < 30:
            run.say(f"   {label}: skipped (budget)")
            continue
        try:
            for row in fn():
                _rate(row, prof)
                rows.append(row)
                run.say("   " + _row_text(row))
        except Exception as e:
            rows.append({"case": label, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            run.say(f"   {label}: error {type(e).__name__}: {str(e)[:200]}")
        run.results["steps"].setdefault("timings_partial", {})["rows"] = rows
        run.save()
    run.results["steps"].pop("timings_partial", None)
    return {"rows": rows}


def _rate(row: dict, prof) -> None:
    """TFLOP/s, GB/s and their share of the profile's peaks, for tilec and each peer."""
    for who in [k[:-3] for k in row if k.endswith("_ms")]:
        ms = row[f"{who}_ms"]
        row[f"{who}_tflops"] = row["flops"] / ms / 1e9
        row[f"{who}_gbs"] = row["bytes"] / ms / 1e6
        if prof is not None:
            peak_flops = prof.peak_flops.get(row["peak"], None) if hasattr(prof, "peak_flops") else None
            dram = [m for m in prof.memory if m.name == "DRAM"]
            if peak_flops:
                row[f"{who}_of_peak_flops"] = row["flops"] / (ms / 1e3) / peak_flops
            if dram:
                row[f"{who}_of_peak_dram"] = row["bytes"] / (ms / 1e3) / dram[0].bandwidth_bytes_per_s
    for who in [k[:-3] for k in row if k.endswith("_ms") and k != "tilec_ms"]:
        row[f"tilec_vs_{who}"] = row[f"{who}_ms"] / row["tilec_ms"]


def _row_text(row: dict) -> str:
    parts = [f"{row['case']:34s} tilec {row['tilec_ms']:.3f} ms"]
    parts += [f"{who} {row[f'{who}_ms']:.3f} ms ({row[f'tilec_vs_{who}']:.2f}x)"
              for who in [k[:-3] for k in row if k.endswith("_ms") and k != "tilec_ms"]]
    return "  ".join(parts)


def _torch_dtype(name: str):
    import torch
    return getattr(torch, name)


def _gemm_cases():
    import torch

    import ops
    rows = []
    for dtype in ("float16", "bfloat16", "float32"):
        n = 4096
        a = torch.randn(n, n, device="cuda", dtype=_torch_dtype(dtype))
        b = torch.randn(n, n, device="cuda", dtype=_torch_dtype(dtype))
        for backend in ("triton", "cuda"):
            rows.append({"case": f"gemm {dtype} {n}^3 {backend}", "flops": 2.0 * n ** 3,
                         "bytes": 3.0 * n * n * a.element_size(), "peak": dtype,
                         "tilec_ms": bench_ms(lambda: ops.gemm(a, b, backend=backend)),
                         "cublas_ms": bench_ms(lambda: torch.matmul(a, b))})
    return rows


def _gemv_cases():
    import torch

    import ops
    rows = []
    for dtype in ("float16", "float32"):
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=_torch_dtype(dtype))
        x = torch.randn(n, device="cuda", dtype=_torch_dtype(dtype))
        rows.append({"case": f"gemv {dtype} {n}^2", "flops": 2.0 * n * n, "bytes": n * n * a.element_size(),
                     "peak": dtype, "tilec_ms": bench_ms(lambda: ops.gemv(a, x, backend="triton")),
                     "cublas_ms": bench_ms(lambda: torch.mv(a, x))})
    return rows


def _attention_cases():
    import torch
    import torch.nn.functional as F

    import ops
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    rows = []
    b, h, n, d = 4, 16, 2048, 64
    for causal in (False, True):
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.float16) for _ in range(3))
        flops = 4.0 * b * h * n * n * d / (2 if causal else 1)
        row = {"case": f"attention fp16 B{b} H{h} N{n} d{d}{' causal' if causal else ''}", "flops": flops,
               "bytes": 4.0 * b * h * n * d * 2, "peak": "float16",
               "tilec_ms": bench_ms(lambda: ops.attention(q, k, v, causal=causal, backend="triton")),
               "sdpa_ms": bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))}
        if flash_attn_func is not None:
            qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
            row["flash_attn_ms"] = bench_ms(lambda: flash_attn_func(qt, kt, vt, causal=causal))
        rows.append(row)
    # decode: one query token against a 16k-token cache, fp16 and the 2-bit KIVI cache
    b, h, hkv, cap, d = 1, 32, 8, 16384, 128
    qd = torch.randn(b, h, 1, d, device="cuda", dtype=torch.float16)
    kc, vc = (torch.randn(b, hkv, cap, d, device="cuda", dtype=torch.float16) for _ in range(2))
    lengths = torch.full((b,), cap, device="cuda", dtype=torch.int32)
    kr, vr = (t.repeat_interleave(h // hkv, dim=1) for t in (kc, vc))
    cache_bytes = 2.0 * b * hkv * cap * d * 2
    rows.append({"case": f"decode fp16 L{cap} H{h}/{hkv} d{d}", "flops": 4.0 * b * h * cap * d,
                 "bytes": cache_bytes, "peak": "float16",
                 "tilec_ms": bench_ms(lambda: ops.decode_attention(qd, kc, vc, lengths, backend="triton")),
                 "sdpa_ms": bench_ms(lambda: F.scaled_dot_product_attention(qd, kr, vr))})
    host = ops.quantize_kv(kc.float().cpu().numpy(), vc.float().cpu().numpy(), lengths.cpu().numpy(), bits=2)
    cache = to_device(host, "torch")
    rows.append({"case": f"decode 2-bit KIVI L{cap} H{h}/{hkv} d{d}", "flops": 4.0 * b * h * cap * d,
                 "bytes": cache_bytes / 8, "peak": "float16",
                 "tilec_ms": bench_ms(lambda: ops.decode_attention_quantized(qd, cache, backend="triton")),
                 "tilec_fp16_cache_ms": bench_ms(lambda: ops.decode_attention(qd, kc, vc, lengths, backend="triton"))})
    return rows


def _quant_cases():
    import torch

    import ops
    rows = []
    k = n = 8192
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    qw_host = ops.quantize(w, bits=4, group_size=128)
    qw = to_device(qw_host, "torch")
    w16 = torch.from_numpy(qw_host.dequantize()).to("cuda", torch.float16) if hasattr(qw_host, "dequantize") \
        else torch.from_numpy(w).to("cuda", torch.float16)
    int4_peer = _torch_int4(w16)
    bw_host = ops.bcq_quantize(w, bits=3, group_size=128)
    bw = to_device(bw_host, "torch")
    for m in (1, 16):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        row = {"case": f"int4 g128 M{m} K{k} N{n}", "flops": 2.0 * m * k * n, "bytes": k * n / 2, "peak": "float16",
               "tilec_ms": bench_ms(lambda: ops.quant_gemm(x, qw, backend="triton")),
               "dequant_cublas_ms": bench_ms(lambda: torch.matmul(x, w16))}
        if int4_peer is not None:
            row["torch_int4_ms"] = bench_ms(lambda: int4_peer(x))
        rows.append(row)
        rows.append({"case": f"lut 3-bit g128 M{m} K{k} N{n}", "flops": 2.0 * m * k * n, "bytes": k * n * 3 / 8,
                     "peak": "float16", "tilec_ms": bench_ms(lambda: ops.lut_gemm(x, bw, backend="triton")),
                     "dequant_cublas_ms": bench_ms(lambda: torch.matmul(x, w16))})
    return rows


def _torch_int4(w16):
    """torch's own int4 weight-only kernel (tinygemm) on w16 (K, N), or None where absent."""
    import torch
    try:
        wt = w16.t().contiguous().float()                     # (N, K)
        n, k = wt.shape
        g = 128
        grouped = wt.reshape(n, k // g, g)
        lo, hi = grouped.amin(-1, keepdim=True), grouped.amax(-1, keepdim=True)
        scale = ((hi - lo).clamp(min=1e-6) / 15)
        codes = ((grouped - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        packed = torch.ops.aten._convert_weight_to_int4pack(
            (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8), 8)
        zero = lo + 8 * scale                                 # tinygemm's zero point convention
        sz = torch.cat([scale, zero], -1).reshape(n, k // g, 2).transpose(0, 1).contiguous().to(torch.bfloat16)
        return lambda x: torch.ops.aten._weight_int4pack_mm(x.to(torch.bfloat16), packed, g, sz)
    except Exception:
        return None


TIMING_CASES = [("gemm", _gemm_cases), ("gemv", _gemv_cases), ("attention and decode", _attention_cases),
                ("quantized", _quant_cases)]


# -- step 3: measured tune vs the cost model ----------------------------------------------------

def tune_vs_model(run: Run, trials: int = 12) -> dict:
    from autotune.cost.analytical import predict
    from autotune.cost.workload import workload_for
    import ops
    profile = run.results["profile"] or "h100_sxm"
    spec = ops.REGISTRY["gemm"]
    if run.dry_run:
        # the modeled half runs for real: the configs the tune would start from, predicted
        configs = list(spec.space("triton").configs())[:trials]
        predicted = [predict(workload_for("gemm", GEMM_TUNE_SHAPE, "float16", c), profile).runtime_s for c in configs]
        run.say(f"   measured tune skipped: no GPU (dry run); {len(configs)} configs predicted on {profile}")
        return {"profile": profile, "predicted_s": predicted, "skipped": "no GPU (dry run)"}
    import tempfile

    from autotune.run import tune_op
    storage = f"sqlite:///{tempfile.mkdtemp()}/gpu-tune.db"
    result, key = tune_op("gemm", GEMM_TUNE_SHAPE, "float16", device="cuda", backend="triton", n_evals=trials,
                          storage=storage, seed=0)
    pairs = []
    for h in result.history:
        if h["value"] is None:
            continue
        p = predict(workload_for("gemm", GEMM_TUNE_SHAPE, "float16", h["config"]), profile)
        pairs.append({"config": h["config"], "measured_s": h["runtime_s"], "predicted_s": p.runtime_s,
                      "feasible": p.feasible})
    rho = spearman([p["measured_s"] for p in pairs], [p["predicted_s"] for p in pairs])
    run.say(f"   {len(pairs)} configs measured; best {result.best_config} {result.best_value}; "
            f"Spearman(predicted, measured) = {rho:.3f} on {profile}")
    return {"profile": profile, "best_config": result.best_config, "best_value": result.best_value,
            "pairs": pairs, "spearman": rho}


def spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# -- step 4: energy through NVML ----------------------------------------------------------------

class PowerSampler:
    """NVML power samples (W) every ``period_s`` on a thread, and the energy counter around them."""

    def __init__(self, period_s: float = 0.02):
        import pynvml
        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3)
            time.sleep(self.period_s)

    def measure(self, fn: Callable[[], Any], seconds: float = 2.0) -> dict:
        fn(), sync()
        idle = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3
        thread = threading.Thread(target=self._loop, daemon=True)
        e0 = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)   # mJ
        t0, runs = time.perf_counter(), 0
        thread.start()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                fn()
            runs += 10
            sync()
        elapsed = time.perf_counter() - t0
        e1 = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        self._stop.set(), thread.join()
        return {"runs": runs, "seconds": elapsed, "runtime_s": elapsed / runs, "energy_j": (e1 - e0) / 1e3 / runs,
                "power_w_mean": float(np.mean(self.samples)) if self.samples else None,
                "power_w_max": float(np.max(self.samples)) if self.samples else None, "power_w_before": idle}


def energy(run: Run) -> dict:
    from autotune.cost.analytical import predict
    from autotune.cost.workload import workload_for
    import ops
    profile = run.results["profile"] or "h100_sxm"
    config = ops.REGISTRY["gemm"].default_config(GEMM_TUNE_SHAPE, "triton")
    pred = predict(workload_for("gemm", GEMM_TUNE_SHAPE, "float16", config), profile)
    model = {"runtime_s": pred.runtime_s, "energy_j": pred.energy_j, "power_w": pred.power_w}
    if run.dry_run:
        run.say(f"   NVML skipped: no GPU (dry run); model on {profile}: {pred.energy_j * 1e3:.2f} mJ, "
                f"{pred.power_w:.0f} W")
        return {"profile": profile, "config": config, "model": model, "skipped": "no GPU (dry run)"}
    import torch
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    measured = PowerSampler().measure(lambda: ops.gemm(a, b, backend="triton", config=config))
    run.say(f"   gemm fp16 4096^3: {measured['energy_j'] * 1e3:.2f} mJ/run at {measured['power_w_mean']:.0f} W "
            f"(model {pred.energy_j * 1e3:.2f} mJ, {pred.power_w:.0f} W)")
    return {"profile": profile, "config": config, "model": model, "measured": measured,
            "energy_ratio_model_over_measured": pred.energy_j / measured["energy_j"]}


# -- step 5: ptxas figures vs estimates ---------------------------------------------------------

def resources(run: Run) -> dict:
    from autotune.cost.workload import workload_for
    from tilec.backends.triton.offline import compile_offline
    import ops
    arch = (run.gpu or {}).get("capability", "sm_90")
    rows = []
    configs = [ops.REGISTRY["gemm"].default_config(GEMM_TUNE_SHAPE, "triton")]
    tuned = ((run.results["steps"].get("tune vs cost model") or {}).get("result") or {}).get("pairs") or []
    configs += [p["config"] for p in tuned[:5]]
    seen = set()
    for cfg in configs:
        key = json.dumps(cfg, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        spec = ops.REGISTRY["gemm"]
        _, fn, _ = spec.launch_ir(GEMM_TUNE_SHAPE, "float16", cfg)
        options = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
        rep = compile_offline(fn, options, arch)
        w = workload_for("gemm", GEMM_TUNE_SHAPE, "float16", cfg)
        rows.append({"config": cfg, "arch": rep.arch, "registers": rep.registers, "spill_bytes": rep.spills_bytes,
                     "shared_bytes": rep.shared_bytes, "registers_estimate": w.registers_per_thread,
                     "shared_estimate": w.tile_bytes_local})
        run.say(f"   {cfg}: ptxas {rep.registers} regs, {rep.spills_bytes} B spills, {rep.shared_bytes} B shared; "
                f"estimate {w.registers_per_thread} regs, {w.tile_bytes_local} B")
    return {"arch": arch, "rows": rows}


STEPS = [Step("correctness", 240, correctness), Step("timings", 150, timings),
         Step("tune vs cost model", 90, tune_vs_model), Step("energy", 20, energy),
         Step("resources", 30, resources)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=600, help="seconds for all steps (default 600)")
    p.add_argument("--json", help="results file, rewritten after every step; 'auto': "
                   "bench/results/gpu-<profile or device>.json")
    p.add_argument("--dry-run", action="store_true", help="no GPU: reach every step, skip the GPU work")
    p.add_argument("--steps", nargs="+", choices=[s.name.split()[0] for s in STEPS],
                   help="run only these steps (by first word)")
    args = p.parse_args(argv)
    run = Run(args.budget, None, args.dry_run)
    if args.json == "auto":
        slug = run.results["profile"] if run.gpu else "dry-run"
        run.out = Path(__file__).parent / "results" / f"gpu-{slug}.json"
    elif args.json:
        run.out = Path(args.json)
    if run.gpu is None and not args.dry_run:
        print("bench gpu: no CUDA device visible to torch; use --dry-run to check the script without one",
              file=sys.stderr)
        return 2
    run.say(f"bench gpu: {run.results['device'] or 'no GPU (dry run)'}; profile {run.results['profile']}; "
            f"budget {args.budget:.0f} s")
    for step in STEPS:
        if args.steps and step.name.split()[0] not in args.steps:
            continue
        run.step(step)
    spent = {k: v.get("spent_s") for k, v in run.results["steps"].items()}
    run.results["spent_s"] = round(time.perf_counter() - run.t0, 1)
    run.save()
    run.say(f"bench gpu: done in {run.results['spent_s']:.0f} s of {args.budget:.0f}; per step {spent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
