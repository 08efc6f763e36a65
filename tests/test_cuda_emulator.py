"""The CUDA backend's generated source, compiled for the CPU with g++ and the emulation header
(one std::thread per CUDA thread), against NumPy references: small shapes including 1, primes
and non-multiples of the tile, SIMT and WMMA paths, strided views, 16-bit conversions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tilec as tc
from tilec.backends import get
from tilec.backends.cuda import emulation
from tilec.kernel import cdiv_host

from ops.plain import gemm
from test_cuda_kernels import gemm_grid, gemv, integers, integers_reference, mixed, mixed_reference

pytestmark = pytest.mark.skipif(emulation.missing() is not None, reason=str(emulation.missing()))

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
dims = st.one_of(st.sampled_from([1, 2, 16, 17, 31, 32, 33]), st.integers(1, 70))
GEMM_SIMT = [dict(BM=32, BN=32, BK=16, threads=64), dict(BM=16, BN=32, BK=8, threads=32)]


def _run_gemm(a, b, cfg):
    M, N = a.shape[0], b.shape[1]
    c = np.full((M, N), np.nan, np.float32)
    gemm[gemm_grid(M, N, cfg)](a, b, c, backend="cuda", **cfg)
    return c


@SLOW
@given(M=dims, N=dims, K=dims, which=st.sampled_from([0, 1]), seed=st.integers(0, 2**16))
def test_gemm_f32_simt(M, N, K, which, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c = _run_gemm(a, b, dict(GEMM_SIMT[which], mma="simt"))
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4 * K)


SIXTEEN = [np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])


@SLOW
@given(M=dims, N=dims, K=dims, dtype=st.sampled_from(SIXTEEN), mma=st.sampled_from(["wmma", "simt"]),
       seed=st.integers(0, 2**16))
def test_gemm_16bit_wmma_and_simt(M, N, K, dtype, mma, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c = _run_gemm(a, b, dict(BM=32, BN=32, BK=16, threads=64, mma=mma))
    ref = a.astype(np.float64) @ b.astype(np.float64)  # exact products of the rounded inputs
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-4 * K)


def test_wmma_is_used_only_where_it_applies():
    be = get("cuda")
    h = np.zeros((4, 4), np.float16)
    fn16 = gemm.ir(gemm.arg_types([h, h, np.zeros((4, 4), np.float32)]), dict(BM=32, BN=32, BK=16))
    assert "wmma::mma_sync" in be.render(fn16, {"threads": 64, "mma": "wmma"})
    assert "wmma::" not in be.render(fn16, {"threads": 64, "mma": "simt"})
    f = np.zeros((4, 4), np.float32)
    fn32 = gemm.ir(gemm.arg_types([f, f, f]), dict(BM=32, BN=32, BK=16))
    assert "wmma::" not in be.render(fn32, {"threads": 64, "mma": "wmma"})  # f32 stays SIMT
    fn_odd = gemm.ir(gemm.arg_types([h, h, np.zeros((4, 4), np.float32)]), dict(BM=32, BN=32, BK=8))
    assert "wmma::" not in be.render(fn_odd, {"threads": 64, "mma": "wmma"})  # K=8 is not a 16-multiple


def test_gemm_on_strided_views_writes_only_inside_the_output():
    rng = np.random.default_rng(1)
    at = rng.standard_normal((29, 37)).astype(np.float32)
    a = at.T                                        # (37, 29), column-major view
    b = rng.standard_normal((58, 23)).astype(np.float32)[::2]   # (29, 23), every other row
    big = np.full((40, 30), -7.0, np.float32)
    c = big[1:38, 2:25]                             # (37, 23) window of a larger array
    cfg = dict(GEMM_SIMT[0], mma="simt")
    gemm[gemm_grid(37, 23, cfg)](a, b, c, backend="cuda", **cfg)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    outside = big.copy()
    outside[1:38, 2:25] = -7.0
    assert (outside == -7.0).all()


@SLOW
@given(M=dims, K=dims, dtype=st.sampled_from([np.dtype(np.float32)] + SIXTEEN), seed=st.integers(0, 2**16))
def test_gemv(M, K, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(dtype)
    x = rng.standard_normal(K).astype(dtype)
    y = np.full(M, np.nan, np.float32)
    gemv[(cdiv_host(M, 16),)](a, x, y, BN=16, BK=16, backend="cuda", threads=64)
    np.testing.assert_allclose(y, a.astype(np.float64) @ x.astype(np.float64), rtol=1e-4, atol=1e-4 * K)


@SLOW
@given(M=st.integers(1, 40), N=st.integers(1, 16), scale=st.sampled_from([2.5, -1.0]), seed=st.integers(0, 2**16))
def test_mixed_reductions_gather_transpose_branch_casts(M, N, scale, seed):
    rng = np.random.default_rng(seed)
    BM, BN = 8, 16
    x = (rng.random((M, N)) - 0.3).astype(np.float32)
    tab = rng.standard_normal(16).astype(np.float32)
    idx = rng.integers(0, 16, (M, N)).astype(np.int32)
    y = np.zeros((M, N), np.float16)
    z = np.zeros((N, M), np.float32)
    r = np.zeros(M, np.int32)
    mixed[(cdiv_host(M, BM),)](x, tab, idx, y, z, r, scale, BM=BM, BN=BN, backend="cuda", threads=32)
    ry, rz, rr = mixed_reference(x, tab, idx, scale, BN)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(z, rz.astype(np.float32))
    np.testing.assert_array_equal(r, rr)


@SLOW
@given(n=st.integers(1, 100), B=st.sampled_from([8, 32]), seed=st.integers(0, 2**16))
def test_integer_ops_floor_semantics_and_scalar_reduction(n, B, seed):
    p = np.random.default_rng(seed).integers(-300, 300, n).astype(np.int32)
    nprog = cdiv_host(n, B)
    o = np.zeros(nprog * 2 * B, np.int32)
    s = np.zeros(nprog, np.int32)
    integers[(nprog,)](p, o, s, B=B, backend="cuda", threads=32)
    ro, rs = integers_reference(p, B)
    np.testing.assert_array_equal(o, ro)
    np.testing.assert_array_equal(s, rs)


@tc.kernel
def convert(X, Y, B: tc.constexpr):
    p = tc.program_id(0)
    tc.store(Y, (p * B,), tc.load(X, (p * B,), (B,)))


SPECIAL = np.array([0.0, -0.0, 1.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 65504.0, 65519.0, 65520.0, 1e6, -1e6,
                    2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 1e-30, 3.14159,
                    np.inf, -np.inf, np.nan, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.4e38], np.float32)


@pytest.mark.parametrize("target", SIXTEEN, ids=str)
def test_16bit_conversions_round_like_numpy(target):
    x = np.concatenate([SPECIAL, np.random.default_rng(2).standard_normal(41).astype(np.float32) * 1e3])
    y = np.zeros(x.size, target)
    convert[(cdiv_host(x.size, 32),)](x, y, B=32, backend="cuda", threads=32)
    with np.errstate(over="ignore"):
        want = x.astype(target)
    nan = np.isnan(x)
    assert np.isnan(y.astype(np.float32)[nan]).all()
    np.testing.assert_array_equal(y.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    back = np.zeros(x.size, np.float32)
    convert[(cdiv_host(x.size, 32),)](want, back, B=32, backend="cuda", threads=32)  # widening is exact
    np.testing.assert_array_equal(back[~nan], want.astype(np.float32)[~nan])


def test_torch_cpu_tensors_run_through_the_emulator():
    torch = pytest.importorskip("torch")
    a = torch.randn(20, 9)
    b = torch.randn(9, 11)
    c = torch.zeros(20, 11)
    cfg = dict(GEMM_SIMT[1], mma="simt")
    gemm[gemm_grid(20, 11, cfg)](a, b, c, backend="cuda", **cfg)
    np.testing.assert_allclose(c.numpy(), a.double().numpy() @ b.double().numpy(), rtol=1e-4, atol=1e-4)


def test_emulated_library_is_cached_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path))
    be = get("cuda")
    f = np.zeros((4, 4), np.float32)
    fn = convert.ir(convert.arg_types([f[0], f[0]]), dict(B=32))
    from tilec.backends.cuda.renderer import CudaRenderer, kernel_symbol
    r = CudaRenderer(fn, {"threads": 32, "mma": "simt"})
    source = r.render()
    emulation._loaded.clear()
    first = emulation.build(source, kernel_symbol(fn), r.params, 32)
    so = next((tmp_path / "cuda-emu").glob("*.so"))
    emulation._loaded.clear()
    damaged = so.with_suffix(".damaged")
    damaged.write_bytes(so.read_bytes()[:100])
    damaged.replace(so)   # a new inode: the loaded copy stays mapped; the damaged entry is rebuilt, not loaded
    again = emulation.build(source, kernel_symbol(fn), r.params, 32)
    assert again is not first and so.stat().st_size > 1000
    assert be.missing() is None


# -- every op in the library, once ops.REGISTRY exists -------------------------------------------
try:
    import ops as _ops
    REGISTRY = dict(getattr(_ops, "REGISTRY", {}))
except ImportError:
    REGISTRY = {}


@pytest.mark.skipif(not REGISTRY, reason="ops.REGISTRY is not part of this build yet")
@pytest.mark.parametrize("name", sorted(REGISTRY) or ["-"])
def test_registry_ops_match_their_references(name):
    spec = REGISTRY[name]
    if "cuda" not in spec.extra.get("backends", ("cuda",)):
        pytest.skip(f"{name} declares it is not verified on the cuda backend yet (extra['backends'])")
    rng = np.random.default_rng(0)
    shape = (spec.extra.get("test_shapes") or [dict(zip(spec.shape_names, (19, 23, 13, 7, 5, 3)))])[0]
    for dtype in spec.dtypes:
        inputs = spec.make_inputs(shape, dtype, rng)
        default = spec.default_config(shape, "cuda")
        configs = [default] + list(itertools.islice(spec.configs_like(default, "cuda"), 3))
        rtol, atol = spec.tolerance(dtype)
        for cfg in configs:
            out = spec.run(inputs, config=cfg, backend="cuda")
            np.testing.assert_allclose(np.asarray(out, np.float64), spec.reference(inputs), rtol=rtol, atol=atol,
                                       err_msg=f"{name} {dtype} {cfg}")


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 16), flip=st.sampled_from([1, -1]), seed=st.integers(0, 2**16))
def test_loop_carried_and_branch_tiles_in_shared_memory(n, flip, seed):
    from test_cuda_kernels import carried, carried_reference
    x = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    y = np.zeros((n, n), np.float32)
    z = np.zeros((n, n), np.float32)
    carried[(1,)](x, y, z, flip, B=16, backend="cuda", threads=64)
    ry, rz = carried_reference(x, flip, 16)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z, rz, rtol=1e-5, atol=1e-5)


@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_unary_functions_and_float_binary_ops(n, seed):
    from test_cuda_kernels import unaries, unaries_reference
    x = (np.random.default_rng(seed).standard_normal(n) * 2).astype(np.float32)
    ref = unaries_reference(x.astype(np.float64))
    y = np.zeros(ref.shape, np.float32)
    unaries[(cdiv_host(n, 32),)](x, y, B=32, backend="cuda", threads=32)
    close = np.isclose(y, ref, rtol=1e-5, atol=1e-5)
    # floor division/modulo right at a multiple of 0.3 may round either way in fp32
    edge = np.zeros_like(close)
    edge[18:20] = np.abs((x / 0.3) - np.round(x / 0.3)) < 1e-4
    assert (close | edge).all(), np.argwhere(~(close | edge))


@settings(max_examples=5, deadline=None)
@given(n=st.integers(1, 16), m=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_rank3_tiles_axis0_reductions_and_int_dot(n, m, seed):
    from test_cuda_kernels import rank3, rank3_reference
    B, C = 16, 8
    x = np.random.default_rng(seed).standard_normal((2, n, m)).astype(np.float32)
    nprog = cdiv_host(m, C)
    y = np.zeros_like(x)
    s = np.zeros((nprog * C, C), np.int32)
    rank3[(nprog,)](x, y, s, B=B, C=C, backend="cuda", threads=64)
    ry, rs = rank3_reference(x.astype(np.float64), B, C)
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s, rs)


@settings(max_examples=4, deadline=None)
@given(M=dims, N=dims, K=dims, seed=st.integers(0, 2**16))
def test_gemm_int8_accumulates_in_int32(M, N, K, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-8, 8, (M, K)).astype(np.int8)
    b = rng.integers(-8, 8, (K, N)).astype(np.int8)
    c = _run_gemm(a, b, dict(GEMM_SIMT[0], mma="wmma"))   # int8 has no WMMA path here: SIMT
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


DIVERGENT = r"""
import sys
from tilec.backends.cuda import emulation
from tilec.backends.cuda.renderer import Param
src = 'extern "C" __global__ void __launch_bounds__(32) k(int* __restrict__ out) { if (threadIdx.x == 0) __syncthreads(); }'
kern = emulation.build(src, "k", [Param("int* __restrict__ out", "int*", 0, "data")], 32)
kern((1, 1, 1), [("int*", 0)])
print("returned")
"""


def test_divergent_barrier_aborts_instead_of_hanging():
    import os
    import subprocess
    import sys
    env = dict(os.environ, TILEC_EMU_BARRIER_TIMEOUT="1")  # same cache dir: reuses the precompiled header
    done = subprocess.run([sys.executable, "-c", DIVERGENT], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode != 0 and "returned" not in done.stdout
    assert "waited 1 s at a barrier" in done.stderr


@settings(max_examples=5, deadline=None)
@given(n=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_edge_cases_padding_loops_and_dtypes(n, seed):
    from test_cuda_kernels import edges, edges_reference
    rng = np.random.default_rng(seed)
    B = 16
    x = (rng.standard_normal(n) - 0.5).astype(np.float32)
    u = rng.integers(0, 256, n).astype(np.uint8)
    nprog = cdiv_host(n, B)
    lo = np.zeros(n, np.int64)
    bo = np.zeros(n, np.bool_)
    y = np.zeros((nprog, B), np.float32)
    edges[(nprog,)](x, u, lo, bo, y, B=B, backend="cuda", threads=32)
    rl, rb, ry = edges_reference(x.astype(np.float64), u, B)
    np.testing.assert_array_equal(lo, rl)
    np.testing.assert_array_equal(bo, rb)
    np.testing.assert_allclose(y, ry, rtol=1e-6)


@settings(max_examples=6, deadline=None)
@given(m=st.integers(1, 32), n=st.integers(1, 32), k=st.integers(1, 32), dtype=st.sampled_from(SIXTEEN + [np.float32]),
       mma=st.sampled_from(["simt", "wmma"]), seed=st.integers(0, 2**16))
def test_dot_with_shared_accumulator_and_result(m, n, k, dtype, mma, seed):
    from test_cuda_kernels import dots, dots_reference
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    y = np.zeros(n, np.float32)
    z = np.zeros((n, m), np.float32)
    dots[(1,)](a, b, c0, y, z, BM=32, BN=32, BK=32, backend="cuda", threads=64, mma=mma)
    ry, rz = dots_reference(a.astype(np.float64), b.astype(np.float64), c0, 32, 32, 32)
    np.testing.assert_allclose(y, ry[:n], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(z, rz[:n, :m], rtol=1e-4, atol=1e-4)


def test_dynamic_shared_memory_arena_runs_in_the_emulator():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 90)).astype(np.float32)
    b = rng.standard_normal((90, 33)).astype(np.float32)
    cfg = dict(BM=128, BN=128, BK=64, threads=128, mma="simt")   # 2 x 32 KiB arena: dynamic
    est = get("cuda").estimate_resources(gemm.ir(gemm.arg_types([a, b, a]), dict(BM=128, BN=128, BK=64)), cfg)
    assert est["dynamic_shared"] and est["shared_bytes"] == 65536
    np.testing.assert_allclose(_run_gemm(a, b, cfg), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


def test_processes_sharing_a_cache_build_the_precompiled_header_at_once(tmp_path):
    """Test workers share one cache: several processes building the emulator's precompiled
    header together must all get it (each writes its own temporary file, then renames it)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import subprocess; from tilec.backends.cuda import emulation as e; cxx = e.compiler(); "
            "v = subprocess.run([cxx, '--version'], capture_output=True, text=True).stdout.splitlines()[0]; "
            "print(e._precompiled_header(cxx, e.HEADER.read_text(), v))")
    env = {**os.environ, "TILEC_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    headers = {out.strip() for out, _ in outs}
    assert len(headers) == 1 and Path(headers.pop()).with_suffix(".h.gch").exists()
    assert not list(tmp_path.rglob("*.tmp"))
