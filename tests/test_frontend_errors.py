"""Each front-end error class is reached and names the file, the line and the problem."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import tilec as tc

X = np.ones((8, 8), np.float32)
Y = np.zeros((8, 8), np.float32)


def _line_of(kernel, needle: str) -> int:
    lines, first = inspect.getsourcelines(kernel.fn)
    return first + next(i for i, line in enumerate(lines) if needle in line)


def _launch(kernel, *args, **config):
    kernel[(1,)](*args, **config)


@tc.kernel
def k_unknown_op(X, Y, B: tc.constexpr):
    t = tc.load(X, (0, 0), (B, B))
    tc.store(Y, (0, 0), np.tanh(t))  # numpy function on a tile


@tc.kernel
def k_dot_mismatch(X, Y, B: tc.constexpr):
    a = tc.load(X, (0, 0), (B, B))
    b = tc.load(X, (0, 0), (B + 1, B))
    tc.store(Y, (0, 0), tc.dot(a, b))


@tc.kernel
def k_runtime_tile_size(X, Y, n):
    t = tc.load(X, (0, 0), (n, n))
    tc.store(Y, (0, 0), t)


@tc.kernel
def k_while(X, Y, B: tc.constexpr):
    while True:
        pass


@tc.kernel
def k_return(X, Y, B: tc.constexpr):
    return tc.load(X, (0, 0), (B, B))


@tc.kernel
def k_undefined(X, Y, B: tc.constexpr):
    tc.store(Y, (0, 0), tc.load(X, (0, 0), (B, B)) + bogus_name)  # noqa: F821


@tc.kernel
def k_carried_shape(X, Y, B: tc.constexpr):
    acc = tc.zeros((B, B), tc.float32)
    for i in tc.range(0, 4):
        acc = tc.sum(acc, axis=0)
    tc.store(Y, (0, 0), acc)


@tc.kernel
def k_index_tile(X, Y, B: tc.constexpr):
    t = tc.load(X, (0, 0), (B, B))
    tc.store(Y, (0, 0), t[0])


@tc.kernel
def k_tensor_math(X, Y, B: tc.constexpr):
    tc.store(Y, (0, 0), X + 1.0)


@tc.kernel
def k_wrong_rank(X, Y, B: tc.constexpr):
    tc.store(Y, (0, 0), tc.load(X, (0,), (B,)))


@tc.kernel
def k_shift_float(X, Y, B: tc.constexpr):
    t = tc.load(X, (0, 0), (B, B))
    tc.store(Y, (0, 0), t >> 2)


@tc.kernel
def k_broadcast(X, Y, B: tc.constexpr):
    a = tc.load(X, (0, 0), (B, B))
    b = tc.load(X, (0, 0), (B, 3))
    tc.store(Y, (0, 0), a + b)


@tc.kernel
def k_static_assert(X, Y, B: tc.constexpr):
    assert B % 16 == 0, "B must be a multiple of 16"
    tc.store(Y, (0, 0), tc.load(X, (0, 0), (B, B)))


CASES = [
    (k_unknown_op, "np.tanh(t)", r"unknown op .*tanh"),
    (k_dot_mismatch, "tc.dot(a, b)", r"tc\.dot shape mismatch.*inner extents 4 != 5"),
    (k_runtime_tile_size, "(n, n)", r"compile-time ints.*constexpr"),
    (k_while, "while True", r"'while' is not supported"),
    (k_return, "return tc.load", r"return is only allowed"),
    (k_undefined, "bogus_name", r"name 'bogus_name' is not defined"),
    (k_carried_shape, "for i in", r"loop-carried 'acc' changes shape"),
    (k_index_tile, "t[0]", r"tiles can only be indexed with ':' and None"),
    (k_tensor_math, "X + 1.0", r"tensor parameter.*tc\.load"),
    (k_wrong_rank, "tc.load(X, (0,), (B,))", r"rank-2 tensor 'X' needs 2 offsets"),
    (k_shift_float, "t >> 2", r"'shr' needs integer operands"),
    (k_broadcast, "a + b", r"do not broadcast"),
    (k_static_assert, "assert B", r"static assert failed: B must be a multiple of 16"),
]


@pytest.mark.parametrize("kernel,needle,match", CASES, ids=[c[0].name for c in CASES])
def test_error_names_file_line_and_problem(kernel, needle, match):
    args = (X, Y, 3) if kernel is k_runtime_tile_size else (X, Y)
    config = {} if kernel is k_runtime_tile_size else {"B": 4}
    with pytest.raises(tc.TilecError, match=match) as info:
        _launch(kernel, *args, **config)
    assert info.value.where == f"{__file__}:{_line_of(kernel, needle)}"
    assert str(info.value).startswith(f"{__file__}:{_line_of(kernel, needle)}: ")


def test_missing_constexpr_and_unknown_config_key():
    with pytest.raises(tc.ConfigError, match=r"needs constexpr value\(s\) for \['B'\]"):
        _launch(k_static_assert, X, Y)
    with pytest.raises(tc.ConfigError, match=r"config keys \['ZZ'\].*constexpr parameters of kernel.*B"):
        _launch(k_static_assert, X, Y, B=16, ZZ=1)
    with pytest.raises(tc.ConfigError, match=r"dot='fast' is not one of"):
        _launch(k_static_assert, X, Y, B=16, dot="fast")


def test_unsupported_array_dtype():
    with pytest.raises(tc.TilecError, match="unsupported array dtype complex64"):
        _launch(k_static_assert, X.astype(np.complex64), Y, B=16)


def test_wrong_argument_count():
    with pytest.raises(tc.TilecError, match=r"takes 2 runtime arguments \(X, Y\), got 1"):
        _launch(k_static_assert, X, B=16)


def test_dsl_functions_outside_a_kernel():
    with pytest.raises(tc.TilecError, match="only be used inside a @tc.kernel"):
        tc.load(X, (0, 0), (2, 2))
    with pytest.raises(tc.TilecError, match=r"with a grid"):
        k_static_assert(X, Y)
