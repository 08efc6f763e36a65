"""Kernel descriptions (warp layout, split-K, dtypes, layouts, instruction shape, register
tiles) and the analytical GPU model's use of them; the CLTune SGEMM counted from its
index arithmetic and ranked on the UCI data without training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hw_profiles
from autotune.cost import cltune
from autotune.cost import records as R
from autotune.cost.analytical import predict
from autotune.cost.features import analyse
from autotune.cost.kernel import describe
from autotune.cost.kernel import apply as apply_kernel
from autotune.cost.workload import from_description, workload_for
from tilec.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SHARED = next((p for p in (REPO.parent / "shared", Path("/work/shared")) if (p / "datasets").is_dir()), None)
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared datasets are not present")
A100 = hw_profiles.load("a100_sxm4_80gb")


def gemm(shape, cfg, dtype="float16", **kd):
    w = workload_for("gemm", dict(zip("MNK", shape)), dtype, cfg)
    return w, predict(w, A100, describe("gemm", w.shape, dtype, {**cfg, **kd}))


def test_output_dtype_prices_the_epilogue():
    """f16 inputs, f32 output: 2 more bytes per output element, and no faster."""
    cfg = {"BM": 128, "BN": 128, "BK": 32, "num_warps": 8, "num_stages": 3}
    w = workload_for("gemm", {"M": 8192, "N": 8192, "K": 64}, "float16", cfg)
    k16, k32 = describe("gemm", w.shape, "float16", cfg), describe("gemm", w.shape, "float16", {**cfg, "out_dtype": "float32"})
    assert apply_kernel(w, k32).bytes - apply_kernel(w, k16).bytes == 8192 * 8192 * 2
    assert predict(w, A100, k32).runtime_s > predict(w, A100, k16).runtime_s


def test_split_k_helps_skinny_outputs_and_costs_on_large_ones():
    cfg = {"BM": 64, "BN": 64, "BK": 64, "num_warps": 4, "num_stages": 3}
    w, one = gemm((128, 128, 65536), cfg)
    _, eight = gemm((128, 128, 65536), cfg, split_k=8)
    assert eight.runtime_s < one.runtime_s / 2          # 4 programs on 108 SMs -> 32
    _, big1 = gemm((8192, 8192, 4096), cfg)
    _, big4 = gemm((8192, 8192, 4096), cfg, split_k=4)
    assert big4.runtime_s > big1.runtime_s               # already many waves: only the reduction shows
    ws = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "split_k": 8}))
    assert ws.programs == 8 * w.programs and ws.bytes == w.bytes + 2 * 8 * 128 * 128 * 4


def test_stream_k_removes_the_partial_last_wave():
    """1536 x 1536 in 128 x 128 tiles: 144 programs on 108 SMs (one each) run as a full wave
    and a third-full one; stream-K spreads the same work evenly."""
    cfg = {"BM": 128, "BN": 128, "BK": 32, "num_warps": 8, "num_stages": 3}
    w, plain = gemm((1536, 1536, 8192), cfg)
    _, sk = gemm((1536, 1536, 8192), cfg, stream_k=True)
    assert plain.feasible and plain.features["programs_per_cu"] == 1
    assert plain.features["wave_efficiency"] == pytest.approx(144 / 216) and sk.features["wave_efficiency"] == 1.0
    assert sk.features["t_compute"] == pytest.approx(plain.features["t_compute"] * 144 / 216)
    assert sk.runtime_s < plain.runtime_s


def test_warp_layout_changes_the_shared_memory_reads():
    """BM=128, BN=32, 8 warps: 8x1 warps read 16 rows of A + all 32 columns of B each,
    1x8 read all 128 rows of A + 4 columns of B each: 132/48 = 2.75x the shared-memory bytes."""
    cfg = {"BM": 128, "BN": 32, "BK": 32, "num_warps": 8, "num_stages": 3}
    w = workload_for("gemm", {"M": 4096, "N": 4096, "K": 4096}, "float16", cfg)
    a = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 8, "warps_n": 1}))
    b = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 1, "warps_n": 8}))
    assert b.traffic["local"] / a.traffic["local"] == pytest.approx((128 + 4) / (16 + 32))
    pa = predict(w, A100, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 8, "warps_n": 1}))
    pb = predict(w, A100, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 1, "warps_n": 8}))
    assert pb.features["t_SMEM"] > pa.features["t_SMEM"] and pb.runtime_s >= pa.runtime_s
    # warps along K read less each but reduce their partial tiles through shared memory
    k2 = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 4, "warps_n": 1, "warps_k": 2}))
    k1 = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 4, "warps_n": 1}))
    # 4x1x2: 8 warps each read 32 x 16 of A and 16 x 32 of B, as many bytes as 4x1's 4 warps
    # reading 32 x 32 + 32 x 32; then one partial 128 x 32 fp32 tile written and read per program
    programs = 32 * 128
    assert k2.traffic["local"] - k1.traffic["local"] == programs * 128 * 32 * 4 * 2


def test_layout_with_short_runs_wastes_sectors():
    """BK=8 fp16: a row-major A tile runs 16 bytes along K, half a sector; column-major A runs
    BM x 2 = 256 bytes."""
    cfg = {"BM": 128, "BN": 128, "BK": 8, "num_warps": 4, "num_stages": 2}
    w = workload_for("gemm", {"M": 4096, "N": 4096, "K": 4096}, "float16", cfg)
    row = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "layout_a": "row"}))
    col = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "layout_a": "col"}))
    assert row.traffic["dram"] - col.traffic["dram"] == 4096 * 4096 * 32 * 2       # A read gn=32 times, doubled
    assert col.traffic["dram"] == w.traffic["dram"]


def test_instruction_shape_pads_warp_tiles():
    """Warp tile 48 x 32 on a 32 x 32 instruction: 64 x 32 computed, 75% useful."""
    cfg = {"BM": 96, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 3}
    w, plain = gemm((4096, 4096, 4096), cfg, warps_m=2, warps_n=2)
    _, padded = gemm((4096, 4096, 4096), cfg, warps_m=2, warps_n=2, mma_m=32, mma_n=32, mma_k=16)
    wk = apply_kernel(w, describe("gemm", w.shape, "float16", {**cfg, "warps_m": 2, "warps_n": 2, "mma_shape": [32, 32, 16]}))
    assert wk.work_efficiency == pytest.approx(w.work_efficiency * 0.75) and wk.dot_shape == (32, 32, 16)
    assert plain.feasible and padded.features["t_compute"] == pytest.approx(plain.features["t_compute"] / 0.75)
    assert padded.runtime_s >= plain.runtime_s and padded.energy_j > plain.energy_j


@pytest.mark.parametrize("field,value", [("warps_m", 0), ("split_k", 1.5), ("layout_b", "diagonal"),
                                         ("out_dtype", "float13"), ("mma_shape", [16, 16])])
def test_bad_kernel_descriptions_name_the_field(field, value):
    with pytest.raises(InputError, match=field):
        describe("gemm", {"M": 64, "N": 64, "K": 64}, "float16", {"BM": 64, "BN": 64, "BK": 32}, {field: value})


def test_record_extra_beats_config():
    k = describe("gemm", {}, "float16", {"split_k": 2}, {"split_k": 4, "warps_m": 2})
    assert k.split_k == 4 and k.warps_m == 2


# -- CLTune gemm_fast (UCI SGEMM, GTX 680) ---------------------------------------------------
BASE = {"MWG": 64, "NWG": 64, "KWG": 16, "MDIMC": 16, "NDIMC": 16, "MDIMA": 16, "NDIMB": 16, "KWI": 2,
        "VWM": 1, "VWN": 1, "STRM": 1, "STRN": 1, "SA": 1, "SB": 1}


def test_cltune_access_counts_by_hand():
    # MDIMC=32: a warp's 32 threads take 32 consecutive words (strided access): 1 wavefront, 4 sectors
    assert cltune._private(32, 8, 1, 1, 1, True) == (1, 1, 4)
    # blocked access, MWI=4: thread i takes words 4i..4i+3, one per instruction: stride 4 words
    # puts 4 threads on each of 8 banks (4 wavefronts) and spreads the warp over 16 sectors
    assert cltune._private(32, 8, 4, 1, 0, True) == (4, 16, 64)
    # B is indexed by local id 1: with MDIMC=16 a warp holds 2 of them (16-fold broadcast)
    assert cltune._private(16, 16, 1, 1, 1, False) == (1, 1, 1)


def test_cltune_spills_are_priced_not_excluded():
    """Register tiles 4x4 (16 + 8 operands + 16 = 40 registers, within Kepler's 63), 8x8 (96:
    spills) and 16x16 (304: spills more): all finite, each slower than the last, the
    spilling ones flagged."""
    gtx = hw_profiles.load("gtx680")
    out = []
    for mwg, mdimc in ((64, 16), (64, 8), (128, 8)):
        cfg = {**BASE, "MWG": mwg, "NWG": mwg, "MDIMC": mdimc, "NDIMC": mdimc, "MDIMA": mdimc, "NDIMB": mdimc}
        shape = {"M": 2048, "N": 2048, "K": 2048}
        w = from_description("gemm_cltune", shape, "float32", cfg, cltune.description(shape, cfg))
        out.append(predict(w, gtx, describe("gemm_cltune", w.shape, "float32", cfg)))
    assert all(np.isfinite(p.runtime_s) for p in out)
    assert out[0].feasible and not out[1].feasible and not out[2].feasible
    assert out[0].runtime_s < out[1].runtime_s < out[2].runtime_s


@needs_shared
def test_uci_sgemm_ranked_without_training():
    """Spearman of the analytical model's runtime against the measured one over every row of a
    3,000-row sample (none fitted to it), spilling configs included."""
    from autotune.cost.evaluate import spearman
    recs = R.load_uci_sgemm(SHARED / "datasets/uci_sgemm_gtx680/sgemm_product.csv", limit=3000, seed=11)
    preds = [analyse(r)[1] for r in recs]
    y = np.array([r.runtime_s for r in recs])
    p = np.array([q.runtime_s for q in preds])
    assert np.isfinite(p).all()
    assert spearman(y, p) >= 0.8
