"""Error-compensating quantization from calibration activations (GPTQ / OPTQ, Frantar et al. 2023).

For a layer ``y = x @ W`` (W is (K, N)) and calibration rows X (S, K), round-to-nearest minimises
the weight error; GPTQ minimises the layer's output error ``||X W - X Wq||``. It quantizes W
one input row k at a time and spreads that row's rounding error over the rows not yet
quantized, weighted by the inverse Hessian ``H = X^T X`` (plus ``damp`` times its mean diagonal,
so H is invertible when inputs are few or correlated):

    err = (w_k - q(w_k)) / U[k, k];   W[k+1:] -= outer(U[k, k+1:], err)

with U the upper Cholesky factor of H^-1. Rows run in blocks whose updates are applied lazily
(one matrix product per block). Group-wise formats fit each group's parameters (scales and zero
points, or BCQ plane scales) from the original weights, and rows run in order of decreasing
activation energy ("act order" with static groups); or, in plain row order, when the group's
first row comes up, from the rows as updated so far. The quantizer is passed in: ``fit(rows) -> params``
and ``snap(row, params) -> (approximation, codes)``, so one loop serves integer and BCQ codes.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tilec.errors import InputError


def hessian(x, k: int, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(damped H = X^T X, inputs that never fire) for calibration rows x (..., K)."""
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-1] != k or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"calibration must be float activations of shape (samples, {k}), "
                         f"got {x.dtype} {x.shape}")
    x = x.reshape(-1, k).astype(np.float64)
    if x.shape[0] == 0 or not np.all(np.isfinite(x)):
        raise InputError("calibration holds no rows, or NaN or infinite values")
    h = x.T @ x
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += np.eye(k) * damp * np.mean(np.diag(h))
    return h, dead


def gptq(w: np.ndarray, calibration, group_size: int, fit: Callable[[np.ndarray], Any],
         snap: Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray]], damp: float = 0.01,
         act_order: bool = True, block: int = 128) -> tuple[list, np.ndarray]:
    """Quantize W (K, N) row by row with error feedback; returns (params per group, codes per row
    stacked along a new first axis, in W's row order).

    ``act_order``: rows run in order of decreasing Hessian diagonal (the inputs with the largest
    activations first, while the most rows remain to absorb their error), with every group's
    parameters fitted up front from the original weights, so the packed layout is unchanged.
    Without it rows run in order and each group is fitted when its first row comes up."""
    k, n = w.shape
    h, dead = hessian(calibration, k, damp)
    w = w.astype(np.float64).copy()
    w[dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    params: list = [fit(w[g:g + group_size]) for g in range(0, k, group_size)] if act_order else []
    h, w = h[np.ix_(order, order)], w[order]
    u = np.linalg.cholesky(np.linalg.inv(h)).T              # upper: H^-1 = U^T U
    block = max(group_size, block // group_size * group_size)  # in order, groups never straddle blocks
    codes: list = []
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = w[b0:b1]                                       # updated in place, row by row
        errs = np.zeros((b1 - b0, n))
        for i in range(b1 - b0):
            row = b0 + i
            if not act_order and row % group_size == 0:
                params.append(fit(wb[i:i + group_size]))
            approx, code = snap(wb[i], params[order[row] // group_size])
            codes.append(code)
            errs[i] = (wb[i] - approx) / u[row, row]
            wb[i + 1:] -= np.outer(u[row, row + 1:b1], errs[i])
        w[b1:] -= u[b0:b1, b1:].T @ errs
    out = np.empty((k,) + codes[0].shape, codes[0].dtype)
    out[order] = np.stack(codes)
    return params, out
