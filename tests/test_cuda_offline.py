"""Offline compilation of the CUDA backend's output (NVRTC, else nvcc) for sm_80/86/89/90: for
each kernel a default config and three others compile with no spills and no stack, shared
memory equals the IR-level estimate exactly and registers agree within the stated tolerance.
Skips (with the reason) where neither NVRTC nor nvcc and the CUDA headers are installed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tilec as tc
from tilec.backends import get
from tilec.backends.cuda import offline
from tilec.backends.cuda.limits import ARCHS
from tilec.backends.cuda.resources import REGISTER_FACTOR, REGISTER_SLACK, registers_agree

from ops.plain import gemm
from test_cuda_kernels import carried, gemv, integers, mixed, rank3, unaries

pytestmark = pytest.mark.skipif(offline.available() is not None, reason=str(offline.available()))

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

f32, f16 = np.float32, np.float16


def _ir(kernel, arrays, constexprs):
    return kernel.ir(kernel.arg_types(arrays), constexprs)


def _gemm(dtype):
    return lambda c: _ir(gemm, [np.zeros((8, 8), dtype), np.zeros((8, 8), dtype), np.zeros((8, 8), f32)], c)


# kernel name -> (IR builder, [default config, three others]); configs mix constexprs and options
CASES = {
    "gemm_f32": (_gemm(f32), [
        dict(BM=64, BN=64, BK=32, threads=128, mma="simt"),
        dict(BM=32, BN=32, BK=16, threads=64, mma="simt"),
        dict(BM=128, BN=64, BK=16, threads=256, mma="simt"),
        dict(BM=64, BN=128, BK=8, threads=256, mma="simt")]),
    "gemm_f16_wmma": (_gemm(f16), [
        dict(BM=64, BN=64, BK=32, threads=128, mma="wmma"),
        dict(BM=32, BN=32, BK=16, threads=64, mma="wmma"),
        dict(BM=64, BN=32, BK=32, threads=128, mma="wmma"),
        dict(BM=32, BN=64, BK=16, threads=256, mma="wmma")]),
    "gemm_f16_simt": (_gemm(f16), [
        dict(BM=32, BN=32, BK=16, threads=64, mma="simt"),
        dict(BM=32, BN=64, BK=32, threads=64, mma="simt"),
        dict(BM=64, BN=64, BK=32, threads=128, mma="simt"),
        dict(BM=64, BN=32, BK=16, threads=128, mma="simt")]),
    "gemv_f16": (lambda c: _ir(gemv, [np.zeros((8, 8), f16), np.zeros(8, f16), np.zeros(8, f32)], c), [
        dict(BN=64, BK=64, threads=128, mma="simt"),
        dict(BN=32, BK=128, threads=128, mma="simt"),
        dict(BN=16, BK=256, threads=256, mma="simt"),
        dict(BN=128, BK=32, threads=128, mma="simt")]),
    "mixed": (lambda c: _ir(mixed, [np.zeros((8, 8), f32), np.zeros(16, f32), np.zeros((8, 8), np.int32),
                                    np.zeros((8, 8), f16), np.zeros((8, 8), f32), np.zeros(8, np.int32), 1.0], c), [
        dict(BM=16, BN=64, threads=128, mma="simt"),
        dict(BM=8, BN=32, threads=32, mma="simt"),
        dict(BM=32, BN=32, threads=256, mma="simt"),
        dict(BM=4, BN=128, threads=64, mma="simt")]),
    "integers": (lambda c: _ir(integers, [np.zeros(8, np.int32), np.zeros(16, np.int32), np.zeros(1, np.int32)], c), [
        dict(B=256, threads=128, mma="simt"),
        dict(B=64, threads=32, mma="simt"),
        dict(B=512, threads=256, mma="simt"),
        dict(B=1024, threads=1024, mma="simt")]),
    "unaries": (lambda c: _ir(unaries, [np.zeros(8, f32), np.zeros((21, 8), f32)], c), [
        dict(B=128, threads=128, mma="simt"),
        dict(B=32, threads=32, mma="simt"),
        dict(B=256, threads=64, mma="simt"),
        dict(B=1024, threads=512, mma="simt")]),
    "carried": (lambda c: _ir(carried, [np.zeros((8, 8), f32)] * 3 + [1], c), [
        dict(B=32, threads=128, mma="simt"),
        dict(B=16, threads=32, mma="simt"),
        dict(B=64, threads=256, mma="simt"),
        dict(B=32, threads=1024, mma="simt")]),
    "rank3": (lambda c: _ir(rank3, [np.zeros((2, 8, 8), f32), np.zeros((2, 8, 8), f32), np.zeros((8, 8), np.int32)],
                            c), [
        dict(B=16, C=16, threads=128, mma="simt"),
        dict(B=8, C=8, threads=32, mma="simt"),
        dict(B=32, C=16, threads=256, mma="simt"),
        dict(B=16, C=32, threads=64, mma="simt")]),
}
if BF16 is not None:
    CASES["gemm_bf16_wmma"] = (_gemm(BF16), [
        dict(BM=64, BN=64, BK=32, threads=128, mma="wmma"),
        dict(BM=32, BN=32, BK=32, threads=64, mma="wmma"),
        dict(BM=16, BN=64, BK=16, threads=32, mma="wmma"),
        dict(BM=64, BN=16, BK=64, threads=128, mma="wmma")])


def _split(cfg):
    options = {k: cfg[k] for k in ("threads", "mma")}
    return {k: v for k, v in cfg.items() if k not in options}, options


@pytest.fixture(scope="module")
def reports():
    """Every (kernel, config, arch) compiled once, two at a time (NVRTC releases the GIL)."""
    be = get("cuda")
    jobs = []
    for name, (build, configs) in CASES.items():
        for i, cfg in enumerate(configs):
            constexprs, options = _split(cfg)
            fn = build(constexprs)
            for arch in ARCHS:
                jobs.append(((name, i, arch), fn, options))
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda j: (j[0], be.compile_offline(j[1], j[2], j[0][2]), be.estimate_resources(j[1], j[2])),
                        jobs)
        return {key: (rep, est) for key, rep, est in done}


@pytest.mark.parametrize("name", sorted(CASES))
def test_configs_compile_for_every_arch_without_spills(reports, name):
    for i in range(4):
        for arch in ARCHS:
            rep, _est = reports[(name, i, arch)]
            assert rep.arch == arch and rep.ptx.lstrip().startswith("//") and rep.cubin_bytes > 0
            assert rep.spills_bytes == 0, (name, i, arch, rep.log)
            assert rep.stack_bytes == 0, (name, i, arch, rep.log)  # register tiles did not fall to local memory


@pytest.mark.parametrize("name", sorted(CASES))
def test_resource_estimate_matches_ptxas(reports, name):
    for i in range(4):
        for arch in ARCHS:
            rep, est = reports[(name, i, arch)]
            assert not est["dynamic_shared"]
            assert rep.shared_bytes == est["shared_bytes"], (name, i, arch)
            assert rep.barriers == est["barriers"], (name, i, arch)
            assert registers_agree(est["registers"], rep.registers), \
                (f"{name} config {i} on {arch}: estimated {est['registers']} registers, ptxas used {rep.registers} "
                 f"(tolerance: within {REGISTER_SLACK} registers or a factor of {REGISTER_FACTOR})")


def test_wmma_path_uses_tensor_core_instructions(reports):
    rep, est = reports[("gemm_f16_wmma", 0, "sm_80")]
    assert est["wmma_dots"] == 1 and "mma.sync" in rep.ptx
    rep, est = reports[("gemm_f32", 0, "sm_80")]
    assert est["wmma_dots"] == 0 and "mma.sync" not in rep.ptx


def test_report_is_cached_and_stable(reports):
    be = get("cuda")
    fn = CASES["gemm_f32"][0](_split(CASES["gemm_f32"][1][0])[0])
    again = be.compile_offline(fn, {"threads": 128, "mma": "simt"}, "sm_80")
    assert again == reports[("gemm_f32", 0, "sm_80")][0]


def test_compile_errors_are_tilec_errors():
    with pytest.raises(tc.TilecError, match="could not compile"):
        offline.compile_source('extern "C" __global__ void k() { undefined_name(); }', "sm_80")


def test_ptxas_report_parsing():
    log = ("ptxas info    : Function properties for k\n"
           "ptxas         .     8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]\n")
    assert offline.parse_ptxas(log) == {"registers": 40, "spills_bytes": 16, "shared_bytes": 8192, "barriers": 1,
                                        "stack_bytes": 8}


# -- every op in the library, once ops.REGISTRY exists -------------------------------------------
try:
    import ops as _ops
    REGISTRY = dict(getattr(_ops, "REGISTRY", {}))
except ImportError:
    REGISTRY = {}


@pytest.mark.skipif(not REGISTRY, reason="ops.REGISTRY is not part of this build yet")
@pytest.mark.parametrize("name", sorted(REGISTRY) or ["-"])
def test_registry_ops_compile_for_every_arch(name):
    spec = REGISTRY[name]
    if spec.launch_ir is None:
        pytest.skip(f"{name} does not expose launch_ir")
    if "cuda" not in spec.extra.get("backends", ("cuda",)):
        pytest.skip(f"{name} declares it is not tuned for the cuda backend yet (extra['backends'])")
    be = get("cuda")
    shape = dict(zip(spec.shape_names, (256, 256, 256, 64, 64, 64)))
    for dtype in spec.dtypes:
        default = spec.default_config(shape, "cuda")
        others = []
        for cfg in spec.configs_like(default, "cuda"):
            if len(others) == 3:
                break
            fn = spec.launch_ir(shape, dtype, cfg)[1]
            if any(be.reasons(fn, {k: v for k, v in cfg.items() if k in be.options}, arch) for arch in ARCHS):
                continue  # over some arch's limits or predicted to spill: the tuner would not try it
            if cfg != default:
                others.append(cfg)
        assert len(others) == 3, f"{name}: fewer than three feasible configs besides the default"
        for cfg in [default] + others:
            fn = spec.launch_ir(shape, dtype, cfg)[1]
            options = {k: v for k, v in cfg.items() if k in be.options}
            est = be.estimate_resources(fn, options)
            for arch in ARCHS:
                rep = be.compile_offline(fn, options, arch)
                assert rep.spills_bytes == 0 and rep.stack_bytes == 0, (name, dtype, cfg, arch)
                static = 0 if est["dynamic_shared"] else est["shared_bytes"]
                assert rep.shared_bytes == static, (name, dtype, cfg, arch)
                assert rep.dynamic_shared_bytes == est["shared_bytes"] - static, (name, dtype, cfg, arch)
                if "cuda_registers_unmodelled" not in spec.extra:   # said why in the op's extra
                    assert registers_agree(est["registers"], rep.registers), (name, dtype, cfg, arch, est,
                                                                              rep.registers)


def test_show_prints_source_estimate_and_ptxas_report():
    be = get("cuda")
    build, configs = CASES["gemm_f16_wmma"]
    constexprs, options = _split(configs[0])
    text = be.show(build(constexprs), options, "sm_89")
    assert "__global__" in text and "wmma::mma_sync" in text
    assert "// estimate: shared memory 24576 bytes" in text
    assert "sm_89): " in text and "0 bytes spilled" in text and "24576 bytes shared memory" in text


def test_nvcc_fallback_agrees_with_nvrtc(reports):
    import shutil
    if shutil.which("nvcc") is None or offline.nvrtc() is None:
        pytest.skip("needs both nvcc and NVRTC to compare")
    be = get("cuda")
    build, configs = CASES["gemm_f32"]
    constexprs, options = _split(configs[1])
    rep = offline.compile_source(be.render(build(constexprs), options), "sm_86", prefer="nvcc")
    assert rep.compiler.startswith("nvcc")
    want = reports[("gemm_f32", 1, "sm_86")][0]
    assert (rep.shared_bytes, rep.spills_bytes, rep.barriers) == (want.shared_bytes, 0, want.barriers)
    assert abs(rep.registers - want.registers) <= 16   # different ptxas builds may allocate a little differently


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_arena_over_48k_is_dynamic_shared_memory(arch):
    be = get("cuda")
    fn = CASES["gemm_f32"][0](dict(BM=128, BN=128, BK=64))   # 64 KiB of A and B tiles
    options = {"threads": 256, "mma": "simt"}
    src = be.render(fn, options)
    assert "TILEC_DYNAMIC_SHARED(tc_smem, 65536)" in src
    rep = be.compile_offline(fn, options, arch)
    assert rep.shared_bytes == 0 and rep.dynamic_shared_bytes == 65536 and rep.spills_bytes == 0


def test_configs_predicted_to_spill_are_flagged():
    """Found by a random sweep: 32 threads owning 64x16 fp16 outputs each spill on every arch."""
    be = get("cuda")
    fn = CASES["gemm_f16_simt"][0](dict(BM=64, BN=16, BK=32))
    reasons = be.reasons(fn, {"threads": 32, "mma": "simt"}, "sm_86")
    assert reasons and "likely to spill" in reasons[0]
    assert be.reasons(fn, {"threads": 128, "mma": "simt"}, "sm_86") == []
    for name, (build, configs) in CASES.items():   # the configs the tests compile are not flagged
        for cfg in configs:
            constexprs, options = _split(cfg)
            assert be.reasons(build(constexprs), options, "sm_80") == [], (name, cfg)
