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
def test_gemm_dots_count_the_ops_useful_flops(dtype):
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


def test_plain_gemm_counts_against_hand_values():
    """M=50, N=40, K=70 in 32-tiles: 2 x 2 programs of 3 steps; the edges worked out by hand."""
    from ops import plain
    fn = plain.gemm.ir({"A": F32_2, "B": F32_2, "C": F32_2}, {"BM": 32, "BN": 32, "BK": 32})
    w = count(fn, (2, 2), {"A": (50, 70), "B": (70, 40), "C": (50, 40)})
    assert w.programs == 4 and w.loop_trips == 12 and w.dots == {(32, 32, 32): 12}
    assert w.dot_flops == 12 * 2 * 32 ** 3 and w.useful_flops == 2 * 50 * 40 * 70
    assert w.bytes_loaded == 12 * 2 * 32 * 32 * 4 and w.bytes_stored == 4 * 32 * 32 * 4
    # A is read once per column of programs, B once per row of them, C written once
    assert w.tensor_valid_bytes == {"A": 50 * 70 * 4 * 2, "B": 70 * 40 * 4 * 2, "C": 50 * 40 * 4}
    # partial A tiles: row block 1 always, row block 0 at k=64 (x 2 columns); B likewise; C: 3 stores
    assert w.edge_accesses == 8 + 8 + 3
    assert w.min_bytes() == (50 * 70 + 70 * 40 + 50 * 40) * 4


def test_plain_gemv_counts_against_hand_values():
    """M=10, K=100, BM=4, BK=32: 3 programs of 4 steps; per step a multiply and a row sum over
    the (4, 32) tile and 4 adds onto the accumulator; useful: inside the 10 x 100 matrix."""
    from ops import plain
    fn = plain.gemv.ir({"A": F32_2, "X": F32_1, "Y": F32_1}, {"BM": 4, "BK": 32})
    w = count(fn, (3,), {"A": (10, 100), "X": (100,), "Y": (10,)})
    assert w.loop_trips == 12 and not w.dots
    assert w.bytes_loaded == 12 * (4 * 32 + 32) * 4 and w.bytes_stored == 3 * 4 * 4
    assert w.flops == 12 * (2 * 4 * 32 + 4)
    assert w.useful_flops == 2 * 10 * 100 + 4 * 10
    assert w.tensor_valid_bytes["A"] == 10 * 100 * 4 and w.tensor_valid_bytes["X"] == 3 * 100 * 4


def test_a_causal_bound_from_index_tiles_counts_each_programs_keys():
    """ops.attention computes its causal key range from index tiles (min/max over the rows):
    program p of 16 visits p + 1 key tiles."""
    from autotune.cost.launches import launch
    L = launch("attention", {"B": 1, "H": 2, "Hkv": 2, "Lq": 256, "Lk": 256, "D": 16, "causal": True},
               "float32", {"BM": 16, "BN": 16})
    w = count(L.fn, L.grid, L.extents, L.scalars)
    assert not w.approximate and w.loop_trips == 2 * sum(range(1, 17))


def test_the_cost_models_workload_follows_the_kernels_loops():
    """A different BK changes the gemm kernel's K loop: half the steps, twice the work per BLAS
    call, the same useful flops; the counts come from the kernel, not from a formula."""
    from autotune.cost.workload import workload_for
    shape = {"M": 128, "N": 96, "K": 256}
    a = workload_for("gemm", shape, "float32", {"BM": 32, "BN": 32, "BK": 32, "dot": "blas"})
    b = workload_for("gemm", shape, "float32", {"BM": 32, "BN": 32, "BK": 64, "dot": "blas"})
    assert a.inner_iterations == 8 and b.inner_iterations == 4
    assert b.library_calls == a.library_calls / 2 and b.call_flops == 2 * a.call_flops
    assert a.flops == b.flops and a.dot_shape == (32, 32, 32) and b.dot_shape == (32, 32, 64)
    loops = workload_for("gemm", shape, "float32", {"BM": 32, "BN": 32, "BK": 32, "dot": "loops"})
    assert loops.library_calls == 0 and loops.loop_ops > a.loop_ops + 2 * 128 * 96 * 256 / 2 - 1


@pytest.mark.parametrize("op,shape,cfg", [
    ("gemm", {"M": 40, "N": 24, "K": 48}, {"BM": 16, "BN": 16, "BK": 16}),
    ("gemv", {"M": 40, "K": 48}, {"BM": 16, "BK": 16}),
    ("quant_gemm", {"M": 3, "N": 64, "K": 256, "bits": 4, "group_size": 128}, {"BM": 2, "BNB": 16}),
    ("lut_gemm", {"M": 3, "N": 64, "K": 256, "bits": 3, "group_size": 128}, {"BM": 2, "BN": 32, "MU": 4}),
    ("attention", {"B": 2, "H": 4, "Hkv": 2, "Lq": 24, "Lk": 40, "D": 16}, {"BM": 16, "BN": 16, "BD": 16}),
])
def test_launch_extents_name_every_tensor_with_its_rank(op, shape, cfg):
    """The cost model gives every tensor parameter of the op's launched kernel extents of the
    parameter's rank, and the counted launch stays exact (no unevaluated bound)."""
    from autotune.cost.launches import launch
    L = launch(op, shape, "float32", cfg)
    tensors = {p.hint: p.type.rank for p in L.fn.params if p.is_tensor}
    assert set(tensors) <= set(L.extents)
    assert all(len(L.extents[n]) == r for n, r in tensors.items())
    assert not count(L.fn, L.grid, L.extents, L.scalars).approximate


def test_an_offline_compile_replaces_the_register_estimate():
    """Where Triton compiles offline here, its registers and shared memory replace the IR's
    estimates; elsewhere the workload stays as estimated."""
    pytest.importorskip("triton")
    from autotune.cost.workload import compiled_resources, workload_for
    from tilec.backends.triton import compile_offline
    from tilec.errors import TilecError
    shape, cfg = {"M": 256, "N": 256, "K": 256}, {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 2}
    w = workload_for("gemm", shape, "float16", cfg)
    try:
        from autotune.cost.launches import launch
        rep = compile_offline(launch("gemm", shape, "float16", cfg).fn, {"num_warps": 4, "num_stages": 2}, "sm_80")
    except TilecError:
        assert compiled_resources(w, "sm_80") == w
        return
    got = compiled_resources(w, "sm_80")
    assert (got.registers_per_thread, got.tile_bytes_local) == (rep.registers, rep.shared_bytes)
    assert got.flops == w.flops
