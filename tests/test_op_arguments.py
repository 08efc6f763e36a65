"""Bad arguments to the public ops give a tilec.InputError / TilecError naming the argument;
zero-size problems give defined results. Each test here failed on the code before issue 25."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ops
import tilec as tc
from tilec.backends.cuda.offline import CompileReport

ROOT = Path(__file__).resolve().parents[1]
F = np.float32


def _a(*shape, dtype=F, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("config, match", [
    ("junk", "config must be a dict"),
    (["BM", 16], "config must be a dict"),
    ({"BM": 16.0}, r"BM=16\.0 \(float\)"),
    ({"BM": True}, "BM=True"),
    ({"BM": "16"}, "BM='16'"),
    ({"XX": 1}, r"keys \['XX'\] are not tunable"),
    ({1: 16}, r"keys \['1'\] are not tunable"),
])
def test_a_bad_config_is_a_config_error_naming_it(config, match):
    a = _a(8, 8)
    calls = [lambda: ops.gemm(a, a, config=config), lambda: ops.gemv(a, a[0], config=config),
             lambda: ops.attention(_a(1, 1, 4, 16), _a(1, 1, 4, 16), _a(1, 1, 4, 16), config=config)]
    for call in calls:
        with pytest.raises(tc.ConfigError, match=match):
            call()


def test_a_numpy_integer_config_value_stands_for_an_int():
    a, b = _a(5, 7), _a(7, 3)
    got = ops.gemm(a, b, config={"BM": np.int64(16), "BN": 16, "BK": 16})
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["x", None, [1.0], True])
def test_alpha_and_scale_must_be_real_numbers(value):
    a = _a(4, 4)
    with pytest.raises(tc.InputError, match="alpha must be a real number"):
        ops.gemm(a, a, alpha=value)
    if value is not None:           # scale=None is the default 1/sqrt(D)
        q = _a(1, 1, 2, 16)
        with pytest.raises(tc.InputError, match="scale must be a real number"):
            ops.attention(q, q, q, scale=value)


def test_attention_over_zero_keys_is_zero_with_lse_minus_infinity():
    q = _a(1, 2, 3, 16)
    empty = np.zeros((1, 1, 0, 16), F)
    for _ in range(3):              # fresh allocations: uninitialized memory came back before
        out, lse = ops.attention(q, empty, empty, return_lse=True)
        assert out.shape == (1, 2, 3, 16) and lse.shape == (1, 2, 3)
        assert np.array_equal(out, np.zeros_like(out)) and np.all(lse == -np.inf)
        _ = np.full((1, 2, 3, 16), 7.0, F)      # leave non-zero garbage in the allocator


@pytest.mark.parametrize("symmetric", [True, False])
def test_all_zero_weights_quantize_to_exact_zero_outputs(symmetric):
    """bits=4 symmetric zeros gave ~1e-4 (scale 1 times the difference of two equal sums)."""
    w = np.zeros((256, 64), F)
    x = _a(5, 256) * 10
    qw = ops.quantize(w, bits=4, group_size=128, symmetric=symmetric)
    assert np.array_equal(ops.quant_gemm(x, qw), np.zeros((5, 64), F))
    # a zero group beside a non-zero one: the zero columns stay exactly zero
    w2 = w.copy()
    w2[:128, :32] = _a(128, 32)
    y = ops.quant_gemm(x, ops.quantize(w2, bits=4, group_size=128, symmetric=symmetric))
    assert np.array_equal(y[:, 32:], np.zeros((5, 32), F))


def test_show_with_a_missing_triton_says_install_the_extra():
    code = ("import sys; sys.modules['triton'] = None\n"
            "from tilec.cli import main\n"
            "sys.exit(main(['show', 'gemm', '--backend', 'triton', '--arch', 'sm_80']))\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "pip install 'tilec[triton]'" in out.stderr


def test_show_prints_ptx_and_log_only_on_request_and_wraps_the_report(monkeypatch, capsys):
    from tilec import backends
    from tilec.cli import main
    ptx = "\n".join(f"  mov.u32 %r{i}, %r{i + 1};" for i in range(2000))
    report = CompileReport(arch="sm_80", registers=96, spills_bytes=0, shared_bytes=4096, barriers=1, ptx=ptx,
                           log="ptxas info    : Used 96 registers", compiler="nvrtc 12.4")
    monkeypatch.setattr(type(backends.get("cuda")), "compile_offline", lambda self, fn, options, arch: report)
    assert main(["show", "gemm", "--backend", "cuda", "--arch", "sm_80"]) == 0
    text = capsys.readouterr().out
    assert "mov.u32" not in text and "registers 96" in text
    assert max(map(len, text.split("## compile report")[1].splitlines())) <= 100
    assert main(["show", "gemm", "--backend", "cuda", "--arch", "sm_80", "--only", "ptx"]) == 0
    assert capsys.readouterr().out.strip() == ptx.strip()
    assert main(["show", "gemm", "--backend", "cuda", "--arch", "sm_80", "--only", "log"]) == 0
    assert capsys.readouterr().out.strip() == report.log
    assert main(["show", "gemm", "--backend", "cuda", "--only", "ptx"]) == 2
    assert "needs --arch" in capsys.readouterr().err
