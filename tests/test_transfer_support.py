"""Synthetic Kernel Tuner caches of one kernel on several "devices" (each with its own
optimum), and a tuner process for the kill-and-resume test of a tune with transfer."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PARAMS = {"bx": [16, 32, 64, 128, 256, 512], "ty": [1, 2, 3, 4, 5, 6], "unroll": [0, 1, 2, 3]}
OPTIMA = {"A": (64, 2, 1), "B": (128, 3, 1), "C": (32, 4, 2), "D": (256, 1, 3)}


def cost(device: str, bx: int, ty: int, unroll: int) -> float:
    """A bowl around the device's optimum; a few configs fail, (512, 6, *) is not recorded."""
    ox, oy, ou = OPTIMA[device]
    steps = abs(PARAMS["bx"].index(bx) - PARAMS["bx"].index(ox))
    return 1.0 + 0.4 * steps + 0.3 * abs(ty - oy) + 0.2 * abs(unroll - ou)


def write_cache(path: Path, device: str, name: str | None = None, clocks: tuple = ()) -> Path:
    cache, keys = {}, ["bx", "ty", "unroll"] + (["clock"] if clocks else [])
    for bx in PARAMS["bx"]:
        for ty in PARAMS["ty"]:
            for u in PARAMS["unroll"]:
                if (bx, ty) == (512, 6):
                    continue
                for clk in clocks or (None,):
                    dev = device if clk is None else "ABCD"[clocks.index(clk)]
                    entry = {"bx": bx, "ty": ty, "unroll": u, "time": cost(dev, bx, ty, u)}
                    if clk is not None:
                        entry["clock"] = clk
                    if bx == 16 and u == 3:
                        entry["time"] = "CompilationFailedConfig"
                    cache[",".join(str(entry[k]) for k in keys)] = entry
    tune_params = {**PARAMS, **({"clock": list(clocks)} if clocks else {})}
    data = {"device_name": name or f"GPU {device}", "kernel_name": "k", "objective": "time",
            "tune_params_keys": keys, "tune_params": tune_params, "cache": cache}
    path.write_text(json.dumps(data))
    return path


def worker(target: str, others: str, storage: str, n: int, sleep_s: float, log: str) -> None:
    from autotune.evaluators import replay
    from autotune.transfer import Transfer
    from autotune.tuner import tune

    recorded = replay.load(target)
    transfer = Transfer.from_files(recorded, others.split(","))
    inner = recorded.evaluator()

    def evaluate(cfg):
        time.sleep(sleep_s)
        return inner(cfg)

    def progress(info):
        with open(log, "a") as f:
            f.write(json.dumps(info["record"]["config"], sort_keys=True) + "\n")

    res = tune(recorded.space(), evaluate, n_evals=n, study_name="transfer", storage=storage,
               strategy="portfolio", seed=0, seeds=transfer.seeds(), prior=transfer.prior(), progress=progress)
    print(json.dumps({"evaluations": res.evaluations, "evaluated_now": res.evaluated_now}))


if __name__ == "__main__":
    _, target, others, storage, n, sleep_s, log = sys.argv
    worker(target, others, storage, int(n), float(sleep_s), log)
