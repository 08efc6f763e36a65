"""Calibrated (GPTQ) quantization against round-to-nearest on heavy-tailed synthetic layers:
output error measured in float64 on held-out activations from the same distribution."""
from __future__ import annotations

import numpy as np
import pytest

import ops
import tilec as tc
from ops.gptq import hessian


def heavy_tailed_layer(seed: int, k: int = 256, n: int = 128, samples: int = 1024):
    """Correlated activations (a random mixing of the inputs) with a few outlier input channels
    20x larger, and Student-t (3 degrees of freedom) weights: the cases OPTQ/AWQ analyse."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    scale = np.ones(k)
    scale[rng.choice(k, k // 32, replace=False)] = 20.0
    x = ((rng.standard_normal((2 * samples, k)) @ mix) * scale).astype(np.float32)
    w = (rng.standard_t(3, (k, n)) * 0.05).astype(np.float32)
    return x[:samples], x[samples:], w


def output_error(x, w, approx) -> float:
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x @ (w.astype(np.float64) - approx)) / np.linalg.norm(x @ w.astype(np.float64)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_calibrated_int4_beats_round_to_nearest(seed, symmetric):
    calib, held_out, w = heavy_tailed_layer(seed)
    rtn = ops.quantize(w, 4, 64, symmetric)
    cal = ops.quantize(w, 4, 64, symmetric, calibration=calib)
    assert cal.scales.shape == rtn.scales.shape and (cal.zeros is None) == symmetric
    e_rtn, e_cal = output_error(held_out, w, rtn.dequantize()), output_error(held_out, w, cal.dequantize())
    assert e_cal <= 0.7 * e_rtn, (e_cal, e_rtn)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["alternating", "uniform"])
def test_calibrated_3bit_bcq_beats_uncalibrated(seed, method):
    calib, held_out, w = heavy_tailed_layer(seed)
    plain = ops.bcq_quantize(w, 3, 64, method)
    cal = ops.bcq_quantize(w, 3, 64, method, calibration=calib)
    assert cal.bits.shape == plain.bits.shape and (cal.beta is None) == (plain.beta is None)
    e_plain, e_cal = output_error(held_out, w, plain.dequantize()), output_error(held_out, w, cal.dequantize())
    assert e_cal <= 0.7 * e_plain, (e_cal, e_plain)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asymmetric_default_no_worse_than_symmetric(seed):
    calib, held_out, w = heavy_tailed_layer(seed)
    default = ops.quantize(w, 4, 64)
    assert not default.config.symmetric
    sym = ops.quantize(w, 4, 64, symmetric=True)
    assert output_error(held_out, w, default.dequantize()) <= output_error(held_out, w, sym.dequantize())
    gaussian = np.random.default_rng(seed).standard_normal((256, 64)).astype(np.float32)
    assert np.linalg.norm(ops.quantize(gaussian, 4, 64).dequantize() - gaussian) <= \
        np.linalg.norm(ops.quantize(gaussian, 4, 64, symmetric=True).dequantize() - gaussian)


def test_calibrated_codes_run_through_the_kernels():
    """Calibrated weights are ordinary packed weights: the kernels reproduce their dequantized product."""
    calib, held_out, w = heavy_tailed_layer(3, k=128, n=64, samples=256)
    x = held_out[:3]
    qw = ops.quantize(w, 4, 32, calibration=calib)
    ref = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    np.testing.assert_allclose(ops.quant_gemm(x, qw), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    bw = ops.bcq_quantize(w, 3, 32, "alternating", calibration=calib)
    ref = x.astype(np.float64) @ bw.dequantize().astype(np.float64)
    np.testing.assert_allclose(ops.lut_gemm(x, bw), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_dead_inputs_and_in_order_variant():
    """Inputs that never fire get zero weight rows (nothing to preserve); the in-order variant
    (groups fitted as they come) also beats round-to-nearest."""
    from ops.gptq import gptq
    from ops.quant_format import group_params, snap_codes
    calib, held_out, w = heavy_tailed_layer(4)
    calib[:, :5] = 0.0
    held_out[:, :5] = 0.0

    def snap(row, p):
        code = snap_codes(row, p[0], p[1], 4, False)
        return p[0] * (code - p[1]), code

    params, codes = gptq(w, calib, 64, lambda rows: group_params(rows, 4, False), snap, act_order=False)
    scale = np.repeat(np.stack([p[0] for p in params]), 64, axis=0)
    zero = np.repeat(np.stack([p[1] for p in params]), 64, axis=0)
    approx = scale * (codes - zero)
    assert np.abs(approx[:5]).max() <= scale[:5].max() / 2   # rows of dead inputs are rounded zeros
    rtn = ops.quantize(w, 4, 64)
    assert output_error(held_out, w, approx) < output_error(held_out, w, rtn.dequantize())


def test_calibration_rejects_bad_input():
    w = np.ones((64, 8), np.float32)
    with pytest.raises(tc.InputError, match="calibration"):
        ops.quantize(w, 4, 32, calibration=np.ones((10, 63), np.float32))
    with pytest.raises(tc.InputError, match="calibration"):
        ops.bcq_quantize(w, 3, 32, calibration=np.full((10, 64), np.nan, np.float32))
    with pytest.raises(tc.InputError, match="calibration"):
        hessian(np.ones((10, 64), np.int32), 64)


def test_quantize_linear_passes_calibration():
    torch = pytest.importorskip("torch")
    from ops.torch.quant_linear import quantize_linear
    calib, held_out, w = heavy_tailed_layer(5, k=128, n=64, samples=512)
    lin = torch.nn.Linear(128, 64, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T.copy()))
    xt = torch.from_numpy(held_out)
    exact = lin(xt).detach().numpy().astype(np.float64)
    errs = {}
    for name, cal in (("plain", None), ("calibrated", torch.from_numpy(calib))):
        q = quantize_linear(lin, "int4", group_size=32, calibration=cal)
        errs[name] = np.linalg.norm(q(xt).detach().numpy() - exact) / np.linalg.norm(exact)
    assert errs["calibrated"] <= 0.7 * errs["plain"], errs
