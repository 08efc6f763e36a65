"""``tc.limit``: a tensor cut to runtime extents (the IR kind ``limit``). Loads past the cut read
the padding, stores past it are dropped, on every backend against NumPy; the IR it makes; the
read-in-place pass sees a store through a cut view as a store to the tensor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tilec as tc
from ops.backends_for_tests import BACKENDS
from tilec import dtypes as dt
from tilec.errors import TilecError
from tilec.ir import TensorType, TileType, root
from tilec.passes import LOWERING, clone
from tilec.printer import format_function

F32_2 = TensorType(2, dt.float32)
I32 = TileType((), dt.int32)


@tc.kernel
def shifted_rows(X, Y, NX, NY, C, BM: tc.constexpr, BN: tc.constexpr):
    """Y[r, c] = X[r, c] + 1 for r < NY, c < C: X read below (NX, C), padding 7 beyond."""
    p = tc.program_id(0)
    x = tc.load(tc.limit(X, (NX, C)), (p * BM, 0), (BM, BN), padding=7.0)
    tc.store(tc.limit(Y, (NY, C)), (p * BM, 0), x + 1.0)


def _expected(x, y0, nx, ny, c, bm, programs):
    padded = np.full((programs * bm, x.shape[1]), 7.0, np.float32)
    rows, cols = max(0, min(nx, x.shape[0])), max(0, min(c, x.shape[1]))
    padded[:rows, :cols] = x[:rows, :cols]
    want = y0.copy()
    r, k = max(0, min(ny, y0.shape[0], programs * bm)), max(0, min(c, y0.shape[1]))
    want[:r, :k] = padded[:r, :k] + 1.0
    return want


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12, deadline=None)
@given(rows=st.sampled_from([1, 2, 7, 13, 32]), nx=st.sampled_from([-3, 0, 1, 5, 11, 40]),
       ny=st.sampled_from([0, 1, 3, 13, 50]), c=st.sampled_from([0, 1, 5, 8, 9]), seed=st.integers(0, 99))
def test_loads_pad_and_stores_stop_at_the_limit(backend, rows, nx, ny, c, seed):
    rng = np.random.default_rng(seed)
    bm, bn = 4, 8
    x = rng.standard_normal((rows, bn)).astype(np.float32)
    y = np.full((rows, bn), -5.0, np.float32)
    programs = -(-rows // bm)
    want = _expected(x, y, nx, ny, c, bm, programs)
    shifted_rows[(programs,)](x, y, np.int32(nx), np.int32(ny), np.int32(c), BM=bm, BN=bn, backend=backend)
    np.testing.assert_array_equal(y, want)


def _ir():
    return shifted_rows.ir({"X": F32_2, "Y": F32_2, "NX": I32, "NY": I32, "C": I32}, {"BM": 4, "BN": 8})


def test_the_front_end_makes_limit_ops_on_the_tensors():
    fn = _ir()
    limits = [op for op in fn.walk() if op.kind == "limit"]
    assert [op.attrs["axes"] for op in limits] == [(0, 1), (0, 1)]
    x, y = fn.params[:2]
    assert [op.operands[0] for op in limits] == [x, y]
    assert [op.operands[1].hint for op in limits] == ["NX", "NY"]
    load, = [op for op in fn.walk() if op.kind == "load"]
    store, = [op for op in fn.walk() if op.kind == "store"]
    assert root(load.operands[0]) is x and root(store.operands[0]) is y
    assert load.operands[0].type == x.type
    assert "limit" in format_function(fn)


@tc.kernel
def _bad_extents(X, N):
    tc.load(tc.limit(X, (N,)), (0, 0), (4, 4))


@tc.kernel
def _limit_of_tile(X, N):
    t = tc.load(X, (0,), (4,))
    tc.limit(t, (N,))


def test_wrong_limits_name_the_problem():
    with pytest.raises(TilecError, match="needs 2 extents"):
        _bad_extents.ir({"X": F32_2, "N": I32}, {})
    with pytest.raises(TilecError, match="tensor"):
        _limit_of_tile.ir({"X": TensorType(1, dt.float32), "N": I32}, {})


@tc.kernel
def _column_sums(X, OUT, N, BK: tc.constexpr, BN: tc.constexpr, SAME: tc.constexpr):
    """Column sums of X; with SAME they go into X itself (its row 0), through a cut view."""
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, X.shape[0], BK):
        acc = acc + tc.sum(tc.load(X, (k, 0), (BK, BN)), 0)
    if SAME:
        tc.store(tc.limit(X, (N, None)), (0, 0), acc, (None, BN))
    else:
        tc.store(tc.limit(OUT, (N,)), (0,), acc)


def _in_place(same: bool) -> bool:
    fn = clone(_column_sums.ir({"X": F32_2, "OUT": TensorType(1, dt.float32), "N": I32},
                               {"BK": 4, "BN": 8, "SAME": same}))
    for p in LOWERING["numba"]:
        fn = p.run(fn, {"dot": "blas"})
        if p.name == "read-in-place":
            break
    load, = [op for op in fn.walk() if op.kind == "load"]
    return bool(load.attrs.get("in_place"))


def test_read_in_place_sees_stores_through_a_limit():
    # X written through a cut view of itself must be copied, not indexed in place, while the
    # same load beside a store to another tensor is read in place (the pass applies at all)
    assert _in_place(False)
    assert not _in_place(True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_through_a_limit_into_the_loaded_tensor(backend):
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    want = x.copy()
    want[0] = x.sum(0)
    _column_sums[(1,)](x, np.zeros(8, np.float32), np.int32(1), BK=4, BN=8, SAME=True, backend=backend)
    np.testing.assert_array_equal(x, want)
