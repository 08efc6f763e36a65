"""Integer dots on bytes (int8 x uint8 -> int32): the Numba helper's routes, the int-dot-rows
pass on IR, the DSL kernels on every backend, and quant_gemm's int8-activation form held to
exact integer math and to its documented error bound against the exact fp32 path."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
import tilec as tc
from ops import quant_q8 as Q
from ops.backends_for_tests import BACKENDS
from tilec import dtypes as dt
from tilec.backends.numba import intdot
from tilec.ir import TensorType
from tilec.passes import clone, run_pipeline
from tilec.passes.int_dots import int_dot_rows, value_bound

ROUTES = [pytest.param(r, marks=[] if intdot.route_runs(r) else [pytest.mark.skip(reason=f"this CPU lacks {r}")])
          for r in ("vnni", "avx2", "scalar")]


# -- the helper, each route --------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 5), n=st.integers(1, 9), k=st.sampled_from([1, 2, 7, 31, 32, 33, 64, 97, 128, 130]),
       unpack=st.sampled_from([(0, 255), (0, 15), (4, 255), (4, 15), (1, 7), (0, 127)]),
       accumulate=st.booleans(), seed=st.integers(0, 2**16))
def test_int_dot_routes_are_exact(route, m, n, k, unpack, accumulate, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)       # -128 included: no sign trick may break
    b = rng.integers(0, 256, (n, k)).astype(np.uint8)
    shift, mask = unpack
    codes = (b.astype(np.int64) >> shift) & mask
    start = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    out = start.copy()
    intdot.ROUTES[route](a, b, out, int(codes.max(initial=0)) if mask < 255 else 255 >> shift, accumulate, shift, mask)
    want = a.astype(np.int64) @ codes.T + (start if accumulate else 0)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("route", ROUTES)
def test_int_dot_reads_strided_rows_and_smaller_views(route):
    rng = np.random.default_rng(3)
    big = rng.integers(-128, 128, (6, 200)).astype(np.int8)
    a = big[::2, 5:133]                                   # rows a stride apart, contiguous within
    b = rng.integers(0, 16, (4, 128)).astype(np.uint8)
    out = np.full((5, 6), 7, np.int32)                    # larger than a @ b.T: the rest is zeros
    intdot.ROUTES[route](a, b, out, 15, False)
    want = np.zeros((5, 6), np.int64)
    want[:3, :4] = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(out, want)


def test_best_route_follows_the_features():
    assert intdot.best_route({"avx2", "avx512vnni", "avx512vl"}) == "vnni"
    assert intdot.best_route({"avx2", "avxvnni"}) == "vnni"
    assert intdot.best_route({"avx2", "avx512vnni"}) == "avx2"     # 256-bit vpdpbusd needs VL
    assert intdot.best_route({"avx2", "fma"}) == "avx2"
    assert intdot.best_route({"sse4.2"}) == "scalar"


# -- the DSL concept on every backend ----------------------------------------------------------

@tc.kernel
def byte_dot(A, B, C, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr, UNPACK: tc.constexpr):
    pm, pn = tc.program_id(0), tc.program_id(1)
    acc = tc.zeros((BM, BN), tc.int32)
    for k in tc.range(0, A.shape[1], BK):
        b = tc.load(B, (pn * BN, k), (BN, BK))
        if UNPACK:
            b = (b >> 4) & 7
        acc = tc.dot(tc.load(A, (pm * BM, k), (BM, BK)), tc.trans(b), acc)
    tc.store(C, (pm * BM, pn * BN), acc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("unpack", [False, True])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.sampled_from([1, 3, 17]), n=st.sampled_from([1, 5, 33]), k=st.sampled_from([1, 37, 64, 96]),
       seed=st.integers(0, 2**16))
def test_byte_dot_kernel_is_exact_on_every_backend(backend, unpack, m, n, k, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(0, 256, (n, k)).astype(np.uint8)
    c = np.zeros((m, n), np.int32)
    byte_dot[(-(-m // 16), -(-n // 16))](a, b, c, backend=backend, BM=16, BN=16, BK=32, UNPACK=unpack)
    codes = (b.astype(np.int64) >> 4) & 7 if unpack else b.astype(np.int64)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ codes.T)


def _in_quads(w: np.ndarray) -> np.ndarray:
    """(K, N) -> (K/4, 4N): w[k, n] at [k // 4, 4 n + k % 4], the order tc.from_quads reads."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k // 4, 4, n).transpose(0, 2, 1).reshape(k // 4, 4 * n))


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 7), n=st.sampled_from([1, 7, 8, 9, 31, 32, 33, 72]), k=st.sampled_from([1, 3, 4, 64, 130]),
       unpack=st.sampled_from([(0, 255), (0, 15), (4, 255), (1, 7)]), accumulate=st.booleans(),
       seed=st.integers(0, 2**16))
def test_int_dot_quads_routes_are_exact(route, m, n, k, unpack, accumulate, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(0, 256, (-(-k // 4) * 4, n)).astype(np.uint8)     # a's depth may end inside a quad
    shift, mask = unpack
    codes = (w.astype(np.int64) >> shift) & mask
    start = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    out = start.copy()
    intdot.QUAD_ROUTES[route](a, _in_quads(w), out, int(codes.max(initial=0)), accumulate, shift, mask)
    np.testing.assert_array_equal(out, a.astype(np.int64) @ codes[:k] + (start if accumulate else 0))



@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 5), n=st.sampled_from([1, 8, 9, 33]), k=st.sampled_from([3, 4, 64, 130]),
       pad=st.tuples(*[st.integers(0, 5)] * 4), seed=st.integers(0, 2**16))
def test_int_dot_quads_at_reads_windows_in_place(route, m, n, k, pad, seed):
    """The by-address form (what kernels call on tiles read in place) on windows at offsets inside
    bigger arrays equals the plain form on those windows' copies."""
    rng = np.random.default_rng(seed)
    (a0, a1, b0, b1), kq = pad, -(-k // 4)
    big_a = rng.integers(-128, 128, (a0 + m + 2, a1 + k + 3)).astype(np.int8)
    big_b = rng.integers(0, 256, (b0 + kq + 1, b1 + 4 * n + 5)).astype(np.uint8)
    a, b = big_a[a0:a0 + m, a1:a1 + k], big_b[b0:b0 + kq, b1:b1 + 4 * n]
    want = np.zeros((m, n), np.int32)
    intdot.QUAD_ROUTES[route](np.ascontiguousarray(a), np.ascontiguousarray(b), want, 15, False, 4, 15)
    got = np.zeros((m, n), np.int32)
    intdot.QUAD_AT_ROUTES[route](big_a, np.uintp(a0), np.uintp(a1), m, k, big_b, np.uintp(b0), np.uintp(b1), kq,
                                 4 * n, got, 15, False, 4, 15)
    np.testing.assert_array_equal(got, want)
    codes = (_in_quads_inverse(np.ascontiguousarray(b)).astype(np.int64) >> 4) & 15
    np.testing.assert_array_equal(got, a.astype(np.int64) @ codes[:k])


def _in_quads_inverse(q: np.ndarray) -> np.ndarray:
    """(K/4, 4N) in k-quad order -> (K, N)."""
    kq, n4 = q.shape
    return q.reshape(kq, n4 // 4, 4).transpose(0, 2, 1).reshape(4 * kq, n4 // 4)

@tc.kernel
def quad_dot(A, B, C, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr, UNPACK: tc.constexpr):
    pm, pn = tc.program_id(0), tc.program_id(1)
    acc = tc.zeros((BM, BN), tc.int32)
    for k in tc.range(0, A.shape[1], BK):
        b = tc.load(B, (k // 4, pn * BN * 4), (BK // 4, BN * 4))
        if UNPACK:
            b = (b >> 4) & 7
        acc = tc.dot(tc.load(A, (pm * BM, k), (BM, BK)), tc.from_quads(b), acc)
    tc.store(C, (pm * BM, pn * BN), acc)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.sampled_from([1, 3, 17]), n=st.sampled_from([1, 5, 33]), k=st.sampled_from([4, 36, 64, 96]),
       unpack=st.booleans(), seed=st.integers(0, 2**16))
def test_quad_dot_kernel_is_exact_on_every_backend(backend, m, n, k, unpack, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(0, 256, (k, n)).astype(np.uint8)
    c = np.zeros((m, n), np.int32)
    quad_dot[(-(-m // 16), -(-n // 16))](a, _in_quads(w), c, backend=backend, BM=16, BN=16, BK=32, UNPACK=unpack)
    codes = (w.astype(np.int64) >> 4) & 7 if unpack else w.astype(np.int64)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ codes)


# -- the pass, on IR ---------------------------------------------------------------------------

BYTE_TYPES = {"A": TensorType(2, dt.int8), "B": TensorType(2, dt.uint8), "C": TensorType(2, dt.int32)}


def _lowered(unpack: bool):
    fn = run_pipeline(clone(byte_dot.ir(BYTE_TYPES, {"BM": 4, "BN": 8, "BK": 32, "UNPACK": unpack})))
    before = clone(fn)
    return before, int_dot_rows(fn, {})


def _dots(fn):
    return [op for op in fn.walk() if op.kind == "dot"]


def test_int_dot_rows_reads_the_transposed_operand_by_rows_and_unpacks_in_registers():
    before, after = _lowered(True)
    (d0,), (d1,) = _dots(before), _dots(after)
    assert d0.operands[1].producer.kind == "trans" and "rows_of_transpose" not in d0.attrs
    assert d1.attrs["rows_of_transpose"] and d1.attrs["b_unpack"] == (4, 7) and d1.attrs["b_max"] == 7
    assert d1.operands[1].producer.kind == "load" and d1.operands[1].shape == (8, 32)
    kinds = [op.kind for op in after.walk()]
    assert "trans" not in kinds and not any(op.kind == "binary" and op.attrs["op"] in ("and", "shr")
                                            for op in after.walk())


def test_int_dot_rows_reads_quads_in_place_and_unpacks_in_registers():
    types = {"A": TensorType(2, dt.int8), "B": TensorType(2, dt.uint8), "C": TensorType(2, dt.int32)}
    fn = run_pipeline(clone(quad_dot.ir(types, {"BM": 4, "BN": 8, "BK": 32, "UNPACK": True})))
    (d0,) = _dots(fn)
    assert d0.operands[1].producer.kind == "from_quads" and d0.operands[1].shape == (32, 8)
    (d1,) = _dots(int_dot_rows(fn, {}))
    assert d1.attrs["quads"] and "rows_of_transpose" not in d1.attrs
    assert d1.attrs["b_unpack"] == (4, 7) and d1.attrs["b_max"] == 7
    assert d1.operands[1].producer.kind == "load" and d1.operands[1].shape == (8, 32)
    assert not any(op.kind == "from_quads" for op in fn.walk())


def test_int_dot_rows_without_unpacking_keeps_the_full_byte_range():
    _, after = _lowered(False)
    (d,) = _dots(after)
    assert d.attrs["rows_of_transpose"] and "b_unpack" not in d.attrs and d.attrs["b_max"] == 255


@tc.kernel
def codes_also_stored(A, B, C, D, BK: tc.constexpr):
    b = tc.load(B, (0, 0), (8, BK)) & 15
    tc.store(D, (0, 0), b)                   # a second reader: the codes must exist as a tile
    tc.store(C, (0, 0), tc.dot(tc.load(A, (0, 0), (4, BK)), tc.trans(b)))


@tc.kernel
def float_dot(A, B, C, BK: tc.constexpr):
    tc.store(C, (0, 0), tc.dot(tc.load(A, (0, 0), (4, BK)), tc.trans(tc.load(B, (0, 0), (8, BK)))))


def test_int_dot_rows_leaves_shared_codes_and_float_dots_alone():
    types = {**BYTE_TYPES, "D": TensorType(2, dt.uint8)}
    fn = int_dot_rows(run_pipeline(clone(codes_also_stored.ir(types, {"BK": 32}))), {})
    (d,) = _dots(fn)
    assert d.attrs["rows_of_transpose"] and "b_unpack" not in d.attrs and d.attrs["b_max"] == 15
    ftypes = {n: TensorType(2, dt.float32) for n in "ABC"}
    fn = int_dot_rows(run_pipeline(clone(float_dot.ir(ftypes, {"BK": 32}))), {})
    (d,) = _dots(fn)
    assert "rows_of_transpose" not in d.attrs and d.operands[1].producer.kind == "trans"


def test_value_bound_reads_masks_and_shifts():
    _, after = _lowered(False)
    (d,) = _dots(after)
    assert value_bound(d.operands[1]) == 255
    before, _ = _lowered(True)
    (d,) = _dots(before)
    b = d.operands[1].producer.operands[0]          # (B >> 4) & 7, before the transpose
    assert value_bound(b) == 7 and value_bound(b.producer.operands[0]) == 15


# -- quant_gemm with int8 activations ----------------------------------------------------------

def _case(rng, m, k, n, bits, group, symmetric, heavy=False):
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    if heavy:   # outlier input channels, as in the OPTQ/AWQ analyses
        x[:, rng.choice(k, max(1, k // 32), replace=False)] *= 30.0
    return x, ops.quantize(w, bits, group, symmetric)


def _check_q8(y, x, qw, backend):
    xq, xs, _ = Q.quantize_rows(x, qw.config.group_size, backend)
    xq, xs = np.asarray(xq), np.asarray(xs)
    # the quantizer: the reference's codes, or one off where x / s sits within rounding of a tie
    ref_q, ref_s = Q.quantize_activations(x, qw.config.group_size)
    np.testing.assert_allclose(xs, ref_s, rtol=2e-7)
    off = np.abs(xq.astype(np.int64) - ref_q) > 0
    assert np.abs(xq.astype(np.int64) - ref_q).max(initial=0) <= 1
    scaled = np.asarray(x, np.float64) / np.repeat(np.maximum(ref_s, 1e-30), qw.config.group_size, axis=1)
    assert np.all(np.abs(np.abs(scaled[off] - np.floor(scaled[off])) - 0.5) < 1e-4)
    # exact integer math: the float64 value of the kernel's own sum, to fp32 rounding
    ref = Q.reference_q8(xq, xs, qw)
    scale = np.abs(ref).max(initial=0) + 1e-30
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * scale)
    # the documented bound against the exact fp32 path
    exact = np.asarray(x, np.float64) @ qw.dequantize().astype(np.float64)
    assert np.all(np.abs(y - exact) <= Q.act_quant_bound(x, qw) * (1 + 1e-4) + 2e-6 * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (8, False)])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.sampled_from([1, 3, 16, 17]), groups=st.integers(1, 3), n=st.sampled_from([2, 26, 34, 130]),
       group=st.sampled_from([32, 64]), heavy=st.booleans(), seed=st.integers(0, 2**16))
def test_quant_gemm_int8_activations(backend, bits, symmetric, m, groups, n, group, heavy, seed):
    if backend != "numba" and (m > 3 or n > 34):
        m, n = min(m, 3), min(n, 34)      # emulated backends: small shapes only
    rng = np.random.default_rng(seed)
    x, qw = _case(rng, m, groups * group, n, bits, group, symmetric, heavy)
    y = ops.quant_gemm(x, qw, act_quant="int8", backend=backend)
    assert y.shape == (m, n) and y.dtype == np.float32
    _check_q8(y, x, qw, backend)


def test_quant_gemm_int8_activations_one_dimensional():
    rng = np.random.default_rng(5)
    x, qw = _case(rng, 1, 256, 34, 4, 128, False)
    y1 = ops.quant_gemm(x[0], qw, act_quant="int8")
    assert y1.shape == (34,)
    np.testing.assert_array_equal(y1[None], ops.quant_gemm(x, qw, act_quant="int8"))


def test_act_quant_is_checked():
    rng = np.random.default_rng(0)
    x, qw = _case(rng, 1, 64, 8, 4, 32, True)
    with pytest.raises(tc.InputError, match="act_quant"):
        ops.quant_gemm(x, qw, act_quant="int4")
    odd = ops.quantize(rng.standard_normal((63, 8)).astype(np.float32), 4, 21)
    with pytest.raises(tc.InputError, match="group size 21"):
        ops.quant_gemm(x[:, :63], odd, act_quant="int8")


def test_the_bound_is_tight_enough_to_mean_something():
    """The stated bound is within 50x of the error the rounding makes on Gaussian data (a bound
    loose by orders of magnitude would pass anything)."""
    rng = np.random.default_rng(1)
    x, qw = _case(rng, 4, 512, 64, 4, 128, False)
    y = ops.quant_gemm(x, qw, act_quant="int8")
    exact = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    bound = Q.act_quant_bound(x, qw)
    ratio = np.abs(y - exact) / bound
    assert ratio.max() <= 1.0 and ratio.max() > 0.02


@pytest.mark.parametrize("unpack", [False, True])
def test_byte_dot_compiles_to_dp4a_without_spills(unpack):
    from tilec.backends import get
    from tilec.backends.cuda import offline
    if offline.available() is not None:
        pytest.skip(offline.available())
    fn = run_pipeline(clone(byte_dot.ir(BYTE_TYPES, {"BM": 16, "BN": 16, "BK": 32, "UNPACK": unpack})))
    rep = get("cuda").compile_offline(fn, {"threads": 128}, "sm_80")
    assert "dp4a.s32.u32" in rep.ptx and rep.spills_bytes == 0


def test_quant_gemm_q8_kernel_in_quads_compiles_to_dp4a_without_spills():
    from tilec.backends import get
    from tilec.backends.cuda import offline
    if offline.available() is not None:
        pytest.skip(offline.available())
    types = {"XQ": TensorType(2, dt.int8), "XS": TensorType(2, dt.float32), "XSUM": TensorType(2, dt.int32),
             "QV": TensorType(2, dt.uint8), "S": TensorType(2, dt.float32), "Z": TensorType(2, dt.uint8),
             "Y": TensorType(2, dt.float32)}
    fn = run_pipeline(clone(Q.quant_gemm_q8_kernel.ir(types, {"BM": 4, "W": Q.WIDTH, "G": 128, "BITS": 4,
                                                              "SYMMETRIC": False})))
    rep = get("cuda").compile_offline(fn, {"threads": 128}, "sm_80")
    assert "dp4a.s32.u32" in rep.ptx and rep.spills_bytes == 0
