"""Every IR kind, run through the Numba backend and compared with NumPy."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilec as tc
from tilec.kernel import cdiv_host
from tilec.printer import format_function


@tc.kernel
def row_softmax(X, Y, BM: tc.constexpr, BN: tc.constexpr):
    """Softmax over rows of width <= BN: reduce, where, exp2, expand_dims, broadcast, arange."""
    pm = tc.program_id(0)
    x = tc.load(X, (pm * BM, 0), (BM, BN))
    cols = tc.arange(BN)
    x = tc.where(cols[None, :] < X.shape[1], x, -float("inf"))
    m = tc.max(x, axis=1)
    p = tc.exp2((x - m[:, None]) * 1.4426950408889634)
    tc.store(Y, (pm * BM, 0), p / tc.sum(p, axis=1, keepdims=True))


@tc.kernel
def powers_of_two(X, Y, B: tc.constexpr):
    """2**x elementwise (float32: the backend's own vectorized exp2)."""
    pb = tc.program_id(0)
    tc.store(Y, (pb * B,), tc.exp2(tc.load(X, (pb * B,), (B,))))


@tc.kernel
def column_stats(X, OUT, BK: tc.constexpr, BN: tc.constexpr):
    """Loop with two carried values, reductions along axis 0, a scalar if, a static loop."""
    pn = tc.program_id(0)
    total = tc.zeros((BN,), tc.float32)
    biggest = tc.full((BN,), -float("inf"), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        t = tc.load(X, (k, pn * BN), (BK, BN), padding=-float("inf"))
        biggest = tc.maximum(biggest, tc.max(t, axis=0))
        total = total + tc.sum(tc.where(t > -float("inf"), t, 0.0), axis=0)
    scale = 1.0
    if X.shape[0] > 100:
        scale = 0.5
    for r in tc.static_range(2):
        total = total * (r + 1)
    tc.store(OUT, (0, pn * BN), total * scale, (None, BN))
    tc.store(OUT, (1, pn * BN), biggest, (None, BN))


@tc.func
def nibble(byte, which):
    return (byte >> (4 * which)) & 15


@tc.kernel
def unpack_lookup(P, T, OUT, B: tc.constexpr):
    """uint8 unpacking with shifts/masks, then a table gather (the LUT-GEMM vocabulary)."""
    pb = tc.program_id(0)
    packed = tc.load(P, (pb * B,), (B,))
    lo = tc.cast(nibble(packed, 0), tc.int32)
    hi = tc.cast(nibble(packed, 1), tc.int32)
    table = tc.load(T, (0,), (16,))
    both = tc.reshape(tc.gather(table[None, :], tc.expand_dims(lo, 0), 1), (B,)) + \
        tc.reshape(tc.gather(table[None, :], tc.expand_dims(hi, 0), 1), (B,))
    tc.store(OUT, (pb * B,), both)


@tc.kernel
def transpose_dot(A, B, C, BT: tc.constexpr):
    """trans + dot on int8 (int32 accumulation) and a cast back."""
    p = tc.program_id(0)
    a = tc.load(A, (0, p * BT), (BT, BT))
    b = tc.load(B, (0, 0), (BT, BT))
    tc.store(C, (p * BT, 0), tc.cast(tc.dot(tc.trans(a), b), tc.int32))


@settings(max_examples=30)
@given(m=st.integers(1, 40), n=st.integers(1, 16), seed=st.integers(0, 1000))
def test_row_softmax(m, n, seed):
    x = np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32) * 10
    y = np.empty_like(x)
    row_softmax[(cdiv_host(m, 8),)](x, y, BM=8, BN=16)
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_exp2_within_two_ulps_over_the_float32_range_and_exact_at_the_ends():
    """exp2 against float64 NumPy: relative error under 2**-22 where 2**x is a normal float32,
    0 below -126 (no subnormals), inf from 128 on (also for inf), NaN for NaN."""
    specials = [np.nan, np.inf, -np.inf, 128.0, np.nextafter(np.float32(128), np.float32(0)), 127.0, -126.0,
                np.nextafter(np.float32(-126), np.float32(-127)), -127.0, -149.0, 0.0, -0.0, 1e30, -1e30, 0.5, -0.5]
    x = np.concatenate([np.linspace(-140, 140, 300_007, dtype=np.float32), np.float32(specials)])
    y = np.empty_like(x)
    powers_of_two[(cdiv_host(x.size, 256),)](x, y, B=256)
    with np.errstate(over="ignore"):
        want = np.exp2(x.astype(np.float64))
    normal = (x >= -126) & (x < 128)
    np.testing.assert_allclose(y[normal], want[normal], rtol=2.0 ** -22, atol=0)
    assert (y[x < -126] == 0).all()
    assert np.isposinf(y[x >= 128]).all()
    assert np.isnan(y[np.isnan(x)]).all()


@settings(max_examples=30)
@given(m=st.integers(1, 130), n=st.integers(1, 40), seed=st.integers(0, 1000))
def test_column_stats(m, n, seed):
    x = np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32)
    out = np.zeros((2, n), np.float32)
    column_stats[(cdiv_host(n, 8),)](x, out, BK=16, BN=8)
    scale = 0.5 if m > 100 else 1.0
    np.testing.assert_allclose(out[0], x.sum(0, dtype=np.float64) * 2 * scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[1], x.max(0))


@settings(max_examples=20)
@given(n=st.integers(1, 100), seed=st.integers(0, 1000))
def test_unpack_lookup(n, seed):
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, n, dtype=np.uint8)
    table = rng.standard_normal(16).astype(np.float32)
    out = np.zeros(n, np.float32)
    unpack_lookup[(cdiv_host(n, 32),)](packed, table, out, B=32)
    np.testing.assert_allclose(out, table[packed & 15] + table[packed >> 4], rtol=1e-6)


@tc.kernel
def lookup_computed_tables(T, IDX, OUT, B: tc.constexpr):
    """Gathers whose tables are computed tiles read once (an expand_dims of a load; a table
    made only from an arange): a table is indexed by name, so it must exist as a tile."""
    p = tc.program_id(0)
    idx = tc.load(IDX, (p * B,), (B,))
    loaded = tc.gather(tc.expand_dims(tc.load(T, (0,), (8,)), 0), tc.expand_dims(idx & 7, 0), 1)
    squares = tc.gather(tc.expand_dims(tc.cast(tc.arange(8) * tc.arange(8), tc.float32), 0),
                        tc.expand_dims(idx & 7, 0), 1)
    tc.store(OUT, (p * B,), tc.reshape(loaded + squares, (B,)))


@settings(max_examples=15)
@given(n=st.integers(1, 70), seed=st.integers(0, 1000))
def test_gather_from_computed_tables(n, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal(8).astype(np.float32)
    idx = rng.integers(-50, 50, n).astype(np.int32)
    out = np.zeros(n, np.float32)
    lookup_computed_tables[(cdiv_host(n, 16),)](table, idx, out, B=16)
    k = idx & 7
    np.testing.assert_allclose(out, table[k] + (k * k).astype(np.float32), rtol=1e-6)


@tc.kernel
def squared_row_sums(X, Y, BM: tc.constexpr, BN: tc.constexpr):
    """Tiles read element by element from a tensor never written: read in place where the box
    lies inside the tensor, from a padded copy where it crosses the edge."""
    pm = tc.program_id(0)
    total = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, X.shape[1], BN):
        x = tc.load(X, (pm * BM, k), (BM, BN), padding=0.0)
        total = total + tc.sum(x * x, axis=1)
    tc.store(Y, (pm * BM,), total)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40),
       view=st.sampled_from(["plain", "read-only", "transposed", "strided"]), seed=st.integers(0, 1000))
def test_tiles_read_in_place_from_any_layout(m, n, view, seed):
    side = 2 * max(m, n) + 1
    base = np.random.default_rng(seed).standard_normal((side, side)).astype(np.float32)
    x = {"plain": np.ascontiguousarray(base[:m, :n]), "read-only": np.ascontiguousarray(base[:m, :n]),
         "transposed": base.T[:m, :n], "strided": base[1::2, ::2][:m, :n]}[view]
    assert x.shape == (m, n)
    x.flags.writeable = view != "read-only"
    y = np.zeros(m, np.float32)
    squared_row_sums[(cdiv_host(m, 8),)](x, y, BM=8, BN=16)
    np.testing.assert_allclose(y, (x.astype(np.float64) ** 2).sum(1), rtol=1e-5, atol=1e-6)


@tc.kernel
def read_then_overwrite(X, Y, B: tc.constexpr):
    """A tile loaded before its tensor is overwritten keeps the values it loaded."""
    p = tc.program_id(0)
    x = tc.load(X, (p * B,), (B,))
    tc.store(X, (p * B,), tc.zeros((B,), tc.float32))
    tc.store(Y, (p * B,), x + 1.0)


def test_tile_of_a_tensor_the_kernel_writes_is_a_copy():
    x = np.arange(20, dtype=np.float32)
    y = np.zeros(20, np.float32)
    read_then_overwrite[(3,)](x, y, B=8)
    np.testing.assert_array_equal(y, np.arange(20, dtype=np.float32) + 1)
    np.testing.assert_array_equal(x, np.zeros(20, np.float32))


@tc.kernel
def summed_lookups(T, IDX, OUT, R: tc.constexpr, J: tc.constexpr, N: tc.constexpr, KEEP: tc.constexpr,
                   FLAT: tc.constexpr):
    """Rows of a 16-entry table gathered along the last axis and summed over the middle one
    (LUT-GEMM's inner step); the index is shared by every row (broadcast). FLAT: the index is
    a tile of its own (reshaped from a flat load), else the load read where it lies."""
    tables = tc.load(T, (0, 0, 0), (R, J, 16))
    if FLAT:
        idx = tc.reshape(tc.load(IDX, (0,), (J * N,)), (J, N))
    else:
        idx = tc.load(IDX, (0, 0), (J, N))
    hits = tc.sum(tc.gather(tables, tc.expand_dims(idx, 0), 2), 1, keepdims=KEEP)
    tc.store(OUT, (0, 0), tc.reshape(hits, (R, N)))


@settings(max_examples=10, deadline=None)   # each example is a compile (shapes are constexprs)
@given(r=st.sampled_from([1, 3]), j=st.sampled_from([1, 5]), n=st.sampled_from([1, 16, 21, 48]),
       wide=st.booleans(), keep=st.booleans(), flat=st.booleans(), seed=st.integers(0, 1000))
def test_summed_table_lookups(r, j, n, wide, keep, flat, seed):
    rng = np.random.default_rng(seed)
    tables = rng.standard_normal((r, j, 16)).astype(np.float32)
    idx = rng.integers(0, 16, (j, n)).astype(np.int32 if wide else np.uint8)
    out = np.zeros((r, n), np.float32)
    summed_lookups[(1,)](tables, idx.reshape(-1) if flat else idx, out, R=r, J=j, N=n, KEEP=keep, FLAT=flat)
    want = np.take_along_axis(tables, np.broadcast_to(idx[None], (r, j, n)).astype(np.int64), 2).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_summed_lookups_use_the_register_tables_where_the_cpu_has_them():
    from tilec.backends.numba import support
    from tilec.backends.numba.renderer import render
    fn = summed_lookups.ir({"T": tc.ir.TensorType(3, tc.float32), "IDX": tc.ir.TensorType(1, tc.uint8),
                            "OUT": tc.ir.TensorType(2, tc.float32)},
                           {"R": 2, "J": 4, "N": 32, "KEEP": False, "FLAT": True})
    source = render(fn, {"dot": "blas", "parallel": True})
    assert ("rt.lookup_sum(" in source) == support.PERMUTE16


@tc.kernel
def row_extremes(X, OUT, BM: tc.constexpr, BN: tc.constexpr, KEEP: tc.constexpr):
    """max, min and sum along rows of a tile that several readers share (so it is a tile of its
    own, reduced 16 lanes at a time), with and without keepdims."""
    x = tc.load(X, (0, 0), (BM, BN), padding=-float("inf")) * 2.0
    tc.store(OUT, (0, 0), tc.reshape(tc.max(x, 1, keepdims=KEEP), (BM, 1)))
    tc.store(OUT, (0, 1), tc.reshape(tc.min(x, 1, keepdims=KEEP), (BM, 1)))
    tc.store(OUT, (0, 2), tc.reshape(tc.sum(tc.where(x > -float("inf"), x, 0.0), 1, keepdims=KEEP), (BM, 1)))


@settings(max_examples=10, deadline=None)   # each example is a compile (shapes are constexprs)
@given(bm=st.sampled_from([1, 3, 8]), bn=st.sampled_from([1, 16, 17, 40, 64]), cols=st.integers(1, 64),
       keep=st.booleans(), seed=st.integers(0, 1000))
def test_row_max_min_sum(bm, bn, cols, keep, seed):
    x = np.random.default_rng(seed).standard_normal((bm, cols)).astype(np.float32)
    x[0, -1] = -np.inf                                   # a masked score, as attention has
    out = np.full((bm, 3), np.nan, np.float32)
    row_extremes[(1,)](x, out, BM=bm, BN=bn, KEEP=keep)
    seen = np.full((bm, bn), -np.inf, np.float32)        # the tile: x, padded with -inf past column cols
    seen[:, :min(bn, cols)] = x[:, :bn]
    seen *= 2
    np.testing.assert_array_equal(out[:, 0], seen.max(1))
    np.testing.assert_array_equal(out[:, 1], seen.min(1))
    np.testing.assert_allclose(out[:, 2], np.where(np.isinf(seen), 0, seen).sum(1), rtol=1e-5, atol=1e-5)


@tc.kernel
def shared_row_sums(A, X, B, OUT, OUT3, OUTI, BM: tc.constexpr, BN: tc.constexpr, KEEP: tc.constexpr):
    """Sums along the last axis of products with an operand every row shares (x in a GEMV, q's
    rows against each key): the renderer sums four rows per pass when the row count allows."""
    a = tc.load(A, (0, 0), (BM, BN))
    x = tc.load(X, (0,), (BN,))
    tc.store(OUT, (0, 0), tc.reshape(tc.sum(a * x[None, :], 1, keepdims=KEEP), (BM, 1)))
    b = tc.load(B, (0, 0), (3, BN))
    tc.store(OUT3, (0, 0), tc.sum(b[:, None, :] * a[None, :, :], 2))           # (3, BM)
    codes = tc.cast(a > 0.0, tc.int32) * 3
    tc.store(OUTI, (0,), tc.sum(codes * tc.cast(x > 0.0, tc.int32)[None, :], 1))


@settings(max_examples=10, deadline=None)   # each example is a compile (shapes are constexprs)
@given(bm=st.sampled_from([1, 4, 6, 8, 12]), bn=st.sampled_from([1, 7, 64]), keep=st.booleans(),
       seed=st.integers(0, 1000))
def test_sums_of_rows_that_share_an_operand(bm, bn, keep, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((bm, bn)).astype(np.float32)
    x = rng.standard_normal(bn).astype(np.float32)
    b = rng.standard_normal((3, bn)).astype(np.float32)
    out, out3, outi = np.zeros((bm, 1), np.float32), np.zeros((3, bm), np.float32), np.zeros(bm, np.int32)
    shared_row_sums[(1,)](a, x, b, out, out3, outi, BM=bm, BN=bn, KEEP=keep)
    a64, x64 = a.astype(np.float64), x.astype(np.float64)
    np.testing.assert_allclose(out[:, 0], a64 @ x64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out3, b.astype(np.float64) @ a64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outi, ((a > 0) * 3) @ (x > 0).astype(np.int32))


def test_rows_sharing_an_operand_are_summed_four_per_pass():
    from tilec.backends.numba.renderer import render
    f32 = tc.ir.TensorType(2, tc.float32)
    fn = shared_row_sums.ir({"A": f32, "X": tc.ir.TensorType(1, tc.float32), "B": f32, "OUT": f32, "OUT3": f32,
                             "OUTI": tc.ir.TensorType(1, tc.int32)}, {"BM": 8, "BN": 64, "KEEP": False})
    assert render(fn, {"dot": "blas", "parallel": True}).count("in range(0, 8, 4):") == 3


@tc.kernel
def sums_beside_their_tile(X, P, S, S3, TOT, BM: tc.constexpr, BN: tc.constexpr, STEPS: tc.constexpr,
                           KEEP: tc.constexpr):
    """Row sums of a tile that is also stored (so it is a tile of its own): in a loop body, where
    the loop that makes the tile sums it too, at the top level, over 3-D and 1-D tiles."""
    acc = tc.zeros((BM,), tc.float32)
    for n in tc.range(0, STEPS):
        p = tc.exp2(tc.load(X, (n * BM, 0), (BM, BN)) - 1.0)
        tc.store(P, (n * BM, 0), p)
        acc = acc + tc.reshape(tc.sum(p, 1, keepdims=KEEP), (BM,))
    tc.store(S, (0,), acc)
    c = tc.reshape(tc.load(X, (0, 0), (BM, BN)), (1, BM, BN)) * 0.5
    tc.store(S3, (0, 0, 0), c + 1.0)
    tc.store(S3, (1, 0, 0), tc.reshape(tc.sum(c, 2, keepdims=True), (1, BM, 1)))
    row = tc.reshape(tc.load(X, (0, 0), (1, BN)), (BN,)) + 2.0
    tc.store(TOT, (0,), row)
    tc.store(TOT, (BN,), tc.reshape(tc.sum(row, 0), (1,)))


@settings(max_examples=10, deadline=None)   # each example is a compile (shapes are constexprs)
@given(bm=st.sampled_from([1, 3, 8]), bn=st.sampled_from([1, 5, 16, 33]), steps=st.sampled_from([1, 3]),
       keep=st.booleans(), seed=st.integers(0, 1000))
def test_row_sums_fused_into_the_loop_that_makes_their_tile(bm, bn, steps, keep, seed):
    x = np.random.default_rng(seed).standard_normal((bm * steps, bn)).astype(np.float32)
    p, s = np.full_like(x, np.nan), np.full(bm, np.nan, np.float32)
    s3, tot = np.full((2, bm, bn), np.nan, np.float32), np.full(bn + 1, np.nan, np.float32)
    sums_beside_their_tile[(1,)](x, p, s, s3, tot, BM=bm, BN=bn, STEPS=steps, KEEP=keep)
    x64 = x.astype(np.float64)
    want_p = np.exp2(x64 - 1.0)
    np.testing.assert_allclose(p, want_p, rtol=1e-6)
    np.testing.assert_allclose(s, want_p.sum(1).reshape(steps, bm).sum(0), rtol=1e-5)
    np.testing.assert_allclose(s3[0], x64[:bm] * 0.5 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(s3[1, :, 0], (x64[:bm] * 0.5).sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tot, np.append(x64[0] + 2.0, (x64[0] + 2.0).sum()), rtol=1e-5, atol=1e-5)


def test_a_row_sum_beside_its_tile_is_taken_in_the_loop_that_makes_it():
    from tilec.backends.numba.renderer import render
    f32 = tc.ir.TensorType(2, tc.float32)
    fn = sums_beside_their_tile.ir({"X": f32, "P": f32, "S": tc.ir.TensorType(1, tc.float32),
                                    "S3": tc.ir.TensorType(3, tc.float32), "TOT": tc.ir.TensorType(1, tc.float32)},
                                   {"BM": 8, "BN": 16, "STEPS": 2, "KEEP": False})
    src = render(fn, {"dot": "blas", "parallel": True})
    # three sums, each added up in the loop that writes its tile: no loop of its own reads the tile
    assert len(re.findall(r"(\w+_acc) = \1 \+ e\w*\n", src)) == 3, src


@tc.kernel
def dots_over_unpacked_codes(A, W, PK, PV, S, Z, OT, OW, M: tc.constexpr, R: tc.constexpr, L: tc.constexpr,
                             NG: tc.constexpr, BITS: tc.constexpr):
    """Dots of a few rows with operands unpacked from bytes (each holds 8 // BITS codes; a group's
    tokens are shift-major over its R byte rows): a @ trans(codes * scale + zero) and
    1.5 + w @ values, both operands computed inside the dot's loops (blocked_dots)."""
    pb = 8 // BITS
    a = tc.load(A, (0, 0), (M, L))
    w = tc.load(W, (0, 0), (M, NG * pb * R))
    packed = tc.cast(tc.reshape(tc.load(PK, (0, 0), (NG * R, L)), (NG, R, L)), tc.int32)
    shifts = tc.arange(pb) * BITS
    codes = tc.cast((packed[:, None, :, :] >> shifts[None, :, None, None]) & ((1 << BITS) - 1), tc.float32)
    scale, zero = tc.load(S, (0, 0), (NG, L)), tc.load(Z, (0, 0), (NG, L))
    keys = tc.reshape(codes * scale[:, None, None, :] + zero[:, None, None, :], (NG * pb * R, L))
    tc.store(OT, (0, 0), tc.dot(a, tc.trans(keys)))
    packed_values = tc.cast(tc.reshape(tc.load(PV, (0, 0), (NG * R, L)), (NG, R, L)), tc.int32)
    values = tc.cast((packed_values[:, None, :, :] >> shifts[None, :, None, None]) & ((1 << BITS) - 1), tc.float32)
    tc.store(OW, (0, 0), tc.dot(w, tc.reshape(values, (NG * pb * R, L)), tc.full((M, L), 1.5, tc.float32)))


def unpacked_codes_reference(pk, ng, r, bits):
    """(NG * R, L) bytes -> (NG, PB, R, L) codes: token s * R + i of group g is byte row g * R + i
    shifted right by s * bits."""
    pb, mask = 8 // bits, (1 << bits) - 1
    rows = pk.astype(np.int64).reshape(ng, 1, r, -1)
    return ((rows >> (np.arange(pb) * bits)[None, :, None, None]) & mask).astype(np.float64)


@settings(max_examples=12, deadline=None)   # each example is a compile (shapes are constexprs)
@given(m=st.sampled_from([1, 3, 4, 6, 16]), r=st.sampled_from([1, 3, 8]), length=st.sampled_from([1, 5, 16, 33]),
       ng=st.sampled_from([1, 2]), bits=st.sampled_from([2, 4]), seed=st.integers(0, 1000))
def test_dots_over_unpacked_codes_match_numpy(m, r, length, ng, bits, seed):
    rng = np.random.default_rng(seed)
    tokens = ng * (8 // bits) * r
    a = rng.standard_normal((m, length)).astype(np.float32)
    w = rng.standard_normal((m, tokens)).astype(np.float32)
    pk, pv = (rng.integers(0, 256, (ng * r, length)).astype(np.uint8) for _ in range(2))
    scale, zero = (rng.standard_normal((ng, length)).astype(np.float32) for _ in range(2))
    ot, ow = np.full((m, tokens), np.nan, np.float32), np.full((m, length), np.nan, np.float32)
    dots_over_unpacked_codes[(1,)](a, w, pk, pv, scale, zero, ot, ow, M=m, R=r, L=length, NG=ng, BITS=bits)
    codes = unpacked_codes_reference(pk, ng, r, bits)
    keys = (codes * scale[:, None, None, :] + zero[:, None, None, :]).reshape(tokens, length)
    values = unpacked_codes_reference(pv, ng, r, bits).reshape(tokens, length)
    a64, w64 = a.astype(np.float64), w.astype(np.float64)
    # fp32 sums of up to 64 terms: bounded by the sum of the terms' magnitudes, not by the result's
    assert np.all(np.abs(ot - a64 @ keys.T) <= 1e-5 * (np.abs(a64) @ np.abs(keys).T) + 1e-6)
    assert np.all(np.abs(ow - (1.5 + w64 @ values)) <= 1e-5 * (1.5 + np.abs(w64) @ values) + 1e-6)


def _dot_source(kernel, types, constexprs):
    from tilec.backends.numba.renderer import render
    return render(kernel.ir(types, constexprs), {"dot": "blas", "parallel": True})


def test_dots_over_unpacked_codes_share_each_byte_between_its_codes():
    f32, u8 = tc.ir.TensorType(2, tc.float32), tc.ir.TensorType(2, tc.uint8)
    types = {"A": f32, "W": f32, "PK": u8, "PV": u8, "S": f32, "Z": f32, "OT": f32, "OW": f32}
    src = _dot_source(dots_over_unpacked_codes, types, {"M": 4, "R": 8, "L": 64, "NG": 2, "BITS": 2})
    assert "matmul_into" not in src, src      # neither operand is materialized for BLAS
    # one pass over L unpacks the four codes of each byte it reads: shifts 0, 2, 4, 6 side by side
    assert len(re.findall(r">> np\.int32\([0-3] \* 2\)", src)) == 8, src
    # more rows than the blocked form takes: both dots go back to BLAS
    big = _dot_source(dots_over_unpacked_codes, types, {"M": 32, "R": 8, "L": 64, "NG": 2, "BITS": 2})
    assert big.count("rt.matmul_into") == 2, big


@tc.kernel
def dot_over_scaled_tile(A, K, O, M: tc.constexpr, N: tc.constexpr, L: tc.constexpr):
    """A computed operand whose reads change along every axis: no byte to share, so BLAS."""
    k = tc.reshape(tc.load(K, (0, 0), (N, L)), (2, N // 2, L)) * 2.0
    tc.store(O, (0, 0), tc.dot(tc.load(A, (0, 0), (M, L)), tc.trans(tc.reshape(k, (N, L)))))


def test_a_computed_operand_without_shared_reads_keeps_blas():
    f32 = tc.ir.TensorType(2, tc.float32)
    src = _dot_source(dot_over_scaled_tile, {"A": f32, "K": f32, "O": f32}, {"M": 4, "N": 16, "L": 32})
    assert src.count("rt.matmul_into") == 1, src
    rng = np.random.default_rng(2)
    a, k = rng.standard_normal((4, 32)).astype(np.float32), rng.standard_normal((16, 32)).astype(np.float32)
    o = np.zeros((4, 16), np.float32)
    dot_over_scaled_tile[(1,)](a, k, o, M=4, N=16, L=32)
    np.testing.assert_allclose(o, a.astype(np.float64) @ (2.0 * k.astype(np.float64)).T, rtol=1e-5, atol=1e-5)


@tc.kernel
def values_through_branches(X, S, OUT, PREV, BM: tc.constexpr, BN: tc.constexpr, STEPS: tc.constexpr):
    """Tiles an if-branch passes on: the scores of a step, used up within it (their array can be
    reused every step), and the step's value carried into the next one (its array must not be)."""
    acc = tc.zeros((BM, BN), tc.float32)
    prev = tc.zeros((BM, BN), tc.float32)
    for n in tc.range(0, STEPS):
        s = tc.dot(tc.load(X, (n * BM, 0), (BM, BN)), tc.load(S, (0, 0), (BN, BN)))
        if n == STEPS - 1:
            s = s + 1.0
        acc = acc + prev * 0.5 + tc.exp2(s * 0.01)
        x = tc.load(X, (n * BM, 0), (BM, BN)) * 2.0
        if n == 0:
            x = x + 3.0
        prev = x
    tc.store(OUT, (0, 0), acc)
    tc.store(PREV, (0, 0), prev)


def test_tiles_passed_on_by_branches():
    rng = np.random.default_rng(4)
    bm, bn, steps = 8, 16, 4
    x, sq = rng.standard_normal((bm * steps, bn)).astype(np.float32), rng.standard_normal((bn, bn)).astype(np.float32)
    out, prev = np.zeros((bm, bn), np.float32), np.zeros((bm, bn), np.float32)
    values_through_branches[(1,)](x, sq, out, prev, BM=bm, BN=bn, STEPS=steps)
    x64 = x.astype(np.float64).reshape(steps, bm, bn)
    want, carried = np.zeros((bm, bn)), np.zeros((bm, bn))
    for n in range(steps):
        s = x64[n] @ sq + (1.0 if n == steps - 1 else 0.0)
        want += carried * 0.5 + np.exp2(s * 0.01)
        carried = x64[n] * 2.0 + (3.0 if n == 0 else 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prev, carried, rtol=1e-6)
    from tilec.backends.numba.renderer import render
    f32 = tc.ir.TensorType(2, tc.float32)
    src = render(values_through_branches.ir({"X": f32, "S": f32, "OUT": f32, "PREV": f32},
                                            {"BM": bm, "BN": bn, "STEPS": steps}), {"dot": "blas", "parallel": True})
    # the scores go into one buffer made in front of the loop; the carried tile is a fresh array each step
    assert re.search(r"(\w+) = \w+_buffer\n\s+rt\.matmul_into\(\w+, \w+, \1, 0\.0\)", src), src
    assert re.search(r"^            x = np\.empty\(\(8, 16\), np\.float32\)$", src, re.M), src


def test_int8_transpose_dot():
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (16, 40), dtype=np.int8)
    b = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    c = np.zeros((40, 16), np.int32)
    transpose_dot[(cdiv_host(40, 16),)](a, b, c, BT=16)
    np.testing.assert_array_equal(c, a.T.astype(np.int32) @ b.astype(np.int32))


def test_ir_printer_shows_types_and_loop():
    fn = column_stats.ir(column_stats.arg_types([np.ones((4, 4), np.float32), np.ones((2, 4), np.float32)]),
                         {"BK": 16, "BN": 8})
    text = format_function(fn)
    assert "for " in text and "f32[16,8] = load" in text and "reduce" in text
    # loop-invariant offsets were hoisted: nothing multiplies by the program id inside the loop
    body = text.split("body(")[1].split("yield")[0]
    assert "program_id" not in body and "op=mul" not in body.split("load")[0]


@tc.kernel
def running_max_rescale(X, OUT, BM: tc.constexpr, BN: tc.constexpr):
    """The online-softmax pattern: the old carried value is read after the new one is made."""
    pm = tc.program_id(0)
    m = tc.full((BM,), -1e30, tc.float32)
    total = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, X.shape[1], BN):
        x = tc.load(X, (pm * BM, k), (BM, BN))
        m_new = tc.maximum(m, tc.max(x, axis=1))
        alpha = tc.exp(m - m_new)
        total = total * alpha + tc.sum(tc.exp(x - m_new[:, None]), axis=1)
        m = m_new
    tc.store(OUT, (pm * BM,), total)


def test_carried_tile_read_after_its_successor_is_built():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 64)).astype(np.float32) * 4
    x[:, 40:] += 10  # later blocks raise the running max, so alpha != 1 matters
    out = np.zeros(16, np.float32)
    running_max_rescale[(2,)](x, out, BM=8, BN=16)
    want = np.exp(x - x.max(1, keepdims=True)).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5)


@tc.kernel
def shared_accumulators(A, B, W, C, D, E, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr):
    """Accumulators whose arrays another value still needs: a BLAS dot may not write into them."""
    pm = tc.program_id(0)
    start = tc.full((BM, BN), 1.0, tc.float32)
    acc = start
    for k in tc.range(0, A.shape[1], BK):
        acc = tc.dot(tc.load(A, (pm * BM, k), (BM, BK)), tc.load(B, (k, 0), (BK, BN)), acc)
    tc.store(C, (pm * BM, 0), acc + start)           # start is read after the loop: still all ones
    base = acc * 2.0
    once_more = tc.dot(tc.load(A, (pm * BM, 0), (BM, BK)), tc.trans(tc.load(W, (0, 0), (BN, BK))), base)
    tc.store(D, (pm * BM, 0), once_more)
    tc.store(E, (pm * BM, 0), base)                  # base is read after the dot that took it


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 50), seed=st.integers(0, 2**16), dot=st.sampled_from(["blas", "loops"]))
def test_dot_accumulator_shared_with_other_values(m, k, seed, dot):
    bm, bn, bk = 8, 8, 16
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, max(k, bk))).astype(np.float32)
    b = rng.standard_normal((max(k, bk), bn)).astype(np.float32)
    a[:, k:] = 0  # a's columns past k only pad the second dot's fixed BK-wide window
    w = rng.standard_normal((bn, bk)).astype(np.float32)
    c, d, e = (np.zeros((m, bn), np.float32) for _ in range(3))
    shared_accumulators[(cdiv_host(m, bm),)](a, b, w, c, d, e, BM=bm, BN=bn, BK=bk, dot=dot)
    acc = 1.0 + a.astype(np.float64) @ b
    np.testing.assert_allclose(c, acc + 1.0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e, 2 * acc, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d, 2 * acc + a[:, :bk].astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)


@tc.kernel
def program_ids(OUT):
    """Each program adds its flat id + 1 to its own cell of a 3-D grid."""
    i, j, k = tc.program_id(0), tc.program_id(1), tc.program_id(2)
    here = tc.load(OUT, (k, j, i), (None, None, None))
    flat = i + j * tc.num_programs(0) + k * tc.num_programs(0) * tc.num_programs(1)
    tc.store(OUT, (k, j, i), here + flat + 1, (None, None, None))


@settings(max_examples=25)
@given(g0=st.integers(1, 13), g1=st.integers(1, 5), g2=st.integers(1, 3), parallel=st.booleans())
def test_every_program_runs_exactly_once(g0, g1, g2, parallel):
    """The runner splits the grid into runs for its threads: none may be skipped or repeated."""
    out = np.zeros((g2, g1, g0), np.int64)
    program_ids[(g0, g1, g2)](out, parallel=parallel)
    np.testing.assert_array_equal(out.ravel(), np.arange(1, g0 * g1 * g2 + 1))


@tc.kernel
def scaled_rows(X, Y, s, BM: tc.constexpr, BN: tc.constexpr):
    pm = tc.program_id(0)
    tc.store(Y, (pm * BM, 0), tc.load(X, (pm * BM, 0), (BM, BN)) * s)


def test_launches_from_several_threads_at_once():
    """Kernels are launched over Numba's threads by address: callers on other Python threads,
    each with its own arrays (and array layouts, so specializations), must not mix them up."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((64, 16)).astype(np.float32) for _ in range(8)]
    xs[1], xs[5] = np.asfortranarray(xs[1]), xs[5][::-1]          # F-ordered and strided layouts
    xs[3].setflags(write=False)

    def job(i):
        y = np.zeros((64, 16), np.float32)
        for _ in range(20):
            scaled_rows[(8,)](xs[i], y, float(i + 1), BM=8, BN=16)
        return y

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(job, range(8)))
    for i, y in enumerate(outs):
        np.testing.assert_array_equal(y, xs[i] * np.float32(i + 1))


def test_a_forked_child_runs_kernels_on_one_thread():
    """GNU OpenMP cannot run in a child forked after the parent used it: the child's launches
    take the one-thread path and still compute every program."""
    import multiprocessing
    x = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
    y = np.zeros_like(x)
    scaled_rows[(8,)](x, y, 2.0, BM=8, BN=16)                  # the parent has used the threads
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(_scaled_in_child, (x,)).get(timeout=120)
    np.testing.assert_array_equal(child, x * 3)


def _scaled_in_child(x):
    y = np.zeros_like(x)
    scaled_rows[(8,)](x, y, 3.0, BM=8, BN=16)
    return y


def test_show_renders_every_registry_op_at_its_typical_shape():
    """`tilec show OP` with no --shape: the op's own typical shape, the default config, the IR and
    generated source named after the kernel (or a clear error for an op without launch_ir)."""
    import ops
    from tilec.errors import TilecError
    from ops.show import show
    for name, spec in ops.REGISTRY.items():
        if spec.launch_ir is None:
            with pytest.raises(TilecError, match="does not expose"):
                show(name)
            continue
        text = show(name)
        kernel = next(iter(spec.kernels.values()))
        assert "## tile IR" in text and f"def {kernel.name}" in text, name


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 9), k=st.integers(1, 9), cut=st.tuples(*[st.integers(0, 3)] * 4),
       beta=st.sampled_from([0.0, 1.0]), transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_blas_dot_of_edge_views_counts_what_they_lack_as_zeros(m, n, k, cut, beta, transposed, seed):
    """rt.matmul_into with operands smaller than their tiles (an edge tile read in place): the
    same as the zero-padded tiles, and with beta 0 the untouched part of c is cleared."""
    from tilec.backends.numba import support as rt
    rng = np.random.default_rng(seed)
    a_full = rng.standard_normal((m, k)).astype(np.float32)
    b_full = rng.standard_normal((k, n)).astype(np.float32)
    a_full[max(m - cut[0], 0):], a_full[:, max(k - cut[1], 0):] = 0, 0
    b_full[max(k - cut[2], 0):], b_full[:, max(n - cut[3], 0):] = 0, 0
    a = a_full[:max(m - cut[0], 0), :max(k - cut[1], 0)]
    b = b_full[:max(k - cut[2], 0), :max(n - cut[3], 0)]
    if transposed:                       # operands that are transposed views, as tc.trans gives
        a, b = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = np.full_like(c0, np.nan) if beta == 0 else c0.copy()
    rt.matmul_into(a, b, c, beta)
    want = a_full.astype(np.float64) @ b_full + (0 if beta == 0 else c0)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@tc.kernel
def sum_of_previous_views(X, Y, B: tc.constexpr):
    """Each step's tile, reshaped, is carried into the next step and only read there."""
    prev = tc.zeros((2, B // 2), tc.float32)
    total = tc.zeros((2, B // 2), tc.float32)
    for k in tc.range(0, X.shape[0], B):
        view = tc.reshape(tc.load(X, (k,), (B,)) * 2.0, (2, B // 2))
        total = total + prev
        prev = view
    tc.store(Y, (0, 0), total)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_a_view_carried_out_of_its_step_keeps_its_own_array(steps):
    """A tile whose reshaped view outlives the step must not share one buffer across steps (the
    loop-private buffers of _loop_private): the sum reads the previous step's values."""
    x = np.arange(8 * steps, dtype=np.float32)
    y = np.zeros((2, 4), np.float32)
    sum_of_previous_views[(1,)](x, y, B=8)
    want = sum((2 * x[8 * i:8 * i + 8]).reshape(2, 4) for i in range(steps - 1)) if steps > 1 else np.zeros((2, 4))
    np.testing.assert_array_equal(y, want)


@tc.kernel
def dequantize_broadcast(C, S, Z, OUT, NG: tc.constexpr, R: tc.constexpr, BD: tc.constexpr):
    """A rank-4 elementwise nest with operands broadcast along different axes (the KIVI key
    dequantization): 2-bit codes shifted four ways, times a per-(group, lane) scale, plus a zero."""
    codes = tc.reshape(tc.load(C, (0, 0), (NG * R, BD)), (NG, R, BD))
    shifts = tc.cast(tc.arange(4) * 2, tc.uint8)
    scale = tc.load(S, (0, 0), (NG, BD))
    zero = tc.load(Z, (0, 0), (NG, BD))
    q = tc.cast((codes[:, None, :, :] >> shifts[None, :, None, None]) & 3, tc.float32)
    # the reshape makes the nest a tile of its own, as the dot after it does in the decode
    tc.store(OUT, (0, 0), tc.reshape(q * scale[:, None, None, :] + zero[:, None, None, :], (NG * 4 * R, BD)))


@settings(max_examples=8, deadline=None)   # each example is a compile (shapes are constexprs)
@given(ng=st.sampled_from([1, 3, 8]), r=st.sampled_from([1, 5, 8]), bd=st.sampled_from([1, 7, 128]),
       seed=st.integers(0, 1000))
def test_elementwise_nest_with_broadcast_operands(ng, r, bd, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (ng, r, bd), dtype=np.uint8)
    scale, zero = (rng.standard_normal((ng, bd)).astype(np.float32) for _ in range(2))
    out = np.full((ng, 4, r, bd), np.nan, np.float32)
    dequantize_broadcast[(1,)](codes.reshape(ng * r, bd), scale, zero, out.reshape(-1, bd), NG=ng, R=r, BD=bd)
    want = np.stack([(codes >> (2 * j)) & 3 for j in range(4)], axis=1).astype(np.float64)
    want = want * scale[:, None, None, :] + zero[:, None, None, :]
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_elementwise_nests_read_rows_along_the_innermost_loop():
    from tilec.backends.numba.renderer import render
    u8, f32 = tc.ir.TensorType(2, tc.uint8), tc.ir.TensorType(2, tc.float32)
    fn = dequantize_broadcast.ir({"C": u8, "S": f32, "Z": f32, "OUT": f32},
                                 {"NG": 8, "R": 8, "BD": 128})
    source = render(fn, {"dot": "blas", "parallel": True})
    statement = [line.strip() for line in source.splitlines() if "& 3" in line]
    assert len(statement) == 1, statement
    # every tile in the dequantizing statement is read, and written, at the innermost index alone
    indices = {index for _, index in re.findall(r"(\w+)\[([^\]]*)\]", statement[0])}
    assert len(indices) == 1 and "," not in indices.pop(), statement


@tc.kernel
def weighted_token_sums(X, W, OUT, R: tc.constexpr, BD: tc.constexpr):
    """OUT[b] = sum_t W[b, t] * X[b, t, :], R tokens a step: each step's X tile is only read
    (through a reshape, as the KIVI decode reads its code bytes), a slab of whole rows of X."""
    b = tc.program_id(0)
    acc = tc.zeros((BD,), tc.float32)
    for n in tc.range(0, X.shape[1], R):
        x = tc.reshape(tc.load(X, (b, n, 0), (None, R, BD)), (R * BD,))
        w = tc.load(W, (b, n), (None, R))
        acc = acc + tc.sum(tc.reshape(x, (R, BD)) * w[:, None], 0)
    tc.store(OUT, (b, 0), acc, (None, BD))


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 3), tokens=st.sampled_from([1, 4, 7, 13]), d=st.sampled_from([5, 8]),
       layout=st.sampled_from(["C", "strided", "readonly"]), seed=st.integers(0, 1000))
def test_tiles_of_whole_rows_are_read_in_place_whatever_the_layout(b, tokens, d, layout, seed):
    """R=4, BD=8: the slab view (d 8; a strided view of a strided tensor), the copy (d 5: rows
    narrower than the box), the padded edge (7 and 13 tokens) and a read-only input all give the sums."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, tokens, d)).astype(np.float32)
    w = rng.standard_normal((b, tokens)).astype(np.float32)
    if layout == "strided":
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    elif layout == "readonly":
        x.flags.writeable = False
    out = np.full((b, 8), np.nan, np.float32)
    weighted_token_sums[(b,)](x, w, out, R=4, BD=8)
    want = np.einsum("bt,btd->bd", w.astype(np.float64), x)
    np.testing.assert_allclose(out[:, :d], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, d:], 0)


def test_a_slab_of_whole_rows_is_a_view_not_a_copy():
    from tilec.backends.numba.renderer import render
    f32 = tc.ir.TensorType(3, tc.float32)
    fn = weighted_token_sums.ir({"X": f32, "W": tc.ir.TensorType(2, tc.float32), "OUT": tc.ir.TensorType(2, tc.float32)},
                                {"R": 4, "BD": 8})
    source = render(fn, {"dot": "blas", "parallel": True})
    assert re.search(r"if X\.shape\[2\] == 8:\n\s+X_tile = X\[pid_0, n:n \+ 4\]\n", source), source


@tc.kernel
def strip_column_sums(X, OUT, BK: tc.constexpr, BN: tc.constexpr):
    """OUT[j] = sum_i X[i, j] over a strip of BN columns, BK rows a step: a strip of rows a
    stride apart, streamed, which the Numba renderer prefetches one step ahead."""
    pn = tc.program_id(0)
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        acc = acc + tc.sum(tc.load(X, (k, pn * BN), (BK, BN)), 0)
    tc.store(OUT, (pn * BN,), acc)


@settings(max_examples=10, deadline=None)
@given(rows=st.sampled_from([1, 63, 64, 129, 300]), cols=st.sampled_from([1, 255, 256, 600]),
       strided=st.booleans(), seed=st.integers(0, 1000))
def test_streamed_strips_prefetched_ahead_sum_right_at_every_edge(rows, cols, strided, seed):
    """BK=64 x BN=256 fp32 (64 KB: prefetched): edges in both axes, a last step past the end,
    one step only (rows <= 64), and a strided tensor all give NumPy's sums."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if strided:
        x = np.ascontiguousarray(np.repeat(x, 2, axis=1))[:, ::2]
    out = np.full(cols, np.nan, np.float32)
    strip_column_sums[(cdiv_host(cols, 256),)](x, out, BK=64, BN=256)
    np.testing.assert_allclose(out, x.astype(np.float64).sum(0), rtol=1e-5, atol=1e-4)


def test_the_next_steps_rows_are_prefetched_in_the_loop_that_reads_them():
    from tilec.backends.numba.renderer import render
    fn = strip_column_sums.ir({"X": tc.ir.TensorType(2, tc.float32), "OUT": tc.ir.TensorType(1, tc.float32)},
                              {"BK": 64, "BN": 256})
    source = render(fn, {"dot": "blas", "parallel": True})
    # inside the loop over the tile's rows (i), the same row of the next step (k + 64), line by line
    assert re.search(r"for (\w+) in range\(64\):\n(\s+)if 0 <= k \+ 64 \+ \1 < X\.shape\[0\]:.*\n"
                     r"\2    for (\w+) in range\(max\(X_off1, 0\), min\(X_off1 \+ 256, X\.shape\[1\]\), 16\):\n"
                     r"\2        rt\.prefetch\(X, \(np\.uintp\(k \+ 64 \+ \1\), np\.uintp\(\3\),\)\)", source), source
    small = strip_column_sums.ir({"X": tc.ir.TensorType(2, tc.float32), "OUT": tc.ir.TensorType(1, tc.float32)},
                                 {"BK": 8, "BN": 256})   # 8 KB a step: left to the hardware
    assert "rt.prefetch" not in render(small, {"dot": "blas", "parallel": True})


@tc.kernel
def signs_of(X, Y, B: tc.constexpr):
    """tc.where with two numbers as its arms: a float32 tile of the condition's shape."""
    pb = tc.program_id(0)
    x = tc.load(X, (pb * B,), (B,))
    tc.store(Y, (pb * B,), tc.where(x < 0.0, 1.0, -1.0) * 2.0)


def test_where_between_two_numbers():
    x = np.array([-3.0, 0.0, 2.5, -0.5, np.nan, -np.inf, 7.0], np.float32)
    y = np.empty_like(x)
    signs_of[(cdiv_host(x.size, 4),)](x, y, B=4)
    np.testing.assert_array_equal(y, np.where(x < 0, 2.0, -2.0))


@settings(max_examples=60, deadline=None)
@given(m=st.sampled_from([0, 1, 2, 5]), n=st.sampled_from([1, 3, 17]), k=st.sampled_from([0, 1, 7, 33]),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), a_t=st.booleans(), b_t=st.booleans(),
       beta=st.sampled_from([0.0, 1.0, 0.5]), seed=st.integers(0, 2**16))
def test_matmul_into_against_numpy(m, n, k, pad, a_t, b_t, beta, seed):
    """rt.matmul_into over every BLAS route it picks (sgemm, sgemv for a column of b or for a
    single row of a): operands row-major or transposed views, c bigger than a @ b (the rest
    is scaled by beta), and k = 0."""
    from tilec.backends.numba import support as rt
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if a_t else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if b_t else (k, n)).astype(np.float32)
    a, b = (a.T if a_t else a), (b.T if b_t else b)
    c = rng.standard_normal((m + pad[0], n + pad[1])).astype(np.float32)
    want = beta * c.astype(np.float64)
    want[:m, :n] += a.astype(np.float64) @ b.astype(np.float64)
    rt.matmul_into(a, b, c, beta)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
