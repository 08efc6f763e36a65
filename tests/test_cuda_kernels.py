"""Kernels (and their NumPy references) that the CUDA backend tests run until ``ops.REGISTRY``
covers them; together they use every IR op kind. No tests here; a quick self-check of the
references only."""
from __future__ import annotations

import numpy as np

import tilec as tc
from tilec.kernel import cdiv_host


def gemm_grid(M, N, cfg):
    return (cdiv_host(M, cfg["BM"]), cdiv_host(N, cfg["BN"]))


@tc.kernel
def gemv(A, X, Y, BN: tc.constexpr, BK: tc.constexpr):
    """y = A @ x, one program per BN rows; reduction across the tile's columns."""
    pn = tc.program_id(0)
    acc = tc.zeros((BN,), tc.float32)
    for k in tc.range(0, A.shape[1], BK):
        a = tc.cast(tc.load(A, (pn * BN, k), (BN, BK)), tc.float32)
        x = tc.cast(tc.load(X, (k,), (BK,)), tc.float32)
        acc = acc + tc.sum(a * x[None, :], axis=1)
    tc.store(Y, (pn * BN,), acc)


@tc.kernel
def mixed(X, Tab, Idx, Y, Z, R, scale, BM: tc.constexpr, BN: tc.constexpr):
    """Row softmax-like math with where/exp/max/sum, a table gather, a transpose, a branch on a
    runtime scalar, casts to f16 and int32."""
    pm = tc.program_id(0)
    x = tc.load(X, (pm * BM, 0), (BM, BN))
    m = tc.max(x, axis=1)
    e = tc.exp(x - m[:, None])
    e = tc.where(x > 0.5, e, e * 0.5)
    p = e / tc.sum(e, axis=1, keepdims=True)
    tab = tc.load(Tab, (0,), (16,))
    idx = tc.load(Idx, (pm * BM, 0), (BM, BN))
    out = p + tc.gather(tab[None, :], idx, 1)
    if scale > 0.0:
        out = out * scale
    else:
        out = out - 1.0
    tc.store(Y, (pm * BM, 0), tc.cast(out, tc.float16))
    tc.store(Z, (0, pm * BM), tc.trans(x) * 2.0)
    tc.store(R, (pm * BM,), tc.cast(tc.min(x, axis=1) * 10.0, tc.int32))


def mixed_reference(x, tab, idx, scale, BN):
    M, N = x.shape
    xp = np.zeros((M, BN), np.float64)
    xp[:, :N] = x
    ip = np.zeros((M, BN), np.int64)
    ip[:, :N] = idx
    e = np.exp(xp - xp.max(axis=1, keepdims=True))
    e = np.where(xp > 0.5, e, e * 0.5)
    p = e / e.sum(axis=1, keepdims=True)
    out = p + tab.astype(np.float64)[ip]
    out = out * scale if scale > 0 else out - 1.0
    r = np.trunc(xp.min(axis=1) * 10.0).astype(np.int32)
    return out[:, :N], (x.T * 2.0), r


@tc.kernel
def integers(P, O, S, B: tc.constexpr):
    """Bit unpacking, Python floor division/modulo on negatives, broadcast + reshape, a
    scalar load, a loop-carried scalar and an integer reduction to a scalar."""
    pid = tc.program_id(0)
    i = tc.arange(B) + pid * B
    p = tc.load(P, (pid * B,), (B,))
    lo = p & 15
    hi = (p >> 4) & 15
    v = lo * 100 + hi * 10 + (i - 7) // 3 + (i - 7) % 3 + (~p & 3) * 1000 - tc.abs(p - 100) + tc.maximum(p, 5)
    w = tc.reshape(tc.broadcast_to(v[None, :], (2, B)) * tc.arange(2)[:, None], (2 * B,))
    tc.store(O, (pid * 2 * B,), w)
    first = tc.load(P, (0,), (None,))
    total = first
    for k in tc.range(0, 3):
        total = total + tc.sum(lo, axis=0) + k
    tc.store(S, (pid,), total + tc.num_programs(0), (None,))


def integers_reference(p, B):
    n = p.size
    nprog = cdiv_host(n, B)
    pp = np.zeros(nprog * B, np.int64)
    pp[:n] = p
    i = np.arange(nprog * B)
    lo, hi = pp & 15, (pp >> 4) & 15
    v = lo * 100 + hi * 10 + (i - 7) // 3 + (i - 7) % 3 + (~pp & 3) * 1000 - np.abs(pp - 100) + np.maximum(pp, 5)
    o = np.stack([v.reshape(nprog, B) * 0, v.reshape(nprog, B)], axis=1).reshape(-1)
    s = np.array([p[0] + 3 * lo.reshape(nprog, B)[q].sum() + 3 + nprog for q in range(nprog)])
    return o, s


def test_references_are_sane():
    x = np.array([[0.0, 1.0]], np.float32)
    y, z, r = mixed_reference(x, np.zeros(16, np.float32), np.zeros((1, 2), np.int32), 1.0, 2)
    assert np.isclose(y.sum(), 1.0) and z.shape == (2, 1) and r[0] == 0
    o, s = integers_reference(np.array([0x21], np.int32), 4)
    assert o[4] == 100 + 20 + (0 - 7) // 3 + (0 - 7) % 3 + (~0x21 & 3) * 1000 - abs(0x21 - 100) + 0x21
    assert s[0] == 0x21 + 3 + 3 + 1


@tc.kernel
def carried(X, Y, Z, flip, B: tc.constexpr):
    """Loop-carried tiles read across threads (so they live in shared memory), a swap of two
    carried tiles, and branch results read by a transpose."""
    x = tc.load(X, (0, 0), (B, B))
    acc = tc.zeros((B, B), tc.float32)
    for i in tc.range(0, 3):
        acc = tc.trans(acc) + x
    if flip > 0:
        r = tc.trans(acc)
    else:
        r = acc * 2.0
    tc.store(Y, (0, 0), tc.trans(r))
    p = tc.zeros((B, B), tc.float32) + 1.0
    q = x
    for i in tc.range(0, 4):
        p, q = q, p + q
    tc.store(Z, (0, 0), p * 10.0 + q)


def carried_reference(x, flip, B):
    n = x.shape[0]
    xp = np.zeros((B, B), np.float64)
    xp[:n, :n] = x
    acc = np.zeros((B, B))
    for _ in range(3):
        acc = acc.T + xp
    r = acc.T if flip > 0 else acc * 2.0
    p, q = np.ones((B, B)), xp
    for _ in range(4):
        p, q = q, p + q
    return r.T[:n, :n], (p * 10.0 + q)[:n, :n]


@tc.kernel
def unaries(X, Y, B: tc.constexpr):
    """Every float unary function and the float binary ops, one output row each."""
    pid = tc.program_id(0)
    x = tc.load(X, (pid * B,), (B,))
    a = tc.abs(x) + 0.5
    outs = (tc.exp(x), tc.exp2(x), tc.log(a), tc.log2(a), tc.sqrt(a), tc.rsqrt(a), tc.abs(x), tc.floor(x),
            tc.ceil(x), tc.sigmoid(x), tc.tanh(x), tc.erf(x), tc.sin(x), tc.cos(x), -x, a ** 1.5,
            tc.maximum(x, 0.1), tc.minimum(x, 0.1), x // 0.3, x % 0.3, x / a)
    for r in tc.static_range(len(outs)):
        tc.store(Y, (r, pid * B), outs[r], (None, B))


def unaries_reference(x):
    import math
    a = np.abs(x) + 0.5
    erf = np.vectorize(math.erf)
    return np.stack([np.exp(x), np.exp2(x), np.log(a), np.log2(a), np.sqrt(a), 1 / np.sqrt(a), np.abs(x),
                     np.floor(x), np.ceil(x), 1 / (1 + np.exp(-x)), np.tanh(x), erf(x), np.sin(x), np.cos(x), -x,
                     a ** 1.5, np.maximum(x, 0.1), np.minimum(x, 0.1), x // 0.3, x % 0.3, x / a])


@tc.kernel
def rank3(X, Y, S, B: tc.constexpr, C: tc.constexpr):
    """A rank-3 tile: reductions over axes 0 and 1 (keepdims), broadcasting back, int8 dot."""
    pid = tc.program_id(0)
    x = tc.load(X, (0, 0, pid * C), (2, B, C))
    centered = x - tc.max(x, axis=1, keepdims=True)
    tc.store(Y, (0, 0, pid * C), centered * 2.0)
    col = tc.sum(x, axis=0)                     # (B, C)
    q = tc.cast(col > 0.0, tc.int8) + tc.cast(col > 1.0, tc.int8)
    counts = tc.dot(tc.trans(q), q)             # (C, C) int32
    tc.store(S, (pid * C, 0), counts, (C, C))


def rank3_reference(x, B, C):
    _, n, m = x.shape
    nprog = -(-m // C)
    xp = np.zeros((2, B, nprog * C))
    xp[:, :n, :m] = x
    y = (xp - xp.max(axis=1, keepdims=True)) * 2.0
    col = xp.sum(axis=0)
    q = (col > 0).astype(np.int64) + (col > 1).astype(np.int64)
    s = np.concatenate([q[:, p * C:(p + 1) * C].T @ q[:, p * C:(p + 1) * C] for p in range(nprog)], axis=0)
    return y[:, :n, :m], s


@tc.kernel
def edges(X, U, L, Bo, Y, B: tc.constexpr):
    """Negative-step loops, -inf padding, a float carried scalar and scalar branch results,
    uint8 shifts, int64 and bool tensors, a broadcast store."""
    pid = tc.program_id(0)
    x = tc.load(X, (pid * B,), (B,), padding=float("-inf"))
    best = tc.max(x, axis=0)
    s = 0.0
    for k in tc.range(6, 0, -2):
        s = s + k * 0.5
    if best > 0.0:
        t = best + s
    else:
        t = best - s
    u = tc.load(U, (pid * B,), (B,))
    nib = (u >> 4) ^ (u & 15)
    tc.store(L, (pid * B,), tc.cast(nib, tc.int64) * 1000000007)
    tc.store(Bo, (pid * B,), tc.where(x > 0.0, x < 1.0, False))
    tc.store(Y, (pid, 0), tc.full((B,), t, tc.float32), (None, B))


def edges_reference(x, u, B):
    n = x.size
    nprog = -(-n // B)
    xp = np.full(nprog * B, -np.inf)
    xp[:n] = x
    best = xp.reshape(nprog, B).max(axis=1)
    s = (6 + 4 + 2) * 0.5
    t = np.where(best > 0, best + s, best - s)
    nib = ((u >> 4) ^ (u & 15)).astype(np.int64) * 1000000007
    bo = (x > 0) & (x < 1)
    return nib, bo, np.repeat(t[:, None], B, axis=1)


@tc.kernel
def dots(A, B, C0, Y, Z, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr):
    """A dot whose accumulator and result are both read across threads (shared memory)."""
    a = tc.load(A, (0, 0), (BM, BK))
    b = tc.load(B, (0, 0), (BK, BN))
    c0 = tc.load(C0, (0, 0), (BM, BN))
    d = tc.dot(a, b, c0)
    tc.store(Y, (0,), tc.sum(d, axis=0) + tc.sum(c0, axis=0))
    tc.store(Z, (0, 0), tc.trans(d))


def dots_reference(a, b, c0, BM, BN, BK):
    ap = np.zeros((BM, BK))
    ap[:a.shape[0], :a.shape[1]] = a
    bp = np.zeros((BK, BN))
    bp[:b.shape[0], :b.shape[1]] = b
    cp = np.zeros((BM, BN))
    cp[:c0.shape[0], :c0.shape[1]] = c0
    d = ap @ bp + cp
    return d.sum(axis=0) + cp.sum(axis=0), d.T
