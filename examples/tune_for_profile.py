"""Tune GEMM tiles for GPUs this machine does not have, with the cost model standing in for
the device, then look at what each profile's best config is bound by.

    python examples/tune_for_profile.py [--trials 40]
"""
from __future__ import annotations

import argparse
import tempfile

from autotune.run import tune_op
from autotune.cost import analytical
from autotune.cost.workload import workload_for
import hw_profiles

SHAPE = {"M": 4096, "N": 4096, "K": 4096}


def main(trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/tuning.db"  # a throwaway study; leave it out to keep results
        for name in ("a100_sxm4_80gb", "h100_sxm", "rtx4090", "l4"):
            result, _key = tune_op("gemm", SHAPE, "float16", profile=name, n_evals=trials, storage=storage,
                                   seed=0)
            best = result.best_config
            prediction = analytical.predict(workload_for("gemm", SHAPE, "float16", best), hw_profiles.load(name))
            tflops = 2 * 4096 ** 3 / prediction.runtime_s / 1e12
            print(f"{name:16s} best {best}  predicted {prediction.runtime_s * 1e3:.2f} ms "
                  f"({tflops:.0f} TFLOP/s, {prediction.energy_j:.2f} J), bound by {prediction.bound}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    main(parser.parse_args().trials)
