"""The Triton backend on a real GPU (skipped without torch + CUDA): results on CUDA tensors
match the host reference, and the GEMM benchmark against torch.matmul runs."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tilec as tc
from ops.plain import gemm


def _cuda() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (GPU tests launch on torch CUDA tensors)"
    import torch
    return None if torch.cuda.is_available() else "no CUDA device on this machine"


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_cuda() is not None, reason=f"GPU test: {_cuda()}")]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 1e-3), ("bfloat16", 1e-3)])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (37, 29, 45), (128, 256, 64), (513, 257, 1000)])
def test_gemm_on_cuda_tensors(dtype, tol, M, N, K):
    import torch
    torch.manual_seed(M + N + K)
    a = torch.randn(M, K, device="cuda").to(getattr(torch, dtype))
    b = torch.randn(K, N, device="cuda").to(getattr(torch, dtype))
    c = torch.full((M, N), float("nan"), device="cuda")
    gemm[(tc.cdiv_host(M, 64), tc.cdiv_host(N, 64))](a, b, c, backend="triton", BM=64, BN=64, BK=32,
                                                      num_warps=4, num_stages=3)
    ref = a.double().cpu().numpy() @ b.double().cpu().numpy()
    np.testing.assert_allclose(c.cpu().numpy(), ref, rtol=tol, atol=tol * K)


def test_cupy_arrays_launch_too():
    cupy = pytest.importorskip("cupy", reason="cupy is optional")
    a = cupy.random.standard_normal((70, 33), dtype=cupy.float32)
    b = cupy.random.standard_normal((33, 20), dtype=cupy.float32)
    c = cupy.zeros((70, 20), cupy.float32)
    gemm[(2, 1)](a, b, c, backend="triton", BM=64, BN=32, BK=32)
    np.testing.assert_allclose(cupy.asnumpy(c), cupy.asnumpy(a).astype(np.float64) @ cupy.asnumpy(b),
                               rtol=1e-5, atol=1e-4)


def test_benchmark_against_torch_matmul_runs():
    from bench.gemm_triton_gpu import bench
    rows = bench([512], "float16")
    assert rows[0]["tilec_ms"] > 0 and rows[0]["torch_ms"] > 0
    print(rows)
