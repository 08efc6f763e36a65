"""The alternating BCQ quantizer's sign step against brute force (it was rewritten for speed)."""
from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.bcq import _best_signs


@settings(max_examples=30)
@given(q=st.integers(1, 4), groups=st.integers(1, 3), g=st.sampled_from([1, 5, 8]), n=st.integers(1, 7),
       seed=st.integers(0, 2**16))
def test_best_signs_pick_the_nearest_combination(q, groups, g, n, seed):
    rng = np.random.default_rng(seed)
    wg = rng.standard_normal((groups, g, n))
    alpha = np.abs(rng.standard_normal((q, groups, n))) + 0.01
    signs = _best_signs(wg, alpha)
    assert signs.shape == (q, groups, g, n) and set(np.unique(signs)) <= {-1.0, 1.0}
    got = np.einsum("qgkn,qgn->gkn", signs, alpha)
    combos = np.array(list(itertools.product((-1.0, 1.0), repeat=q)))
    values = np.einsum("cq,qgn->gnc", combos, alpha)                     # every representable value
    best = np.abs(wg[..., None] - values[:, None, :, :]).min(axis=-1)
    np.testing.assert_allclose(np.abs(wg - got), best, rtol=0, atol=1e-12)
