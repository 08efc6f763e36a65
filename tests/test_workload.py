"""Cost-model inputs counted from the IR (tilec.workload): loop trips, bytes, flops and dots
follow the kernel's structure, checked against counts worked out by hand and against what
the ops declare."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilec as tc
from tilec import dtypes as dt
from tilec.ir import TensorType
from tilec.workload import count

F32_1, F32_2 = TensorType(1, dt.float32), TensorType(2, dt.float32)


@tc.kernel
def row_sums(X, OUT, BM: tc.constexpr, BK: tc.constexpr):
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, X.shape[1], BK):
        acc = acc + tc.sum(tc.exp(tc.load(X, (pm * BM, k), (BM, BK))), 1)
    tc.store(OUT, (pm * BM,), acc)


@tc.kernel
def row_sums_split(X, OUT, BM: tc.constexpr, BK: tc.constexpr, SPLIT: tc.constexpr):
    """The same sums with the loop over K split into SPLIT outer steps of inner loops."""
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    chunk = SPLIT * BK
    for outer in tc.range(0, X.shape[1], chunk):
        for k in tc.range(outer, outer + chunk, BK):
            acc = acc + tc.sum(tc.exp(tc.load(X, (pm * BM, k), (BM, BK))), 1)
    tc.store(OUT, (pm * BM,), acc)


@tc.kernel
def causal_rows(X, OUT, B: tc.constexpr):
    """Program p reads the first p + 1 blocks (a causal mask's loop bound)."""
    p = tc.program_id(0)
    acc = tc.zeros((B,), tc.float32)
    for j in tc.range(0, (p + 1) * B, B):
        acc = acc + tc.load(X, (j,), (B,))
    tc.store(OUT, (p * B,), acc)


def _rows(kernel, M, K, **consts):
    fn = kernel.ir({"X": F32_2, "OUT": F32_1}, consts)
    return count(fn, (math.ceil(M / consts["BM"]),), {"X": (M, K), "OUT": (M,)})


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 300), bm=st.sampled_from([1, 4, 16]), bk=st.sampled_from([1, 8, 32]))
def test_loop_trips_bytes_and_flops_follow_the_tiles(m, k, bm, bk):
    w = _rows(row_sums, m, k, BM=bm, BK=bk)
    programs, steps = math.ceil(m / bm), math.ceil(k / bk)
    assert w.programs == programs and w.loop_trips == programs * steps
    assert w.bytes_loaded == programs * steps * bm * bk * 4 and w.bytes_stored == programs * bm * 4
    assert w.special == programs * steps * bm * bk                     # one exp per element
    # exp + the row sum over the tile + adding the sums to acc, per step
    assert w.flops == programs * steps * (2 * bm * bk + bm)
    assert not w.approximate and w.tensor_bytes["X"] == w.bytes_loaded


def test_changing_the_loop_structure_changes_the_workload():
    flat = _rows(row_sums, 64, 256, BM=16, BK=32)
    split = _rows(row_sums_split, 64, 256, BM=16, BK=32, SPLIT=2)
    assert split.loop_trips == flat.loop_trips + 4 * (256 // 64)      # the outer loop's trips come on top
    assert (split.flops, split.bytes_loaded) == (flat.flops, flat.bytes_loaded)
    coarser = _rows(row_sums, 64, 256, BM=16, BK=64)
    assert coarser.loop_trips == flat.loop_trips // 2 and coarser.bytes_loaded == flat.bytes_loaded


def test_a_bound_that_depends_on_the_program_is_counted_per_program():
    fn = causal_rows.ir({"X": F32_1, "OUT": F32_1}, {"B": 8})
    w = count(fn, (5,), {"X": (40,), "OUT": (40,)})
    assert w.loop_trips == 1 + 2 + 3 + 4 + 5 and w.bytes_loaded == 15 * 8 * 4


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gemm_dots_count_what_the_op_declares(dtype):
    import ops
    spec = ops.REGISTRY["gemm"]
    shape = {"M": 256, "N": 128, "K": 512}
    cfg = {"BM": 64, "BN": 64, "BK": 128}
    kernel, fn, grid = spec.launch_ir(shape, dtype, cfg)
    w = count(fn, grid, {"A": (256, 512), "B": (512, 128), "C": (256, 128), "bias": (128,)}, {"alpha": 1.0})
    assert w.dot_flops == spec.flops(shape)
    assert w.dots == {(64, 64, 128): (256 // 64) * (128 // 64) * (512 // 128)}
    item = 4 if dtype == "float32" else 2
    # each program streams its rows of A and its columns of B once
    assert w.tensor_bytes["A"] == 256 * 512 * item * (128 // 64)
    assert w.tensor_bytes["B"] == 512 * 128 * item * (256 // 64)
