"""The smallest GEMM and GEMV in the DSL: no bias, activation or scaling. The backend tests, the
compile reports, the Triton GPU benchmark, the CPU cost-model records and the tuner examples all
use these two, so they exercise one kernel, not copies of it. The library's ops are ``ops.gemm``
and ``ops.gemv``."""
from __future__ import annotations

import tilec as tc


@tc.kernel
def gemm(A, B, C, BM: tc.constexpr, BN: tc.constexpr, BK: tc.constexpr):
    pm, pn = tc.program_id(0), tc.program_id(1)
    acc = tc.zeros((BM, BN), tc.float32)
    for k in tc.range(0, A.shape[1], BK):
        acc = tc.dot(tc.load(A, (pm * BM, k), (BM, BK)), tc.load(B, (k, pn * BN), (BK, BN)), acc)
    tc.store(C, (pm * BM, pn * BN), acc)


@tc.kernel
def gemv(A, X, Y, BM: tc.constexpr, BK: tc.constexpr):
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, A.shape[1], BK):
        acc = acc + tc.sum(tc.load(A, (pm * BM, k), (BM, BK)) * tc.load(X, (k,), (BK,))[None, :], 1)
    tc.store(Y, (pm * BM,), acc)
