"""Helpers shared by the tuner/database tests (no tests here): a small GEMM op around
ops.plain.gemm, and a worker entry point the crash and concurrency tests start as processes."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tilec.space import Param, Space
from ops.spec import OpSpec
from tilec.kernel import cdiv_host
from ops.plain import gemm


def gemm_spec(bm=(32, 64, 128, 256), bn=(32, 64, 128, 256), bk=(64, 256), default=None) -> OpSpec:
    def run(inputs, config=None, backend="numba"):
        a, b = inputs["a"], inputs["b"]
        c = np.empty((a.shape[0], b.shape[1]), np.float32)
        grid = (cdiv_host(a.shape[0], config["BM"]), cdiv_host(b.shape[1], config["BN"]))
        gemm[grid](a, b, c, backend=backend, **config)
        return c

    def make_inputs(shape, dtype, rng):
        return {"a": rng.standard_normal((shape["M"], shape["K"])).astype(np.float32),
                "b": rng.standard_normal((shape["K"], shape["N"])).astype(np.float32)}

    space = Space([Param("BM", tuple(bm)), Param("BN", tuple(bn)), Param("BK", tuple(bk))])
    return OpSpec(
        name="gemm", doc="test GEMM", kernels={"gemm": gemm}, shape_names=("M", "N", "K"),
        space=lambda backend: space,
        default_config=lambda shape, backend: dict(default or {"BM": 64, "BN": 64, "BK": 64}),
        make_inputs=make_inputs, run=run,
        reference=lambda inputs: inputs["a"].astype(np.float64) @ inputs["b"].astype(np.float64),
        flops=lambda s: 2.0 * s["M"] * s["N"] * s["K"],
        bytes=lambda s, dtype: 4.0 * (s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]),
        tolerance=lambda dtype: (1e-3, 1e-3))


def synthetic_space() -> Space:
    """A 4 x 4 x 3 space with one infeasible corner region."""
    return Space([Param("X", (1, 2, 4, 8)), Param("Y", (1, 2, 4, 8)), Param("Z", ("a", "b", "c"))],
                 [lambda c, p: "X*Y too large" if c["X"] * c["Y"] > 32 else None])


def synthetic_cost(cfg: dict) -> float:
    """A smooth bowl with its minimum at X=4, Y=2, Z=b."""
    return 1e-3 * (1 + (np.log2(cfg["X"]) - 2) ** 2 + (np.log2(cfg["Y"]) - 1) ** 2 + {"a": 0.5, "b": 0, "c": 1}[cfg["Z"]])


def worker(storage: str, study: str, n_evals: int, seed: int, sleep_s: float, out: str | None) -> None:
    """Tune the synthetic space on ``storage``; write the trial numbers this worker evaluated."""
    from autotune.evaluators import Measurement
    from autotune.tuner import tune

    def evaluate(cfg):
        time.sleep(sleep_s)
        return Measurement(synthetic_cost(cfg))

    def progress(info):
        if out:
            with open(out, "a") as f:
                f.write(json.dumps({"number": info["record"]["number"], "config": info["record"]["config"]}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    if out:                              # start line: the test lets all workers go at once
        from tilec.tuning.database import open_storage
        open_storage(storage)
        Path(out + ".ready").touch()
        deadline = time.time() + 120
        while not Path(out).with_name("go").exists() and time.time() < deadline:
            time.sleep(0.02)
    res = tune(synthetic_space(), evaluate, n_evals=n_evals, study_name=study, storage=storage,
               strategy="random", seed=seed, progress=progress)
    print(json.dumps({"evaluated_now": res.evaluated_now, "evaluations": res.evaluations}))


if __name__ == "__main__":
    _, storage, study, n, seed, sleep_s, out = sys.argv
    worker(storage, study, int(n), int(seed), float(sleep_s), out if out != "-" else None)
