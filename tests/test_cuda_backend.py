"""The CUDA backend without compiling anything: configs over the limits are rejected before any
compiler runs, tiles are spread so that each element has exactly one owner, shared-memory
buffers that are live together never overlap, and arguments convert to pointers, extents and
strides for every array library."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilec as tc
from tilec.backends import get
from tilec.backends.cuda import emulation, gpu, limits, offline
from tilec.backends.cuda.args import array_facts, kernel_arguments
from tilec.backends.cuda.plan import layout_for, make_plan
from tilec.backends.cuda.renderer import CudaRenderer

from ops.plain import gemm
from test_cuda_kernels import gemv, mixed


def _gemm_ir(BM, BN, BK, dtype=np.float32):
    z = np.zeros((4, 4), dtype)
    return gemm.ir(gemm.arg_types([z, z, np.zeros((4, 4), np.float32)]), dict(BM=BM, BN=BN, BK=BK))


@pytest.fixture
def no_compiler(monkeypatch):
    """Fail the test if anything tries to compile."""
    def boom(*a, **k):
        raise AssertionError("a compiler was invoked for a config that should have been rejected")
    monkeypatch.setattr(offline, "compile_source", boom)
    monkeypatch.setattr(emulation, "build", boom)


@pytest.mark.parametrize("arch", limits.ARCHS)
def test_too_many_threads_is_rejected_before_compiling(no_compiler, arch):
    be = get("cuda")
    with pytest.raises(tc.ConfigError, match=r"threads=2048 exceeds the limit of 1024.*" + arch +
                       r".*source: .*Programming Guide"):
        be.compile_offline(_gemm_ir(64, 64, 32), {"threads": 2048, "mma": "simt"}, arch)


@pytest.mark.parametrize("arch", limits.ARCHS)
def test_too_much_shared_memory_is_rejected_before_compiling(no_compiler, arch):
    be = get("cuda")
    fn = _gemm_ir(256, 256, 128)   # A and B tiles: 2 x 128 KiB of fp32, over every arch's opt-in limit
    assert be.estimate_resources(fn, {"threads": 256})["shared_bytes"] == 262144
    with pytest.raises(tc.ConfigError, match=r"262144 bytes of shared memory.*limit of \d+ bytes on " + arch +
                       r".*source: .*max_smem_per_block_kb.*Programming Guide"):
        be.compile_offline(fn, {"threads": 256, "mma": "simt"}, arch)


def test_shared_memory_limit_depends_on_the_arch(no_compiler):
    be = get("cuda")
    fn = _gemm_ir(256, 256, 64)    # 128 KiB: fits sm_80 (163 KiB) and sm_90 (227 KiB), not sm_86/sm_89 (99 KiB)
    for arch in ("sm_80", "sm_90"):
        assert be.check(fn, {"threads": 256}, arch)["dynamic_shared"]
    for arch in ("sm_86", "sm_89"):
        with pytest.raises(tc.ConfigError, match=r"131072 bytes .* limit of 101376 bytes on " + arch):
            be.check(fn, {"threads": 256}, arch)


def test_launch_is_rejected_before_the_emulator_compiles(no_compiler):
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(tc.ConfigError, match="exceeds the limit of 1024"):
        gemm[(1, 1)](a, a, a, BM=32, BN=32, BK=16, threads=4096, backend="cuda")


@pytest.mark.parametrize("threads", [0, 16, 48, 96])
def test_threads_must_be_whole_warps_in_a_power_of_two(threads):
    with pytest.raises(tc.ConfigError, match="power of two"):
        get("cuda").render(_gemm_ir(32, 32, 16), {"threads": threads})


def test_unknown_option_and_arch_are_named():
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(tc.ConfigError, match="mma"):
        gemm[(1, 1)](a, a, a, BM=32, BN=32, BK=16, mma="tensor", backend="cuda")
    with pytest.raises(tc.ConfigError, match="sm_75"):
        limits.limits_for("sm_75")
    lim = limits.limits_for("sm_90")
    assert lim.smem_per_block_bytes == 227 * 1024 and lim.max_threads == 1024 and "max_smem_per_block_kb" in lim.source
    smem, threads, source = lim
    assert (smem, threads) == (232448, 1024) and source


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple),
       threads=st.sampled_from([32, 64, 128, 256, 1024]), blocked=st.booleans())
def test_every_tile_element_has_exactly_one_owner(shape, threads, blocked):
    lay = layout_for(shape, threads, blocked)
    assert lay.tm * lay.tn == threads
    owners = np.zeros(lay.rows * lay.cols, np.int64)
    for tid in range(threads):
        ty, tx = tid // lay.tn, tid % lay.tn
        for i in range(lay.rm):
            for j in range(lay.rn):
                r, c = ty + i * lay.tm, tx + j * lay.tn
                if r < lay.rows and c < lay.cols:
                    owners[r * lay.cols + c] += 1
    assert (owners == 1).all()
    assert lay.guarded == (threads * lay.elems > lay.rows * lay.cols)  # a bounds test only where slots spill over


@pytest.mark.parametrize("mma", ["simt", "wmma"])
def test_shared_buffers_live_together_do_not_overlap(mma):
    z = np.zeros((4, 4), np.float32)
    fns = [_gemm_ir(64, 64, 32, np.float16), _gemm_ir(32, 32, 16),
           mixed.ir(mixed.arg_types([z, z[0], z.astype(np.int32), z.astype(np.float16), z, z[0].astype(np.int32),
                                     1.0]), dict(BM=16, BN=32)),
           gemv.ir(gemv.arg_types([z, z[0], z[0]]), dict(BN=32, BK=64))]
    for fn in fns:
        plan = make_plan(fn, 128, mma)
        bufs = list(plan.smem.values())
        assert plan.arena_bytes >= max(b.offset + b.nbytes for b in bufs)
        for i, a in enumerate(bufs):
            assert a.offset % 32 == 0
            for b in bufs[i + 1:]:
                if a.start <= b.end and b.start <= a.end:
                    assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset


def test_render_is_deterministic_and_declares_what_the_estimate_says():
    be = get("cuda")
    fn = _gemm_ir(64, 64, 32, np.float16)
    opts = {"threads": 128, "mma": "wmma"}
    src = be.render(fn, opts)
    assert src == be.render(fn, opts)
    est = be.estimate_resources(fn, opts)
    assert f"unsigned char tc_smem[{est['shared_bytes']}]" in src
    assert "__launch_bounds__(128, 1)" in src and "wmma::mma_sync" in src


def test_array_facts_for_numpy_views_and_bad_strides():
    a = np.arange(60, dtype=np.float32).reshape(6, 10)
    v = a[::-2, 1::3]
    ptr, shape, strides = array_facts(v, "v")
    assert shape == (3, 3) and strides == (-20, 3)
    assert ptr == a.ctypes.data + (5 * 10 + 1) * 4
    raw = np.zeros(17, np.uint8)[1:].view(np.float32)   # fine: contiguous
    assert array_facts(raw, "raw")[2] == (1,)
    odd = np.lib.stride_tricks.as_strided(np.zeros(8, np.float32), shape=(3,), strides=(6,))
    with pytest.raises(tc.InputError, match="not a multiple"):
        array_facts(odd, "odd")


def test_array_facts_for_torch_and_cupy_like_arrays():
    torch = pytest.importorskip("torch")
    t = torch.zeros(4, 6)[:, ::2]
    ptr, shape, strides = array_facts(t, "t")
    assert (ptr, shape, strides) == (t.data_ptr(), (4, 3), (6, 2))

    class Ptr:
        ptr = 0xDEAD00

    class FakeCupy:                      # duck-typed like cupy.ndarray
        __module__ = "cupy._core.core"
        dtype = np.dtype(np.float16)
        shape = (5, 7)
        strides = (14 * 2, 2 * 2)
        data = Ptr()

    assert array_facts(FakeCupy(), "c") == (0xDEAD00, (5, 7), (14, 2))


def test_kernel_arguments_follow_the_signature():
    fn = _gemm_ir(32, 32, 16)
    r = CudaRenderer(fn, {"threads": 64})
    a = np.zeros((5, 3), np.float32)
    b = np.zeros((3, 4), np.float32)
    c = np.zeros((5, 4), np.float32).T.copy().T
    values = kernel_arguments(r.params, [a, b, c], ["A", "B", "C"])
    assert [ct for ct, _ in values] == ["float*", "int", "int", "long long", "long long"] * 3
    assert values[0][1] == a.ctypes.data and values[1:5] == [("int", 5), ("int", 3), ("long long", 3),
                                                             ("long long", 1)]
    assert values[-2:] == [("long long", 1), ("long long", 5)]  # C is column-major
    launch = gpu.launch_values(values)
    assert launch[0].dtype == np.uint64 and launch[1].dtype == np.int32 and launch[3].dtype == np.int64
    with pytest.raises(tc.InputError, match="must be an array"):
        kernel_arguments(r.params, [1.0, b, c], ["A", "B", "C"])


def test_gpu_runner_reports_why_it_cannot_run_here():
    reason = gpu.missing()
    if reason is None:
        pytest.skip("a GPU is present")
    assert "CuPy" in reason


def test_limits_can_come_from_a_hardware_profile(no_compiler):
    from types import SimpleNamespace
    profile = SimpleNamespace(name="tiny-gpu", max_threads_per_block=256, local_memory_bytes=16384)
    be = get("cuda")
    with pytest.raises(tc.ConfigError, match=r"threads=512 exceeds the limit of 256.*hardware profile tiny-gpu"):
        be.compile_offline(_gemm_ir(32, 32, 16), {"threads": 512}, "sm_80", profile)
    with pytest.raises(tc.ConfigError, match=r"16384 bytes on sm_86 \(source: hardware profile tiny-gpu"):
        be.check(_gemm_ir(64, 64, 64), {"threads": 128}, "sm_86", {"name": "tiny-gpu", "max_threads_per_block": 256,
                                                                   "local_memory_bytes": 16384})
    assert be.check(_gemm_ir(32, 32, 16), {"threads": 64}, "sm_86", profile)["shared_bytes"] == 4096


def test_register_estimate_respects_the_launch_bounds_cap():
    be = get("cuda")
    fn = _gemm_ir(128, 128, 8)
    small = be.estimate_resources(fn, {"threads": 256})
    huge = be.estimate_resources(fn, {"threads": 1024})
    assert huge["register_cap"] == 64 and huge["registers"] <= 64
    assert small["register_cap"] == 255 and not small["may_spill"]
