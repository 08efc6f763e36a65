"""Ops on Torch CPU tensors, and through torch.compile with no graph break (torch optional)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is optional: pip install torch (CPU build) to run these")

import ops  # noqa: E402
import tilec as tc  # noqa: E402
import tilec.torch  # noqa: E402,F401  (registers torch.ops.tilec.*)


def _ref(a, b):
    return a.double() @ b.double()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_gemm_on_torch_tensors_returns_torch(dtype, tol):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 19, generator=g).to(dtype)
    b = torch.randn(19, 23, generator=g).to(dtype)
    c = ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    assert isinstance(c, torch.Tensor) and c.dtype == dtype and c.shape == (37, 23)
    torch.testing.assert_close(c.double(), _ref(a, b), rtol=tol, atol=tol * 5)


def test_non_contiguous_torch_views_are_read_in_place():
    a = torch.randn(30, 50)[:, ::2]
    b = torch.randn(40, 25).t()
    c = ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    torch.testing.assert_close(c.double(), _ref(a, b), rtol=1e-4, atol=1e-4)


def test_gemv_on_torch_matches_numpy_result():
    a = torch.randn(65, 130)
    x = torch.randn(130)
    y = ops.gemv(a, x)
    np.testing.assert_allclose(y.numpy(), ops.gemv(a.numpy(), x.numpy()), rtol=1e-6)


def test_mixed_libraries_name_both():
    with pytest.raises(tc.TilecError, match="a is a torch array on cpu, b is a numpy array on cpu"):
        ops.gemm(torch.ones(2, 2), np.ones((2, 2), np.float32))


def test_custom_op_compiles_without_graph_break():
    def block(a, b, bias):
        h = torch.ops.tilec.gemm(a, b, bias, "relu", 1.0)
        return torch.ops.tilec.gemv(h, a[0, : h.shape[1]].contiguous(), None, None, 2.0)

    a, b, bias = torch.randn(8, 16), torch.randn(16, 8), torch.randn(8)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # fullgraph: a break raises
    out = compiled(a, b, bias)
    h = torch.relu(a.double() @ b.double() + bias.double())
    torch.testing.assert_close(out.double(), 2.0 * h @ a[0, :8].double(), rtol=1e-4, atol=1e-4)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        a, b = torch.empty(5, 7), torch.empty(7, 3)
        assert torch.ops.tilec.gemm(a, b, None, None, 1.0).shape == (5, 3)
        assert torch.ops.tilec.gemv(a, torch.empty(7), None, None, 1.0).shape == (5,)
