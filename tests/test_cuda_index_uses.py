"""The CUDA renderer binds only the thread-index helpers something reads: which axes of a
thread's tile index each value reads is decided on the IR and the plan (index_uses.py), and
every generated source declares no constant it never reads."""
from __future__ import annotations

import re

import pytest

import tilec as tc
from tilec import dtypes as dt
from tilec.backends import get
from tilec.backends.cuda.index_uses import axes, expr_reads, value_reads
from tilec.backends.cuda.plan import make_plan
from tilec.ir import TensorType
from tilec.passes import lower

F32_1, F32_2 = TensorType(1, dt.float32), TensorType(2, dt.float32)
CUDA = {"threads": 128, "mma": "simt", "min_blocks": 1}


@tc.kernel
def row_plus_column(X, V, Y, T, BM: tc.constexpr, BN: tc.constexpr):
    x = tc.load(X, (0, 0), (BM, BN))
    v = tc.load(V, (0,), (BN,))
    y = x + v[None, :]                       # v broadcast along the rows
    tc.store(Y, (0, 0), y)
    tc.store(T, (0, 0), tc.trans(y) * 2.0)   # y read across threads: a tile in shared memory
    tc.store(Y, (0, 0), tc.zeros((BM, BN), tc.float32) - tc.arange(BN)[None, :])


def _lowered():
    fn = row_plus_column.ir({"X": F32_2, "V": F32_1, "Y": F32_2, "T": F32_2}, {"BM": 16, "BN": 32})
    fn = lower(fn, "cuda", CUDA)
    return fn, make_plan(fn, 128, "simt")


def _op(fn, kind, **attrs):
    (op,) = [o for o in fn.walk() if o.kind == kind and all(o.attrs.get(k) == v for k, v in attrs.items())]
    return op


def test_reads_follow_the_plan_and_the_expression():
    fn, plan = _lowered()
    v, y, t = _op(fn, "load", box=(32,)).result, _op(fn, "binary", op="add").result, _op(fn, "trans").result
    assert plan.in_smem(v) and plan.in_smem(y)
    # x + v[None, :]: x in registers reads its slot, v[None, :] the column only; y in shared
    # memory reads both axes
    assert expr_reads(plan, y.producer, axes(2), True) == {1}
    assert value_reads(plan, v, [frozenset({3})], False) == {3}
    assert value_reads(plan, y, axes(2), True) == {0, 1}
    # trans(y) read at (i, j) reads y at (j, i): both axes, swapped
    assert value_reads(plan, t, [frozenset({5}), frozenset({7})], False) == {5, 7}
    # arange along the columns, the same in every row: the column only
    assert expr_reads(plan, _op(fn, "binary", op="sub"), axes(2), True) == {1}


def _declared_but_unread(source: str) -> list[str]:
    words: dict[str, int] = {}
    for w in re.findall(r"\b\w+\b", source):
        words[w] = words.get(w, 0) + 1
    names = re.findall(r"^\s*const (?:int|long long) (\w+) = ", source, re.M)
    return [n for n in names if words[n] == 1]


@pytest.mark.parametrize("threads", [32, 128, 256])
def test_generated_sources_declare_no_unread_index_constant(threads):
    be = get("cuda")
    fn = row_plus_column.ir({"X": F32_2, "V": F32_1, "Y": F32_2, "T": F32_2}, {"BM": 16, "BN": 32})
    source = be.render(fn, {**CUDA, "threads": threads})
    assert _declared_but_unread(source) == []
    assert "const int tx" in source and "const int ty" in source


def test_every_op_renders_without_unread_constants():
    import ops
    from ops.show import show
    for name in sorted(ops.REGISTRY):
        source = show(name, "cuda", what="source")
        assert _declared_but_unread(source) == [], name
