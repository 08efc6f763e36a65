"""Torch models at batch size: tilec Linear layers and quantized models against torch on the CPU,
in the same run (interleaved, medians, ratios).

    python -m bench torch_models [--repeats 7] [--quick] [--json bench/results/torch_models.json]

Cases: Linear 384->1536 and 1536->384 at M = 1, 8, 128, 4096 and a 1024^3 GEMM (tilec fp32 vs
torch.matmul, MKL/oneDNN; the layers, tilec Linear vs nn.Linear, beside them); the fused GEMM +
GELU / SiLU epilogue vs torch's matmul then the activation; the encoder's Linear shapes at
M=4096 as int4 layers beside fp32 ones; a transformers BertModel built from a config (hidden
384, 6 layers, 12 heads, intermediate 1536, random weights): forward at batch 32 x 128 with
tilec fp32 Linears and with ``quantize_model(..., "int4")``, and at 1 x 16 tokens int4 (also
with ``act_quant="int8"``) vs torch fp32, outputs compared with the float model holding the same
dequantized weights.
"""
from __future__ import annotations

import argparse
import copy
import os

import torch
from rich.console import Console
from rich.table import Table

import ops
import ops.torch

from .timing import cpu_times, interleaved, machine, report_steal, write_json

F = torch.nn.functional


def _row(case: str, times: dict, peer: str) -> dict:
    return {"case": case, "ms": {k: v * 1e3 for k, v in times.items()},
            "vs_" + peer.replace(" ", "_"): {k: times[peer] / v for k, v in times.items() if k != peer}}


def bench_linear(shapes, repeats: int) -> list[dict]:
    """The GEMM as the custom op (``torch.ops.tilec.gemm``, through torch's dispatcher) against
    torch.matmul, and the layers a model holds: tilec ``Linear`` against ``nn.Linear``, both with
    bias, sharing one weight."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        x, lin = torch.randn(m, k, generator=g), torch.nn.Linear(k, n)
        wt, layer = lin.weight.detach().t(), ops.torch.Linear.from_linear(lin)
        with torch.inference_mode():
            times = interleaved({"torch": lambda: torch.matmul(x, wt),
                                 "tilec": lambda: torch.ops.tilec.gemm(x, wt, None, None, 1.0),
                                 "torch Linear": lambda: lin(x), "tilec Linear": lambda: layer(x)}, repeats=repeats)
        rows.append(_row(f"linear M={m} {k}->{n} fp32", times, "torch"))
        _show(rows[-1])
    return rows


def bench_int4_layers(repeats: int, m: int = 4096) -> list[dict]:
    """The encoder's Linear shapes at M=4096 as int4 layers (the dequantized-tile form) beside
    tilec's fp32 layer and torch's: a quantized layer at large M should cost about a float one."""
    rows = []
    g = torch.Generator().manual_seed(3)
    for k, n in ((384, 384), (384, 1536), (1536, 384)):
        lin = torch.nn.Linear(k, n)
        fp32, int4 = ops.torch.Linear.from_linear(lin), ops.torch.quantize_linear(lin, "int4", group_size=128)
        x = torch.randn(m, k, generator=g)
        with torch.inference_mode():
            times = interleaved({"torch": lambda: lin(x), "tilec fp32": lambda: fp32(x), "tilec int4": lambda: int4(x)},
                                repeats=repeats)
        row = _row(f"linear M={m} {k}->{n} int4 layer", times, "torch")
        row["int4_vs_tilec_fp32"] = times["tilec fp32"] / times["tilec int4"]
        rows.append(row)
        _show(rows[-1])
    return rows


def bench_epilogue(repeats: int, m: int = 4096, k: int = 384, n: int = 1536) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g), torch.randn(n, generator=g)
    for act, fn in (("gelu", F.gelu), ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh")), ("silu", F.silu)):
        times = interleaved({"torch": lambda fn=fn: fn(torch.addmm(b, x, w)),
                             "tilec fused": lambda act=act: torch.ops.tilec.gemm(x, w, b, act, 1.0)},
                            repeats=repeats)
        rows.append(_row(f"linear+{act} M={m} {k}->{n} fp32", times, "torch"))
        _show(rows[-1])
    return rows


def _bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                     attn_implementation="sdpa")
    torch.manual_seed(0)
    return BertModel(cfg).eval()


def bench_bert(repeats: int, batches=((1, 16), (32, 128))) -> list[dict]:
    model = _bert()
    tilec_fp32 = copy.deepcopy(model)
    ops.torch.linear_model(tilec_fp32)
    int4 = copy.deepcopy(model)
    names = ops.torch.quantize_model(int4, "int4", group_size=128)
    int4_q8 = copy.deepcopy(model)                  # the decode form: inputs to int8, integer dots
    ops.torch.quantize_model(int4_q8, "int4", group_size=128, act_quant="int8")
    dequant = copy.deepcopy(model)                  # float model with the int4 model's weights
    for name in names:
        dequant.get_submodule(name).weight.data.copy_(int4.get_submodule(name).weight)
    rows = []
    for bsz, seq in batches:
        ids = torch.randint(0, model.config.vocab_size, (bsz, seq), generator=torch.Generator().manual_seed(2))
        run = {"torch": lambda: model(ids), "tilec fp32": lambda: tilec_fp32(ids), "tilec int4": lambda: int4(ids)}
        if bsz * seq > 64:
            run["torch int4-dequantized"] = lambda: dequant(ids)
        else:
            run["tilec int4 act_quant"] = lambda: int4_q8(ids)
        with torch.inference_mode():
            times = interleaved(run, repeats=repeats)
            out = {k: fn().last_hidden_state for k, fn in run.items()}
            ref_q = dequant(ids).last_hidden_state
        row = _row(f"bert 6x384 forward {bsz}x{seq}", times, "torch")
        row["max_abs_diff"] = {"tilec fp32 vs torch": float((out["tilec fp32"] - out["torch"]).abs().max()),
                               "tilec int4 vs torch with dequantized weights":
                                   float((out["tilec int4"] - ref_q).abs().max())}
        row["int4_cosine_to_fp32"] = float(F.cosine_similarity(out["tilec int4"].flatten(1),
                                                               out["torch"].flatten(1)).min())
        if "tilec int4 act_quant" in out:
            row["int4_act_quant_cosine_to_fp32"] = float(F.cosine_similarity(
                out["tilec int4 act_quant"].flatten(1), out["torch"].flatten(1)).min())
        rows.append(row)
        _show(row)
    return rows


def _show(row: dict) -> None:
    """One line per case as it finishes (the BERT cases take minutes on a loaded machine)."""
    print(row["case"], " ".join(f"{k} {v:.2f}ms" for k, v in row["ms"].items()), "| x torch:",
          " ".join(f"{k} {v:.2f}" for k, v in row["vs_torch"].items()), flush=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench torch_models")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="skip the BERT model")
    p.add_argument("--bert-repeats", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    before = cpu_times()
    shapes = [(m, k, n) for m in (1, 8, 128, 4096) for k, n in ((384, 1536), (1536, 384))] + [(1024, 1024, 1024)]
    load_before = os.getloadavg()
    results = bench_linear(shapes, args.repeats) + bench_epilogue(args.repeats) + bench_int4_layers(args.repeats)
    if not args.quick:
        results += bench_bert(args.bert_repeats)
    console = Console()
    t = Table(title=f"torch models (median of {args.repeats}, interleaved, same run)")
    for col in ("case", "ms", "x torch"):
        t.add_column(col)
    for r in results:
        t.add_row(r["case"], "  ".join(f"{k} {v:.2f}" for k, v in r["ms"].items()),
                  "  ".join(f"{k} {v:.2f}" for k, v in r["vs_torch"].items()))
    console.print(t)
    payload = {"machine": {**machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                           "cpu_steal": report_steal(before, console), "load_average_before": load_before,
                           "load_average_after": os.getloadavg()}, "results": results}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
