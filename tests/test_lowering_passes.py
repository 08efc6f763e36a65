"""The Numba lowering passes on IR, before -> after: each annotates what it should (and only
that), and a mutation check per pass: the pipeline without it leaves the IR unannotated, so
the structural test of the pass fails."""
from __future__ import annotations

import numpy as np
import pytest

import tilec as tc
from tilec import dtypes as dt
from tilec.ir import TensorType
from tilec.passes import LOWERING, clone

F32_1, F32_2 = TensorType(1, dt.float32), TensorType(2, dt.float32)
BLAS = {"dot": "blas", "parallel": True}


@tc.kernel
def epilogue(X, Y, Z, B: tc.constexpr):
    pb = tc.program_id(0)
    x = tc.load(X, (pb * B,), (B,))
    tc.store(Y, (pb * B,), tc.maximum(x * 2.0, 0.0))     # x * 2.0: read once, by an expression
    z = x + 1.0
    tc.store(Z, (pb * B,), z * tc.sum(z, 0))                # z: read by two loop nests, stays a tile


@tc.kernel
def shared_epilogue(X, Y, Z, B: tc.constexpr):
    pb = tc.program_id(0)
    x = tc.load(X, (pb * B,), (B,)) * 2.0                   # read three times, all by the store
    t = 1.0 / (1.0 + tc.abs(x))                             # read twice, by the store
    s = tc.where(x < 0.0, 1.0, -1.0)
    tc.store(Y, (pb * B,), x * t * t + s)
    v = tc.load(Z, (pb * B,), (B,))
    u = v + 3.0                                             # read in a where's arm: stays a tile
    tc.store(Z, (pb * B,), tc.where(v > 1.0, u, 0.0) + u)


@tc.kernel
def index_offsets(X, Y, Z, B: tc.constexpr):
    pb = tc.program_id(0)
    x = tc.load(X, (pb * B,), (B,))
    s = tc.cast(tc.arange(B) * 2, tc.float32)               # index arithmetic, read twice
    tc.store(Y, (pb * B,), x + s)
    tc.store(Z, (pb * B,), x * s)


@tc.kernel
def exp_and_row_sums(X, P, S, BM: tc.constexpr, BN: tc.constexpr):
    pm = tc.program_id(0)
    p = tc.exp(tc.load(X, (pm * BM, 0), (BM, BN)))
    tc.store(P, (pm * BM, 0), p)
    tc.store(S, (pm * BM,), tc.sum(p, 1))


@tc.kernel
def strip_column_sums(X, OUT, BK: tc.constexpr, BN: tc.constexpr):
    pn = tc.program_id(0)
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        acc = acc + tc.sum(tc.load(X, (k, pn * BN), (BK, BN)), 0)
    tc.store(OUT, (pn * BN,), acc)


@tc.kernel
def squares_per_step(X, OUT, BK: tc.constexpr, BN: tc.constexpr):
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        t = tc.load(X, (k, 0), (BK, BN))
        u = t * t
        acc = acc + tc.sum(u, 0) + tc.max(u, 0)
    tc.store(OUT, (0,), acc)


@tc.kernel
def scaled_steps(X, S, OUT, BK: tc.constexpr, BN: tc.constexpr):
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        part = tc.sum(tc.load(X, (k, 0), (BK, BN)), 0)
        acc = acc + tc.load(S, (k // BK, 0), (None, BN)) * part     # a row of scales per step
    tc.store(OUT, (0,), acc)


@tc.kernel
def dots_over_unpacked_codes(A, W, PK, PV, S, Z, OT, OW, M: tc.constexpr, R: tc.constexpr, L: tc.constexpr,
                             NG: tc.constexpr, BITS: tc.constexpr):
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


@tc.kernel
def three_reductions(X, V, OUT, BM: tc.constexpr, BN: tc.constexpr):
    t = tc.load(X, (0, 0), (BM, BN)) * 2.0                                # read twice: a tile
    tc.store(OUT, (0,), tc.max(t, 1) + tc.sum(t, 1))                      # max of a tile: vector rows
    tc.store(OUT, (BM,), tc.min(tc.exp(tc.load(X, (0, 0), (BM, BN))), 1))  # of a computed row: lanes
    v = tc.load(V, (0,), (BN,))
    tc.store(OUT, (2 * BM,), tc.sum(tc.load(X, (0, 0), (BM, BN)) * v[None, :], 1))  # v shared by rows


@tc.kernel
def views_and_accumulators(A, B, OUT, BM: tc.constexpr, BK: tc.constexpr, BN: tc.constexpr):
    a = tc.load(A, (0, 0), (BM, BK))
    b = tc.load(B, (0, 0), (BN, BK))
    acc = tc.load(OUT, (0, 0), (BM, BN))          # from a tensor the kernel writes: a copy
    for k in tc.range(0, 4, 1):
        acc = tc.dot(a, tc.trans(b), acc)
    tc.store(OUT, (0, 0), acc)


@tc.kernel
def shared_accumulator(A, B, OUT, BM: tc.constexpr, BK: tc.constexpr, BN: tc.constexpr):
    start = tc.load(OUT, (0, 0), (BM, BN))
    acc = tc.dot(tc.load(A, (0, 0), (BM, BK)), tc.trans(tc.load(B, (0, 0), (BN, BK))), start)
    tc.store(OUT, (0, 0), acc + start)            # start read again: the dot must not overwrite it


def _ops(fn, kind, **attrs):
    return [op for op in fn.walk() if op.kind == kind and all(op.attrs.get(k) == v for k, v in attrs.items())]


def _epilogue():
    return epilogue.ir({"X": F32_1, "Y": F32_1, "Z": F32_1}, {"B": 8})


def inline_single_use_holds(fn) -> bool:
    tiles = [op for op in _ops(fn, "binary", op="mul") if op.result.shape]
    (double,) = [op for op in tiles if op.operands[0].producer.kind == "load"]
    (biggest,), (z,) = _ops(fn, "binary", op="max"), _ops(fn, "binary", op="add")
    (scaled,) = [op for op in tiles if op.operands[0] is z.result]
    # read once by an expression or a store: inline; z, read by the store's loop and the sum's: a tile
    return all(op.attrs.get("inline") for op in (double, scaled, biggest)) and "inline" not in z.attrs


def _shared_epilogue():
    return shared_epilogue.ir({"X": F32_1, "Y": F32_1, "Z": F32_1}, {"B": 8})


def one_loop_holds(fn) -> bool:
    (x,) = [op for op in _ops(fn, "binary", op="mul") if op.operands[0].producer.kind == "load"]
    (t,) = _ops(fn, "binary", op="truediv")
    (u,) = [op for op in _ops(fn, "binary", op="add") if op.operands[0].producer.kind == "load"]
    # x and t, read several times but only inside the store's loop: inline; u, read by a where's
    # arm (which would branch on a computed arm): a tile of its own
    return bool(x.attrs.get("inline")) and bool(t.attrs.get("inline")) and "inline" not in u.attrs


def _index_offsets():
    return index_offsets.ir({"X": F32_1, "Y": F32_1, "Z": F32_1}, {"B": 8})


def index_tiles_hold(fn) -> bool:
    cast, = _ops(fn, "cast")
    arange, = _ops(fn, "arange")
    return bool(cast.attrs.get("inline")) and bool(arange.attrs.get("inline"))


def _exp_and_row_sums():
    return exp_and_row_sums.ir({"X": F32_2, "P": F32_2, "S": F32_1}, {"BM": 4, "BN": 8})


def row_sums_hold(fn) -> bool:
    exp, = _ops(fn, "unary", op="exp")
    red, = _ops(fn, "reduce")
    return exp.attrs.get("row_sum") is red.result and red.attrs.get("summed_by_producer") is True


def _strips(bk=64):
    return strip_column_sums.ir({"X": F32_2, "OUT": F32_1}, {"BK": bk, "BN": 256})


def in_place_holds(fn) -> bool:
    load, = _ops(fn, "load")
    return load.attrs.get("in_place") is True


def prefetch_holds(fn) -> bool:
    load, = _ops(fn, "load")
    return load.attrs.get("prefetch") == (64, 0)     # the next step: 64 rows on, same columns


def _squares():
    return squares_per_step.ir({"X": F32_2, "OUT": F32_1}, {"BK": 4, "BN": 8})


def private_holds(fn) -> bool:
    loop, = _ops(fn, "for")
    (mul,) = [op for op in loop.blocks[0].ops if op.kind == "binary" and op.attrs["op"] == "mul"]
    (load,) = _ops(fn, "load")
    private = loop.attrs.get("private", [])
    return mul.result in private and load.result in private and all(v.producer in loop.blocks[0].ops for v in private)


def _codes(m=4):
    f32, u8 = F32_2, TensorType(2, dt.uint8)
    types = {"A": f32, "W": f32, "PK": u8, "PV": u8, "S": f32, "Z": f32, "OT": f32, "OW": f32}
    return dots_over_unpacked_codes.ir(types, {"M": m, "R": 8, "L": 64, "NG": 2, "BITS": 2})


def blocked_holds(fn) -> bool:
    dots = _ops(fn, "dot")
    plans = [d.attrs.get("blocked") for d in dots]
    if None in plans:
        return False
    through = {op.kind for op in fn.walk() if op.attrs.get("read_through")}
    return sorted(p.transposed for p in plans) == [False, True] and all(p.rows == 4 and p.unroll == 4 for p in plans) \
        and all(p.operand.producer.attrs.get("inline") for p in plans) and through == {"reshape", "trans"}


def _reductions():
    return three_reductions.ir({"X": F32_2, "V": F32_1, "OUT": F32_1}, {"BM": 8, "BN": 64})


def reductions_hold(fn) -> bool:
    chosen = {(op.attrs["op"], op.attrs.get("lowering")) for op in _ops(fn, "reduce")}
    return chosen == {("max", "row_simd"), ("min", "lanes"), ("sum", "row_blocks"), ("sum", None)}


def _views():
    return views_and_accumulators.ir({"A": F32_2, "B": F32_2, "OUT": F32_2}, {"BM": 4, "BK": 8, "BN": 4})


@tc.kernel
def byte_dot_of_codes(A, B, C, BK: tc.constexpr):
    b = (tc.load(B, (0, 0), (8, BK)) >> 4) & 7
    tc.store(C, (0, 0), tc.dot(tc.load(A, (0, 0), (4, BK)), tc.trans(b)))


def _byte_dot():
    return byte_dot_of_codes.ir({"A": TensorType(2, dt.int8), "B": TensorType(2, dt.uint8),
                                 "C": TensorType(2, dt.int32)}, {"BK": 32})


def int_dot_holds(fn) -> bool:
    (dot,) = _ops(fn, "dot")
    # b read by rows, its codes unpacked in registers (shift 4, mask 7), so at most 7
    return dot.attrs.get("rows_of_transpose") is True and dot.attrs.get("b_unpack") == (4, 7) \
        and dot.attrs.get("b_max") == 7


def _lowering_of_loads(fn) -> list:
    return [op.attrs.get("lowering") for op in _ops(fn, "load")]


def views_hold(fn) -> bool:
    (t,) = _ops(fn, "trans")
    # a and b only BLAS dots read (b transposed): views; the accumulator's start: a copy
    return _lowering_of_loads(fn) == ["view", "view", "copy"] and t.attrs.get("view") is True


def accumulate_holds(fn) -> bool:
    (dot,) = _ops(fn, "dot")
    return dot.attrs.get("in_place_acc") is True


def update_holds(fn) -> bool:
    loop, = _ops(fn, "for")
    (carried,), (update,) = loop.blocks[0].args[1:], [y.producer for y in loop.blocks[0].yields]
    # acc + sum(u) + max(u): the outer add writes over acc, which it reads through the inner one
    return update.attrs.get("in_place_of") is carried


CASES = {
    "inline-single-use": (_epilogue, BLAS, inline_single_use_holds),
    "inline-into-one-loop": (_shared_epilogue, BLAS, one_loop_holds),
    "inline-index-tiles": (_index_offsets, BLAS, index_tiles_hold),
    "block-computed-dots": (_codes, BLAS, blocked_holds),
    "fuse-row-sums": (_exp_and_row_sums, BLAS, row_sums_hold),
    "read-in-place": (_strips, BLAS, in_place_holds),
    "prefetch-next-rows": (_strips, BLAS, prefetch_holds),
    "loop-private-buffers": (_squares, BLAS, private_holds),
    "choose-reductions": (_reductions, BLAS, reductions_hold),
    "choose-views": (_views, BLAS, views_hold),
    "accumulate-in-place": (_views, BLAS, accumulate_holds),
    "update-in-place": (_squares, BLAS, update_holds),
    "int-dot-rows": (_byte_dot, BLAS, int_dot_holds),
}


def lowered(fn, options, without: str | None = None):
    out = clone(fn)
    for p in LOWERING["numba"]:
        if p.name != without:
            out = p.run(out, options)
    return out


def test_every_numba_lowering_pass_has_a_structural_test():
    assert set(CASES) == {p.name for p in LOWERING["numba"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_pass_annotates_its_pattern(name):
    make, options, holds = CASES[name]
    fn = make()
    assert not holds(fn)                       # before: the common IR carries no lowering
    assert holds(lowered(fn, options))        # after


@pytest.mark.parametrize("name", sorted(CASES))
def test_mutation_without_the_pass_the_structural_test_fails(name):
    make, options, holds = CASES[name]
    assert not holds(lowered(make(), options, without=name))


def test_a_carried_tiles_update_reads_its_row_of_scales_in_place():
    """read-in-place: a load whose only reader is the elementwise update of a carried tile is
    read where it lies (before: a view or a copy every step)."""
    fn = scaled_steps.ir({"X": F32_2, "S": F32_2, "OUT": F32_1}, {"BK": 4, "BN": 8})
    scales = [op for op in _ops(fn, "load") if op.attrs["box"] == (None, 8)]
    assert len(scales) == 1 and not scales[0].attrs.get("in_place")
    after = lowered(fn, BLAS)
    (load,) = [op for op in _ops(after, "load") if op.attrs["box"] == (None, 8)]
    assert load.attrs.get("in_place") is True
    assert not [op for op in _ops(lowered(fn, BLAS, without="read-in-place"), "load")
                if op.attrs["box"] == (None, 8) and op.attrs.get("in_place")]
    x = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    s = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    out = np.zeros(8, np.float32)
    scaled_steps[(1,)](x, s, out, backend="numba", BK=4, BN=8)
    np.testing.assert_allclose(out, (x.reshape(3, 4, 8).sum(1) * s).sum(0), rtol=1e-5)


def test_views_without_blas_are_slabs_and_a_shared_accumulator_is_copied():
    fn = lowered(_views(), {"dot": "loops", "parallel": True})
    # read only, by a loop-nest dot, from tensors nobody writes: slabs of whole rows; no BLAS
    # to take a transposed view
    assert _lowering_of_loads(fn) == ["slab", "slab", "copy"] and "view" not in _ops(fn, "trans")[0].attrs
    fn = shared_accumulator.ir({"A": F32_2, "B": F32_2, "OUT": F32_2}, {"BM": 4, "BK": 8, "BN": 4})
    assert not accumulate_holds(lowered(fn, BLAS))


def test_patterns_the_passes_must_leave_alone():
    # a 16 KB box is the threshold: 8 rows of 256 fp32 (8 KB) stay with the hardware prefetchers
    assert "prefetch" not in _ops(lowered(_strips(bk=8), BLAS), "load")[0].attrs
    # loop-nest dots take computed operands inline anyway: no blocking without BLAS dots
    assert not any("blocked" in op.attrs for op in lowered(_codes(), {"dot": "loops", "parallel": True}).walk())
    # more rows than a blocked dot takes: BLAS
    assert not any("blocked" in op.attrs for op in lowered(_codes(m=32), BLAS).walk())


@tc.kernel
def summed_lookups(T, IDX, OUT, R: tc.constexpr, J: tc.constexpr, N: tc.constexpr):
    tables = tc.load(T, (0, 0, 0), (R, J, 16))
    idx = tc.load(IDX, (0, 0), (J, N))
    tc.store(OUT, (0, 0), tc.sum(tc.gather(tables, tc.expand_dims(idx, 0), 2), 1))


@pytest.mark.parametrize("entries", [16, 8])
def test_a_sum_of_hits_in_16_entry_tables_is_a_table_lookup_sum(entries):
    types = {"T": TensorType(3, dt.float32), "IDX": TensorType(2, dt.uint8), "OUT": F32_2}
    fn = summed_lookups.ir(types, {"R": 2, "J": 4, "N": 32}) if entries == 16 else None
    if fn is None:   # 8-entry tables do not fill a vector register: a plain loop nest
        @tc.kernel
        def small_tables(T, IDX, OUT, R: tc.constexpr, J: tc.constexpr, N: tc.constexpr):
            tables = tc.load(T, (0, 0, 0), (R, J, 8))
            idx = tc.load(IDX, (0, 0), (J, N))
            tc.store(OUT, (0, 0), tc.sum(tc.gather(tables, tc.expand_dims(idx, 0), 2), 1))
        fn = small_tables.ir(types, {"R": 2, "J": 4, "N": 32})
    (red,) = _ops(lowered(fn, BLAS), "reduce")
    assert red.attrs.get("lowering") == ("table_lookup_sum" if entries == 16 else None)
    assert "lowering" not in _ops(lowered(fn, BLAS, without="choose-reductions"), "reduce")[0].attrs


@tc.kernel
def summed_computed_lookups(T, IDX, OUT, R: tc.constexpr, J: tc.constexpr, N: tc.constexpr):
    tables = tc.load(T, (0, 0, 0), (R, J, 16))
    idx = tc.load(IDX, (0, 0), (J, N))
    tc.store(OUT, (0, 0), tc.sum(tc.gather(tables, tc.expand_dims(idx + 1, 0), 2), 1))


def test_hits_without_a_matrix_view_are_summed_by_loops():
    # the hits are an expression computed inside the sum: no matrix to hand a lookup routine
    types = {"T": TensorType(3, dt.float32), "IDX": TensorType(2, dt.int32), "OUT": F32_2}
    fn = lowered(summed_computed_lookups.ir(types, {"R": 2, "J": 4, "N": 32}), BLAS)
    (plus,) = [op for op in _ops(fn, "binary", op="add") if op.result.shape]
    assert plus.attrs.get("inline")
    assert _ops(fn, "reduce")[0].attrs.get("lowering") is None


# -- the cuda lowering ---------------------------------------------------------------------------
CUDA = {"threads": 128, "mma": "simt", "min_blocks": 1}


@tc.kernel
def transposed_epilogue(X, Y, S, B: tc.constexpr):
    x = tc.load(X, (0, 0), (B, B))
    e = tc.exp(x)
    tc.store(Y, (0, 0), tc.trans(e) + 1.0)                 # e: read across threads, by trans
    tc.store(S, (0,), tc.sum(x * 2.0, 1))                  # x * 2.0: read by a reduction


def _transposed():
    return transposed_epilogue.ir({"X": F32_2, "Y": F32_2, "S": F32_1}, {"B": 16})


def cuda_lowered(fn, without: str | None = None):
    out = clone(fn)
    for p in LOWERING["cuda"]:
        if p.name != without:
            out = p.run(out, CUDA)
    return out


pointwise_holds = inline_single_use_holds     # the same epilogue, the same tiles inline


def test_cuda_inline_pointwise_on_ir():
    fn = _epilogue()
    assert not pointwise_holds(fn)
    assert pointwise_holds(cuda_lowered(fn))
    assert not pointwise_holds(cuda_lowered(fn, without="inline-pointwise"))   # mutation check
    # a tile read at another thread's element (by trans) or by a reduction stays a tile; the
    # trans and the add, each read at its own element, go into the store
    fn = cuda_lowered(_transposed())
    (e,), (t,), (plus,) = _ops(fn, "unary", op="exp"), _ops(fn, "trans"), _ops(fn, "binary", op="add")
    (double,) = _ops(fn, "binary", op="mul")
    assert "inline" not in e.attrs and "inline" not in double.attrs and plus.attrs.get("inline")
    assert t.attrs.get("inline")


def test_cuda_plan_inlines_what_the_ir_says():
    from tilec.backends.cuda.plan import make_plan
    fn = cuda_lowered(_epilogue())
    assert make_plan(fn, 128, "simt").inline == {op.result.id for op in fn.walk() if op.attrs.get("inline")}


def test_a_blocked_dots_left_operand_is_never_a_clipped_view():
    """A blocked dot is a loop nest reading its left operand at the tile's whole extent, so that
    tile cannot be a BLAS view clipped to the tensor (it read past the tensor's end)."""
    fn = lowered(_codes(), BLAS)
    dots = _ops(fn, "dot")
    lefts = {d.operands[0].id for d in dots}
    loads = [op for op in _ops(fn, "load") if op.result.id in lefts]
    assert len(loads) == 2 and all("blocked" in d.attrs for d in dots)
    assert all(op.attrs.get("lowering") not in (None, "view") for op in loads), \
        [op.attrs.get("lowering") for op in loads]
