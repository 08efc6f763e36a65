"""Offline compiles without a GPU: every kernel here, in a default and three other configs,
compiles for sm_80, sm_89 and sm_90 through triton.compile(..., target=GPUTarget(...)) with
no register spills and shared memory within the architecture's limit."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tilec.errors import TilecError
from ops.plain import gemm, gemv

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install 'tilec[triton]')")

ARCHS = ("sm_80", "sm_89", "sm_90")


def ir_of(kernel, arrays, constexprs):
    return kernel.ir(kernel.arg_types(arrays), constexprs)


def gemm_ir(dtype, BM, BN, BK):
    a = np.zeros((4, 4), dtype)
    c = np.zeros((4, 4), np.int32 if np.dtype(dtype).kind in "iu" else np.float32)
    return ir_of(gemm, [a, a, c], dict(BM=BM, BN=BN, BK=BK))


def gemv_ir(dtype, BM, BK):
    return ir_of(gemv, [np.zeros((4, 4), dtype), np.zeros(4, dtype), np.zeros(4, np.float32)], dict(BM=BM, BK=BK))


# (name, IR factory, options): the first of each kernel is its default
CASES = [
    ("gemm-f16 default", lambda: gemm_ir(np.float16, 64, 64, 32), dict(num_warps=4, num_stages=3)),
    ("gemm-f16 128x128x32", lambda: gemm_ir(np.float16, 128, 128, 32), dict(num_warps=8, num_stages=3)),
    ("gemm-f16 128x64x64", lambda: gemm_ir(np.float16, 128, 64, 64), dict(num_warps=4, num_stages=4)),
    ("gemm-f16 32x32x64", lambda: gemm_ir(np.float16, 32, 32, 64), dict(num_warps=2, num_stages=2)),
    ("gemm-f16 48x80x24 (padded)", lambda: gemm_ir(np.float16, 48, 80, 24), dict(num_warps=4, num_stages=3)),
    ("gemm-f32 default", lambda: gemm_ir(np.float32, 64, 64, 32), dict(num_warps=4, num_stages=3)),
    ("gemm-f32 128x64x32", lambda: gemm_ir(np.float32, 128, 64, 32), dict(num_warps=8, num_stages=3)),
    ("gemm-f32 32x32x32", lambda: gemm_ir(np.float32, 32, 32, 32), dict(num_warps=2, num_stages=2)),
    ("gemm-f32 64x32x16", lambda: gemm_ir(np.float32, 64, 32, 16), dict(num_warps=4, num_stages=4)),
    ("gemm-i8 default", lambda: gemm_ir(np.int8, 64, 64, 32), dict(num_warps=4, num_stages=3)),
    ("gemm-i8 64x64x16", lambda: gemm_ir(np.int8, 64, 64, 16), dict(num_warps=4, num_stages=3)),
    ("gemm-u8 64x64x64", lambda: gemm_ir(np.uint8, 64, 64, 64), dict(num_warps=4, num_stages=3)),
    ("gemv-f16 default", lambda: gemv_ir(np.float16, 64, 64), dict(num_warps=4, num_stages=3)),
    ("gemv-f16 128x128", lambda: gemv_ir(np.float16, 128, 128), dict(num_warps=8, num_stages=2)),
    ("gemv-f32 32x256", lambda: gemv_ir(np.float32, 32, 256), dict(num_warps=4, num_stages=4)),
    ("gemv-f32 16x64", lambda: gemv_ir(np.float32, 16, 64), dict(num_warps=1, num_stages=1)),
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,make_ir,options", CASES, ids=[c[0] for c in CASES])
def test_compiles_without_spills(name, make_ir, options, arch):
    from tilec.backends.triton import compile_offline
    report = compile_offline(make_ir(), options, arch)
    assert report.arch == arch
    assert report.num_warps == options["num_warps"] and report.num_stages == options["num_stages"]
    assert 0 < report.registers <= 255
    assert report.spills_bytes == 0, report.ptxas_log
    assert report.shared_bytes <= report.shared_limit_bytes
    assert report.feasible and report.ptx_lines > 50
    if name.startswith("gemm") and options["num_stages"] > 1:
        assert report.shared_bytes > 0   # the pipelined K loop stages its tiles in shared memory


def test_report_is_cached_as_json_and_round_trips(tmp_path, monkeypatch):
    from tilec.backends.triton import CompileReport, compile_offline
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path))
    fn = gemm_ir(np.float16, 64, 64, 32)
    first = compile_offline(fn, {"num_warps": 4}, "sm_80")
    files = list((tmp_path / "triton" / "reports").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["registers"] == first.registers and data["feasible"] is True
    assert CompileReport.from_dict(data) == first
    assert compile_offline(fn, {"num_warps": 4}, "sm_80") == first
    files[0].write_text("{not json")   # a damaged report is rebuilt, not trusted
    assert compile_offline(fn, {"num_warps": 4}, "sm_80").registers == first.registers


def test_more_warps_change_the_figures():
    from tilec.backends.triton import compile_offline
    fn = gemm_ir(np.float32, 64, 64, 32)
    small = compile_offline(fn, {"num_warps": 2, "num_stages": 2}, "sm_80")
    big = compile_offline(fn, {"num_warps": 8, "num_stages": 2}, "sm_80")
    assert big.registers < small.registers   # the same 64x64 accumulator over 4x the threads


def test_ptxas_log_parsing():
    from tilec.backends.triton.offline import parse_ptxas_log
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
           "ptxas info    : Function properties for k\n"
           "    6400 bytes stack frame, 8660 bytes spill stores, 13712 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 6400 bytes cumulative stack size\n")
    assert parse_ptxas_log(log) == {"registers": 255, "spill_store_bytes": 8660, "spill_load_bytes": 13712,
                                    "stack_bytes": 6400}
    with pytest.raises(TilecError, match="registers"):
        parse_ptxas_log("garbage")


def test_arch_names():
    from tilec.backends.triton import parse_arch
    assert parse_arch("sm_80") == parse_arch("80") == parse_arch(80) == 80
    assert parse_arch("sm_90a") == 90
    with pytest.raises(TilecError, match="sm_80"):
        parse_arch("sm_75")


def test_shared_memory_over_the_limit_is_reported_infeasible():
    from tilec.backends.triton import CompileReport
    r = CompileReport(arch="sm_89", kernel="k", num_warps=4, num_stages=5, shared_bytes=120_000, registers=100,
                      spill_store_bytes=0, spill_load_bytes=0, stack_bytes=0, ptx_lines=10,
                      shared_limit_bytes=99 * 1024, triton_version="x")
    assert not r.feasible and "shared memory" in r.problems()[0]


def test_num_stages_pipeline_the_k_loop_through_shared_memory():
    from tilec.backends.triton import compile_offline
    fn = gemm_ir(np.float16, 64, 64, 32)
    per_stage = (64 * 32 + 32 * 64) * 2   # one A tile and one B tile in fp16
    one = compile_offline(fn, {"num_stages": 1}, "sm_80")
    four = compile_offline(fn, {"num_stages": 4}, "sm_80")
    assert four.shared_bytes >= 3 * per_stage > one.shared_bytes


@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_using_every_ir_kind_compiles_for_the_gpu(arch):
    """The interpreter is lenient about types; the GPU compiler is not. The kernel the CPU
    tests run (gather, reshape, if/for with carried values, floor division, ...) must compile."""
    from test_triton import int_math, mix

    from tilec.backends.triton import compile_offline
    x, i = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32)
    fn = mix.ir(mix.arg_types([x, i, np.zeros(8, np.float32), x, x[0], x[0], 3]), dict(B=8))
    assert compile_offline(fn, {}, arch).feasible
    fn = int_math.ir(int_math.arg_types([i[0], i]), dict(D=-3, B=16))
    assert compile_offline(fn, {}, arch).feasible


def test_compile_constraint_rejects_configs_that_do_not_fit_the_arch():
    from tilec.space import Param, Space
    from tilec.backends.triton import compile_constraint, space_params
    checked = []

    def make_ir(config):
        checked.append(config)
        return gemm_ir(np.float16, config["BM"], config["BN"], config["BK"])

    space = Space([Param("BM", (64, 128)), Param("BN", (64, 128)), Param("BK", (32, 64))]).extend(
        space_params(warps=(4, 8), stages=(2, 5)), [compile_constraint(make_ir, lambda profile: profile)])
    small = {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 2}
    big = {"BM": 128, "BN": 128, "BK": 64, "num_warps": 8, "num_stages": 5}   # 4 x 32 KB staged tiles
    assert space.reasons(small, "sm_89") == []
    assert space.reasons(small, None) == [] and len(checked) == 1   # no profile: nothing compiled
    (reason,) = space.reasons(big, "sm_89")
    assert "shared memory" in reason and "sm_89" in reason
    assert space.reasons(big, "sm_90") == []    # Hopper has 227 KB per block
