"""Triton backend on the CPU: the generated kernels run through Triton's interpreter on plain
NumPy arrays and must match independent NumPy references (and the Numba backend).

The interpreter computes tl.dot in plain fp32 (a GPU may use TF32 or tensor cores), so fp32
dots are held to fp32 accumulation tolerances; 16-bit inputs are compared with tolerances of
their own precision.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tilec as tc
from tilec.errors import TilecError
from ops.plain import gemm, gemv

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install 'tilec[triton]')")

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE = st.sampled_from([1, 2, 3, 7, 13, 16, 17, 31, 40])   # 1, primes, non-multiples of the tile


@tc.kernel
def mix(X, IDX, T, Y, S, R, n, B: tc.constexpr):
    """Touches every IR kind: padding, trans, unary/binary math, floor // and %, bitwise,
    gather, expand_dims, where, cast, reductions (keepdims), reshape, broadcast, a loop with a
    carried scalar, an if on a runtime scalar, num_programs and single-element loads/stores."""
    p = tc.program_id(0)
    row = p * B
    x = tc.load(X, (row, 0), (B, B), padding=1.0)
    t = tc.trans(x)
    e = tc.exp(tc.minimum(t, 2.0)) - tc.sqrt(tc.abs(x)) + tc.tanh(x) * tc.sigmoid(t)
    idx = tc.load(IDX, (row, 0), (B, B))
    q = idx // 3 + idx % 5
    table = tc.load(T, (0,), (8,))
    g = tc.gather(tc.expand_dims(table, 0), idx & 7, 1)
    w = tc.where(x > 0.0, e, g) + tc.cast(q, tc.float32)
    m = tc.max(w, 0, keepdims=True)
    pattern = tc.reshape(tc.arange(B * B) % 3, (B, B))
    out = w - m + tc.cast(pattern, tc.float32) * tc.floor(x * 2.0)
    tc.store(Y, (row, 0), out)
    total = 0.0
    for i in tc.range(0, n):
        total = total + tc.cast(i, tc.float32) * 0.5
    r = tc.sum(w, 1)
    if p % 2 == 0:
        r = r + total
    else:
        r = r - tc.cast(tc.num_programs(0), tc.float32)
    tc.store(S, (row,), r)
    first = tc.load(X, (row, 0), (None, None))
    tc.store(R, (p,), tc.cast(tc.cast(first * 8.0, tc.int8), tc.float32), (None,))


def mix_reference(x, idx, table, n, B):
    M = x.shape[0]
    nprog = -(-M // B)
    rows = nprog * B
    xp = np.ones((rows, B), np.float64)
    xp[:M, :min(B, x.shape[1])] = x[:, :B]
    ip = np.zeros((rows, B), np.int64)
    ip[:M, :min(B, idx.shape[1])] = idx[:, :B]
    y = np.zeros((rows, B))
    s = np.zeros(rows)
    r = np.zeros(nprog)
    total = sum(i * 0.5 for i in range(n))
    for p in range(nprog):
        xb = xp[p * B:(p + 1) * B]
        ib = ip[p * B:(p + 1) * B]
        e = np.exp(np.minimum(xb.T, 2.0)) - np.sqrt(np.abs(xb)) + np.tanh(xb) / (1 + np.exp(-xb.T))
        g = table[ib & 7]
        w = np.where(xb > 0, e, g) + (ib // 3 + ib % 5)
        pattern = (np.arange(B * B) % 3).reshape(B, B)
        y[p * B:(p + 1) * B] = w - w.max(0, keepdims=True) + pattern * np.floor(xb * 2.0)
        s[p * B:(p + 1) * B] = w.sum(1) + (total if p % 2 == 0 else -nprog)
        r[p] = np.trunc(xp[p * B, 0] * 8.0) if p * B < M else 0.0
    return y[:M], s[:M], r


def run_gemm(a, b, cfg, backend="triton"):
    c = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    grid = (tc.cdiv_host(a.shape[0], cfg["BM"]), tc.cdiv_host(b.shape[1], cfg["BN"]))
    gemm[grid](a, b, c, backend=backend, **cfg)
    return c


@SETTINGS
@given(M=EDGE, N=EDGE, K=EDGE, tiles=st.sampled_from([(16, 16, 16), (32, 16, 16), (16, 32, 32), (8, 16, 4),
                                                      (24, 40, 12), (5, 3, 7)]),
       seed=st.integers(0, 2**16))
def test_gemm_fp32_matches_numpy(M, N, K, tiles, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    BM, BN, BK = tiles   # (8, 16, 4): dots below 16 take the broadcast-multiply-sum path; 24, 40, 12, 5, 3, 7
    # are held padded to powers of two, the padded inner lanes masked to zero
    c = run_gemm(a, b, dict(BM=BM, BN=BN, BK=BK))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, ref, rtol=1e-5, atol=1e-5 * K)


@SETTINGS
@given(M=EDGE, N=EDGE, K=EDGE, seed=st.integers(0, 2**16))
def test_gemm_fp16_inputs_accumulate_in_fp32(M, N, K, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float16)
    b = rng.standard_normal((K, N)).astype(np.float16)
    c = run_gemm(a, b, dict(BM=16, BN=16, BK=16))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    # products of fp16 values are exact in fp32; only the fp32 sums round
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-4 * K)


def test_gemm_bf16_inputs():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bf16 NumPy arrays need ml_dtypes")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((33, 40)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((40, 17)).astype(ml_dtypes.bfloat16)
    c = run_gemm(a, b, dict(BM=16, BN=16, BK=16))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-3)


def test_gemm_matches_numba_on_strided_views():
    rng = np.random.default_rng(2)
    big = rng.standard_normal((40, 50), dtype=np.float32)
    a = big[1:30:2, 3:40]          # non-contiguous rows, offset start
    b = big.T[5:42, 7:20]          # transposed view: inner stride is not 1
    cfg = dict(BM=16, BN=16, BK=16)
    np.testing.assert_allclose(run_gemm(a, b, cfg), run_gemm(a, b, cfg, backend="numba"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run_gemm(a, b, cfg), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)


@SETTINGS
@given(M=EDGE, K=EDGE, tiles=st.sampled_from([(16, 16), (32, 8), (4, 32), (12, 20)]), f16=st.booleans(),
       seed=st.integers(0, 2**16))
def test_gemv_matches_numpy(M, K, tiles, f16, seed):
    rng = np.random.default_rng(seed)
    dtype = np.float16 if f16 else np.float32
    a = rng.standard_normal((M, K)).astype(dtype)
    x = rng.standard_normal(K).astype(dtype)
    y = np.full(M, np.nan, np.float32)
    BM, BK = tiles
    gemv[(tc.cdiv_host(M, BM),)](a, x, y, backend="triton", BM=BM, BK=BK)
    ref = a.astype(np.float64) @ x.astype(np.float64)
    tol = 2e-3 if f16 else 1e-5   # fp16 tiles compute in fp32 here; products are exact, sums round
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * K)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.sampled_from([1, 5, 8, 13, 16, 19]), C=st.sampled_from([1, 3, 8, 11]), B=st.sampled_from([4, 8]),
       n=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_every_ir_kind_matches_numpy_and_numba(M, C, B, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (M, C)).astype(np.float32)
    idx = rng.integers(-20, 21, (M, C)).astype(np.int32)
    table = rng.standard_normal(8).astype(np.float32)
    nprog = tc.cdiv_host(M, B)
    outs = {}
    for backend in ("triton", "numba"):
        y = np.full((M, B), np.nan, np.float32)[:, :min(B, C)] if C < B else np.full((M, C), np.nan, np.float32)
        s = np.full(M, np.nan, np.float32)
        r = np.full(nprog, np.nan, np.float32)
        mix[(nprog,)](x, idx, table, y, s, r, n, backend=backend, B=B)
        outs[backend] = (y, s, r)
    ry, rs, rr = mix_reference(x.astype(np.float64), idx, table.astype(np.float64), n, B)
    y, s, r = outs["triton"]
    cols = y.shape[1]
    np.testing.assert_allclose(y[:, :min(cols, B)], ry[:, :min(cols, B)], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(s, rs, rtol=2e-5, atol=1e-4)
    np.testing.assert_array_equal(r, rr)
    for got, want in zip(outs["triton"], outs["numba"]):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


@tc.kernel
def int_math(X, Y, D: tc.constexpr, B: tc.constexpr):
    p = tc.program_id(0)
    x = tc.load(X, (p * B,), (B,))
    tc.store(Y, (p * B, 0), tc.expand_dims(x // D, 1), (B, 1))
    tc.store(Y, (p * B, 1), tc.expand_dims(x % D, 1), (B, 1))
    tc.store(Y, (p * B, 2), tc.expand_dims((x >> 1) ^ (x << 2), 1), (B, 1))


@SETTINGS
@given(d=st.sampled_from([-7, -3, -1, 1, 2, 5]), n=EDGE, seed=st.integers(0, 2**16))
def test_integer_division_follows_python(d, n, seed):
    x = np.random.default_rng(seed).integers(-1000, 1000, n).astype(np.int32)
    y = np.zeros((n, 3), np.int32)
    int_math[(tc.cdiv_host(n, 16),)](x, y, backend="triton", D=d, B=16)
    np.testing.assert_array_equal(y[:, 0], x // d)
    np.testing.assert_array_equal(y[:, 1], x % d)
    np.testing.assert_array_equal(y[:, 2], (x >> 1) ^ (x << 2))


@tc.kernel
def shifted_copy(X, Y, S, B: tc.constexpr):
    p = tc.program_id(0)
    tc.store(Y, (p * B + S,), tc.load(X, (p * B - S,), (B,), padding=-1.0))


def test_negative_offsets_are_masked_on_both_sides():
    x = np.arange(20, dtype=np.float32)
    y = np.zeros(20, np.float32)
    shifted_copy[(2,)](x, y, 3, backend="triton", B=16)
    ref = np.zeros(20, np.float32)
    for p in range(2):
        for i in range(16):
            src, dst = p * 16 - 3 + i, p * 16 + 3 + i
            if 0 <= dst < 20:
                ref[dst] = x[src] if 0 <= src < 20 else -1.0
    np.testing.assert_array_equal(y, ref)


def test_torch_cpu_tensors_are_accepted():
    torch = pytest.importorskip("torch", reason="torch is optional")
    a = torch.randn(20, 24)
    b = torch.randn(24, 9)
    c = torch.zeros(20, 9)
    gemm[(2, 1)](a, b, c, backend="triton", BM=16, BN=16, BK=16)
    np.testing.assert_allclose(c.numpy(), (a.double() @ b.double()).numpy(), rtol=1e-5, atol=1e-4)


# -- errors ---------------------------------------------------------------------------------------

@tc.kernel
def reshape_tile(X, Y, B: tc.constexpr):
    tc.store(Y, (0, 0), tc.reshape(tc.load(X, (0,), (B * B,)), (B, B)))


@tc.kernel
def reshape_3d(X, Y, A: tc.constexpr, B: tc.constexpr, C: tc.constexpr):
    """(A, B, C) -> (A * B, C) -> (C, A * B) -> (A, B * C): reshapes across padded lanes."""
    x = tc.load(X, (0, 0, 0), (A, B, C))
    y = tc.reshape(tc.trans(tc.reshape(x, (A * B, C))), (A, B * C))
    tc.store(Y, (0, 0), y + 1.0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(abc=st.tuples(st.sampled_from([1, 2, 3, 4, 5]), st.sampled_from([1, 3, 4, 6]), st.sampled_from([2, 3, 8, 7])))
def test_reshapes_of_non_power_of_two_tiles_keep_element_order(abc):
    a, b, c = abc
    x = np.arange(a * b * c, dtype=np.float32).reshape(a, b, c)
    y = np.zeros((a, b * c), np.float32)
    reshape_3d[(1,)](x, y, A=a, B=b, C=c, backend="triton")
    np.testing.assert_array_equal(y, x.reshape(a * b, c).T.reshape(a, b * c) + 1.0)
    sq = np.zeros((6, 6), np.float32)
    reshape_tile[(1,)](np.arange(36, dtype=np.float32), sq, backend="triton", B=6)
    np.testing.assert_array_equal(sq, np.arange(36).reshape(6, 6))


@tc.kernel
def int_pow(X, Y, B: tc.constexpr):
    x = tc.load(X, (0,), (B,))
    tc.store(Y, (0,), x ** x)


def test_integer_pow_is_rejected_with_the_reason():
    x = np.arange(4, dtype=np.int32)
    with pytest.raises(TilecError, match=r"integer \*\*"):
        int_pow[(1,)](x, x.copy(), backend="triton", B=4)


def test_unknown_backend_option_names_the_options():
    a = np.zeros((16, 16), np.float32)
    with pytest.raises(TilecError, match="num_warps"):
        gemm[(1, 1)](a, a, a.copy(), backend="triton", BM=16, BN=16, BK=16, warps=4)
    with pytest.raises(TilecError, match="num_stages"):
        gemm[(1, 1)](a, a, a.copy(), backend="triton", BM=16, BN=16, BK=16, num_stages=9)


def test_generated_source_is_readable_triton():
    from tilec.backends import triton as tb
    a = np.zeros((4, 4), np.float32)
    fn = gemm.ir(gemm.arg_types([a, a, a]), dict(BM=32, BN=32, BK=16))
    text = tb.render(fn, {"num_warps": 2})
    assert "@triton.jit" in text and "tl.dot(" in text and 'input_precision="ieee"' in text
    assert "A_stride0" in text and "mask=" in text and "num_warps=2" in text
    assert 'input_precision="tf32"' in tb.render(fn, {"fp32_dot": "tf32"})


def test_space_params_are_the_backend_options():
    from tilec.backends import triton as tb
    params = {p.name: p.choices for p in tb.space_params()}
    assert params == {"num_warps": (1, 2, 4, 8, 16), "num_stages": (1, 2, 3, 4, 5)}
    check = tb.space_constraints(("BM", "BN"))[0]
    assert check({"BM": 64, "BN": 32}) is None
    assert "BN=48" in check({"BM": 64, "BN": 48})


def test_interpreting_leaves_triton_able_to_compile_for_gpus():
    """Interpreted kernels patch triton.language while they run; afterwards an offline GPU
    compile in the same process must still work."""
    from tilec.backends.triton import compile_offline
    a = np.ones((20, 20), np.float32)
    for _ in range(2):   # small tiles: the dot becomes tl.sum, a library function run as a device call
        c = run_gemm(a, a, dict(BM=8, BN=16, BK=4))
        y = np.zeros(20, np.float32)
        gemv[(2,)](a, a[0], y, backend="triton", BM=16, BK=16)
    np.testing.assert_allclose(c, 20.0)
    np.testing.assert_allclose(y, 20.0)
    fn = gemv.ir(gemv.arg_types([a, a[0], y]), dict(BM=16, BK=16))
    assert compile_offline(fn, {}, "sm_80", use_cache=False).registers > 0


@tc.kernel
def affine16(X, Y, s, B: tc.constexpr):
    p = tc.program_id(0)
    x = tc.load(X, (p * B,), (B,))
    tc.store(Y, (p * B,), x * s + 1.0)


@SETTINGS
@given(n=EDGE, bf16=st.booleans(), seed=st.integers(0, 2**16))
def test_16bit_tensors_load_and_store_in_their_storage_type(n, bf16, seed):
    if bf16:
        dtype = pytest.importorskip("ml_dtypes", reason="bf16 NumPy arrays need ml_dtypes").bfloat16
        ulp = 2.0 ** -7   # bf16 keeps 8 significant bits; the interpreter may round where GPUs round to nearest
    else:
        dtype, ulp = np.float16, 2.0 ** -10
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    y = np.zeros(n, dtype)
    affine16[(tc.cdiv_host(n, 16),)](x, y, 1.5, backend="triton", B=16)
    ref = x.astype(np.float64) * 1.5 + 1.0   # computed in fp32 inside the tile, rounded once on store
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=ulp, atol=ulp)


@SETTINGS
@given(M=EDGE, N=EDGE, K=st.sampled_from([1, 5, 16, 33, 70]),
       tiles=st.sampled_from([(16, 16, 16), (16, 32, 32), (8, 16, 8)]), unsigned=st.booleans(),
       seed=st.integers(0, 2**16))
def test_int8_gemm_is_exact_in_int32(M, N, K, tiles, unsigned, seed):
    rng = np.random.default_rng(seed)
    lo, hi, dtype = (0, 256, np.uint8) if unsigned else (-128, 128, np.int8)
    a = rng.integers(lo, hi, (M, K)).astype(dtype)
    b = rng.integers(lo, hi, (K, N)).astype(dtype)
    c = np.zeros((M, N), np.int32)
    BM, BN, BK = tiles    # BK=16: an exact fp16 tl.dot; 32: the int8 tl.dot; 8: broadcast-multiply-sum
    gemm[(tc.cdiv_host(M, BM), tc.cdiv_host(N, BN))](a, b, c, backend="triton", BM=BM, BN=BN, BK=BK)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


@tc.kernel
def carried_pairs(X, Y, n, B: tc.constexpr):
    """Loop-carried tiles that read each other's previous values (a swap, and an update
    after another value's update read the old one) must not be overwritten too early."""
    x = tc.load(X, (0,), (B,))
    a = x
    b = x * 0.5
    c = x + 1.0
    for i in tc.range(0, n):
        a, b = b, a + b
        c = c * 0.5
        d = c + a
        a = a + d * 0.0 + 1.0
    tc.store(Y, (0, 0), tc.expand_dims(a, 0), (1, B))
    tc.store(Y, (1, 0), tc.expand_dims(b, 0), (1, B))
    tc.store(Y, (2, 0), tc.expand_dims(c, 0), (1, B))


def test_loop_carried_tiles_keep_their_previous_values():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    y = np.zeros((3, 16), np.float32)
    carried_pairs[(1,)](x, y, 5, backend="triton", B=16)
    a, b, c = x.astype(np.float64), x * 0.5, x + 1.0
    for _ in range(5):
        a, b = b, a + b
        c = c * 0.5
        a = a + 1.0
    np.testing.assert_allclose(y, np.stack([a, b, c]), rtol=1e-6, atol=1e-6)


@tc.kernel
def bool_io(X, M, Y, Z, B: tc.constexpr):
    p = tc.program_id(0)
    x = tc.load(X, (p * B,), (B,))
    m = tc.load(M, (p * B,), (B,))
    tc.store(Y, (p * B,), tc.where(m, x, -x))
    tc.store(Z, (p * B,), x > 0.0)


@SETTINGS
@given(n=EDGE, seed=st.integers(0, 2**16))
def test_bool_tensors_in_and_out(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    m = rng.random(n) < 0.5
    y, z = np.zeros(n, np.float32), np.zeros(n, bool)
    bool_io[(tc.cdiv_host(n, 16),)](x, m, y, z, backend="triton", B=16)
    np.testing.assert_array_equal(y, np.where(m, x, -x))
    np.testing.assert_array_equal(z, x > 0)


@tc.kernel
def padded_lanes(X, IDX, T, Y, BR: tc.constexpr, BC: tc.constexpr):
    """Non-power-of-two tiles: reductions over padded axes, a gather through a padded index
    tile and a padded inner dot axis must ignore the padding lanes."""
    p = tc.program_id(0)
    x = tc.load(X, (p * BR, 0), (BR, BC), padding=0.0)
    rmax = tc.max(x, 1)                        # x < 0: a padding lane of 0 would win
    cmin = tc.min(-x, 0)                       # -x > 0: a padding lane of 0 would win
    g = tc.gather(tc.load(T, (0,), (BC,))[None, :], tc.load(IDX, (p * BR, 0), (BR, BC)), 1)
    sq = tc.dot(x, tc.trans(x))                # inner extent BC
    tc.store(Y, (p * BR, 0), tc.expand_dims(rmax, 1), (BR, 1))
    tc.store(Y, (p * BR, 1), tc.expand_dims(tc.sum(g, 1), 1), (BR, 1))
    tc.store(Y, (p * BR, 2), tc.expand_dims(tc.sum(sq, 1), 1), (BR, 1))
    tc.store(Y, (p * BR, 3), tc.expand_dims(tc.max(cmin[None, :] + tc.zeros((BR, BC), tc.float32), 1), 1), (BR, 1))


@SETTINGS
@given(M=st.sampled_from([1, 5, 12, 23]), tiles=st.sampled_from([(6, 5), (12, 3), (3, 20), (17, 17)]),
       seed=st.integers(0, 2**16))
def test_non_power_of_two_tiles_ignore_their_padding(M, tiles, seed):
    BR, BC = tiles
    rng = np.random.default_rng(seed)
    x = -rng.uniform(0.5, 2.0, (M, BC)).astype(np.float32)
    idx = rng.integers(0, BC, (M, BC)).astype(np.int32)
    table = rng.standard_normal(BC).astype(np.float32)
    y = np.full((M, 4), np.nan, np.float32)
    padded_lanes[(tc.cdiv_host(M, BR),)](x, idx, table, y, backend="triton", BR=BR, BC=BC)
    x64 = x.astype(np.float64)
    rows = tc.cdiv_host(M, BR) * BR
    xp = np.zeros((rows, BC))      # the box's rows past the tensor load as padding (0)
    xp[:M] = x64
    cmin = np.concatenate([(-xp[i:i + BR]).min(0, keepdims=True).repeat(BR, 0) for i in range(0, rows, BR)])[:M]
    ref = np.stack([x64.max(1), table[idx].sum(1), (x64 @ x64.T * _same_block(M, BR)).sum(1), cmin.max(1)], 1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _same_block(M, B):
    blocks = np.arange(M) // B
    return blocks[:, None] == blocks[None, :]


@tc.kernel
def plane_rows(X, Y, B: tc.constexpr):
    """Program p copies plane p // 2 of a 3-D tensor: the first axis is a runtime scalar
    offset, so the load's mask ANDs a scalar bound test with the row and column tests."""
    p = tc.program_id(0)
    tile = tc.load(X, (p // 2, 0, 0), (None, B, B), padding=-1.0)
    tc.store(Y, (p, 0, 0), tile * 2.0, (None, B, B))


@SETTINGS
@given(planes=st.integers(1, 4), n=EDGE, m=EDGE, seed=st.integers(0, 2**16))
def test_loads_indexed_by_a_runtime_scalar_axis(planes, n, m, seed):
    x = np.random.default_rng(seed).standard_normal((planes, n, m)).astype(np.float32)
    y = np.zeros((2 * planes + 1, n, m), np.float32)   # the last program reads a plane past the end
    plane_rows[(2 * planes + 1,)](x, y, B=8, backend="triton")
    want = np.concatenate([np.repeat(x, 2, axis=0), np.full((1, n, m), -1.0, np.float32)])[:, :8, :8] * 2.0
    np.testing.assert_array_equal(y[:, :8, :8], want)


@tc.kernel
def skinny_dot(A, B, C, M: tc.constexpr, K: tc.constexpr, N: tc.constexpr):
    """One program: C = A @ B + A @ B with one extent below tl.dot's 16 (decode's GQA rows)."""
    a = tc.load(A, (0, 0), (M, K))
    b = tc.load(B, (0, 0), (K, N))
    tc.store(C, (0, 0), tc.dot(a, b, tc.dot(a, b)))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mkn=st.sampled_from([(4, 128, 64), (1, 64, 128), (64, 128, 2), (8, 8, 128), (2, 128, 32)]),
       seed=st.integers(0, 2**16))
def test_skinny_dots_too_big_to_broadcast_match_numpy(mkn, seed):
    m, k, n = mkn
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    skinny_dot[(1,)](a, b, c, M=m, K=k, N=n, backend="triton")
    np.testing.assert_allclose(c, 2 * (a.astype(np.float64) @ b), rtol=1e-4, atol=1e-4)


def test_skinny_dots_pad_to_tl_dot_instead_of_a_broadcast_product():
    """(4, 128) @ (128, 64) broadcast is 256 products per thread; inside decode's key loop
    ptxas spilled it (255 registers) where the padded tl.dot took 96 (the registry's offline
    compile test checks decode)."""
    from tilec.backends import get
    a, b, c = (np.zeros(s, np.float32) for s in ((4, 128), (128, 64), (4, 64)))
    fn = skinny_dot.ir(skinny_dot.arg_types([a, b, c]), dict(M=4, K=128, N=64))
    src = get("triton").render(fn, {})
    assert "tl.dot(" in src and "[:, :, None] *" not in src
    tiny = skinny_dot.ir(skinny_dot.arg_types([a[:, :16], b[:16, :8], c[:, :8]]), dict(M=4, K=16, N=8))
    assert "[:, :, None] *" in get("triton").render(tiny, {})   # 512 products: broadcast stays
