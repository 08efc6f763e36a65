"""Cold and warm start: one specialization serves every layout, a long compile says so,
`tilec warmup` fills the cache, repeated calls reuse their resolved launch, and the OpenMP
wait policy beside torch is applied."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ops
import tilec as tc
from tilec.backends.numba import runner
from tilec.runtime import notice

ROOT = Path(__file__).resolve().parents[1]
CFG = {"BM": 16, "BN": 16, "BK": 16}


def _variant(x: np.ndarray, layout: str, read_only: bool) -> np.ndarray:
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    elif layout == "reversed":
        x = x[::-1].copy()[::-1]
    else:
        x = x.copy()
    if read_only:
        x.flags.writeable = False
    return x


def _gemm_dispatchers() -> list:
    found = {k[0] for k in runner._specs if k[0].__name__.startswith("gemm_kernel") and "_bm16_bn16_bk16" in k[0].__name__}
    assert found, "no gemm specialization for the test's config"
    return list(found)


@settings(max_examples=12)
@given(m=st.integers(1, 37), n=st.integers(1, 29), k=st.integers(1, 23),
       layouts=st.tuples(st.sampled_from(["C", "F", "strided", "reversed"]), st.sampled_from(["C", "F", "strided"])),
       read_only=st.tuples(st.booleans(), st.booleans()))
def test_layouts_and_read_only_inputs_share_two_specializations(m, n, k, layouts, read_only):
    """C-contiguous inputs run one compile, every other layout one more ('A'), read-only or not."""
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a64, b64 = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    a = _variant(a64.astype(np.float32), layouts[0], read_only[0])
    b = _variant(b64.astype(np.float32), layouts[1], read_only[1])
    c = ops.gemm(a, b, config=CFG)
    np.testing.assert_allclose(c, a64.astype(np.float32).astype(np.float64) @ b64.astype(np.float32), rtol=1e-4,
                               atol=1e-4)
    for dispatcher in _gemm_dispatchers():
        assert len(dispatcher.overloads) <= 4, list(dispatcher.overloads)   # (C | A) x (C | A) for a and b


def test_every_non_contiguous_layout_runs_one_compile():
    cfg = {"BM": 32, "BN": 16, "BK": 16}            # a config no other test launches
    rng = np.random.default_rng(3)
    a64, b64 = rng.standard_normal((21, 13)), rng.standard_normal((13, 10))
    a, b = a64.astype(np.float32), b64.astype(np.float32)
    for x in (a, np.asfortranarray(a), _variant(a, "strided", True), _variant(a, "reversed", False),
              np.ascontiguousarray(a.T).T, _variant(a, "C", True)):
        np.testing.assert_allclose(ops.gemm(x, b, config=cfg), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    [dispatcher] = {k[0] for k in runner._specs if k[0].__name__.startswith("gemm_kernel") and "_bm32_bn16_bk16" in k[0].__name__}
    assert sorted(sig[5].layout for sig in dispatcher.overloads) == ["A", "C"]


@tc.kernel
def _add_one(X, Y, B: tc.constexpr):
    p = tc.program_id(0)
    tc.store(Y, (p * B,), tc.load(X, (p * B,), (B,)) + 1)


def test_a_read_only_output_is_refused_by_name():
    x = np.arange(8, dtype=np.float32)
    y = np.zeros(8, np.float32)
    y.flags.writeable = False
    with pytest.raises(tc.InputError, match="Y is read-only"):
        _add_one[(2,)](x, y, B=4)
    assert not y.any()
    y = np.zeros(8, np.float32)
    _add_one[(2,)](x[::-1].copy()[::-1], y, B=4)       # a read-only or strided input is fine
    assert np.array_equal(y, x + 1)


def test_repeated_calls_reuse_the_resolved_launch_on_new_data():
    rng = np.random.default_rng(1)
    for bias, act in ((None, None), (np.ones(12, np.float32), "relu"), (None, None)):
        for _ in range(3):                             # a fresh pair each time, same kind of call
            a, b = rng.standard_normal((9, 5)).astype(np.float32), rng.standard_normal((5, 12)).astype(np.float32)
            want = a.astype(np.float64) @ b * 0.5 + (0 if bias is None else 1.0)
            want = np.maximum(want, 0) if act else want
            np.testing.assert_allclose(ops.gemm(a, b, bias=bias, activation=act, alpha=0.5, config=CFG), want,
                                       rtol=1e-4, atol=1e-4)


def test_compile_notice_prints_once_a_compile_runs_long(monkeypatch, capsys):
    monkeypatch.setattr(notice, "AFTER", 0.05)
    monkeypatch.delenv("TILEC_QUIET", raising=False)
    slow = notice.CompileNotice("gemm for float32", "numba")
    slow.start()
    time.sleep(0.5)
    slow.stop()
    fast = notice.CompileNotice("gemv for float16", "numba")
    fast.start()
    fast.stop()
    time.sleep(0.2)
    err = capsys.readouterr().err
    assert err == "tilec: compiling gemm for float32 on numba (first use, cached)\n"
    monkeypatch.setenv("TILEC_QUIET", "1")
    quiet = notice.CompileNotice("gemm for float32", "numba")
    quiet.start()
    time.sleep(0.3)
    quiet.stop()
    assert capsys.readouterr().err == ""


def test_a_real_compile_is_announced_and_a_cache_load_is_not(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(notice, "AFTER", 0.0)
    monkeypatch.delenv("TILEC_QUIET", raising=False)
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path))
    x = np.arange(6, dtype=np.float32)
    y = np.zeros(6, np.float32)
    _add_one[(2,)](x, y, B=3)
    time.sleep(0.1)
    assert "tilec: compiling _add_one for float32 on numba (first use, cached)" in capsys.readouterr().err
    # another process, same cache: Numba loads the machine code, nothing is said
    script = ("import numpy as np, tilec.runtime.notice as n; n.AFTER = 0.0\n"
              "import tests.test_startup as t\n"
              "y = np.zeros(6, np.float32); t._add_one[(2,)](np.arange(6, dtype=np.float32), y, B=3)\n"
              "assert y[5] == 6\n")
    env = dict(os.environ, TILEC_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "compiling" not in out.stderr


def _python(script: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", script], env=full, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_omp_wait_policy_is_passive_unless_the_user_chose():
    script = "import os, tilec; print(os.environ['OMP_WAIT_POLICY'])"
    assert _python(script).stdout.strip() == "PASSIVE"
    assert _python(script, OMP_WAIT_POLICY="ACTIVE").stdout.strip() == "ACTIVE"


def test_small_launches_stay_on_the_calling_thread_and_the_pool_starts_passive():
    script = """
import numpy as np, numba, ops
a = np.ones((64, 64), np.float32)
ops.gemm(a, a)                       # 48 KB of arrays: no thread pool
try:
    numba.threading_layer()
    started = True
except ValueError:
    started = False
b = np.ones((300, 300), np.float32)
assert np.allclose(ops.gemm(b, b), 300)
print(started, numba.threading_layer())
"""
    out = _python(script, OMP_DISPLAY_ENV="TRUE")
    assert out.returncode == 0, out.stderr
    started, layer = out.stdout.split()
    assert started == "False"
    if layer != "omp":
        pytest.skip(f"Numba's threading layer is {layer}, not OpenMP")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in out.stderr


def test_warmup_fills_the_cache_for_a_later_process(tmp_path):
    env = dict(TILEC_CACHE_DIR=str(tmp_path), TILEC_QUIET="1")
    out = _python("from autotune.cli_main import main; raise SystemExit(main(['warmup', 'gemm', '--shape', 'M=40,N=24,K=8']))",
                  **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gemm float32 M=40,N=24,K=8: ready"), out.stdout
    probe = """
import json, numpy as np, ops
from tilec.runtime import launch
a = np.ones((40, 8), np.float32); b = np.ones((8, 24), np.float32)
assert np.allclose(ops.gemm(a, b), 8)
module = __import__("sys").modules[next(iter(launch._compiled.values())).info["module"]]
d = [v for k, v in vars(module).items() if k.startswith("gemm_kernel")][0]
print(json.dumps({"hits": sum(d.stats.cache_hits.values()), "misses": sum(d.stats.cache_misses.values())}))
"""
    again = _python(probe, **env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"hits": 1, "misses": 0}
    bad = _python("from autotune.cli_main import main; raise SystemExit(main(['warmup', 'nope']))", **env)
    assert bad.returncode == 2 and "op(s) ['nope'] unknown" in bad.stderr


_WARM_PROBE = """
import json, os, sys, numpy as np
import tests.test_startup as t
from pathlib import Path
from tilec.runtime import launch
manifests = {p: p.stat().st_mtime_ns for p in Path(os.environ["TILEC_CACHE_DIR"]).rglob("*.manifest.json")}
y = np.zeros(6, np.float32); t._add_one[(2,)](np.arange(6, dtype=np.float32), y, B=3)
module = sys.modules[next(iter(launch._compiled.values())).info["module"]]
d = [v for k, v in vars(module).items() if k.startswith("_add_one")][0]
print(json.dumps({"ok": bool(y[5] == 6), "hits": sum(d.stats.cache_hits.values()),
                  "misses": sum(d.stats.cache_misses.values()),
                  "registries": sorted(m for m in ("numba.np.npyimpl", "numba.np.arraymath", "numba.typed.typeddict")
                                       if m in sys.modules),
                  "manifests_rewritten": sum(p.stat().st_mtime_ns != m for p, m in manifests.items())}))
"""


def test_a_warm_process_loads_machine_code_without_numbas_compile_machinery(tmp_path):
    """A cache hit runs no Numba compile step: its target context is not refreshed (that
    imports every lowering registry: NumPy's, typed containers', ...), and an intact
    manifest is not rewritten."""
    env = dict(TILEC_CACHE_DIR=str(tmp_path), TILEC_QUIET="1")
    cold = _python(_WARM_PROBE, **env)
    assert cold.returncode == 0, cold.stderr
    first = json.loads(cold.stdout.strip().splitlines()[-1])
    assert first["ok"] and first["misses"] == 1 and first["registries"], first   # a compile loads them all
    warm = _python(_WARM_PROBE, **env)
    assert warm.returncode == 0, warm.stderr
    assert json.loads(warm.stdout.strip().splitlines()[-1]) == {
        "ok": True, "hits": 1, "misses": 0, "registries": [], "manifests_rewritten": 0}


def test_kernels_read_their_source_on_first_use_not_at_import():
    script = """
import sys, tilec
k = sys.modules["tilec.kernel"]
calls = []
real = k.parse_function
k.parse_function = lambda fn: calls.append(fn.__name__) or real(fn)
import ops, sys
at_import = len(calls)
kernel = sys.modules["ops.gemm"].gemm_kernel
print(at_import, kernel.runtime_names, kernel.constexpr_defaults.get("ACT", "-"), calls)
"""
    out = _python(script)
    assert out.returncode == 0, out.stderr
    at_import, rest = out.stdout.split(" ", 1)
    assert at_import == "0"
    assert rest.strip().endswith("['gemm_kernel']"), rest
    assert "['A', 'B', 'C', 'bias', 'alpha']" in rest


_KERNEL_MODULE = '''
import tilec as tc
SCALE = {scale}


@tc.kernel
def scale_kernel(X, Y, B: tc.constexpr):
    p = tc.program_id(0)
    tc.store(Y, (p * B,), tc.load(X, (p * B,), (B,)) * SCALE)
'''

_INDEX_PROBE = """
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from tilec.backends.numba import runner
renders = []
real = runner.render
runner.render = lambda fn, options: renders.append(fn.name) or real(fn, options)
import scaled
y = np.zeros(6, np.float32)
scaled.scale_kernel[(2,)](np.arange(6, dtype=np.float32), y, B=3)
print(json.dumps({"y5": float(y[5]), "renders": len(renders), "front_end_runs": len(scaled.scale_kernel._ir)}))
"""


def test_a_warm_process_skips_front_end_and_renderer_until_the_kernel_changes(tmp_path):
    """The index from a kernel's fingerprint and specialization to its generated module: a
    second process runs neither the front end nor the renderer; an edit of the kernel's
    module (here a constant it reads) or a broken index entry takes the full path again."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "scaled.py").write_text(_KERNEL_MODULE.format(scale=2.0))
    env = dict(TILEC_CACHE_DIR=str(tmp_path / "cache"), TILEC_QUIET="1")

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", _INDEX_PROBE, str(src)], capture_output=True, text=True,
                             timeout=600, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run() == {"y5": 10.0, "renders": 1, "front_end_runs": 1}
    assert run() == {"y5": 10.0, "renders": 0, "front_end_runs": 0}
    (src / "scaled.py").write_text(_KERNEL_MODULE.format(scale=3.0))
    assert run() == {"y5": 15.0, "renders": 1, "front_end_runs": 1}
    assert run() == {"y5": 15.0, "renders": 0, "front_end_runs": 0}
    for entry in (tmp_path / "cache" / "numba" / "index").glob("*.json"):
        entry.write_text('{"key": "x"')
    assert run() == {"y5": 15.0, "renders": 1, "front_end_runs": 1}


def test_fingerprints_tell_apart_kernels_of_one_name_and_refuse_what_they_cannot_vouch_for(tmp_path, monkeypatch):
    (tmp_path / "twice.py").write_text('''
import tilec as tc


@tc.kernel
def k(X, B: tc.constexpr):
    tc.store(X, (0,), tc.load(X, (0,), (B,)) + 1)


first = k


@tc.kernel
def k(X, B: tc.constexpr):
    tc.store(X, (0,), tc.load(X, (0,), (B,)) + 2)


def made(table):
    @tc.kernel
    def inner(X, B: tc.constexpr):
        tc.store(X, (0,), tc.load(X, (0,), (B,)) * table[0])
    return inner
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    import twice
    assert twice.first.fingerprint() and twice.k.fingerprint()
    assert twice.first.fingerprint() != twice.k.fingerprint()
    assert twice.made((2.0,)).fingerprint() != twice.made((3.0,)).fingerprint()   # closures over values
    assert twice.made([2.0]).fingerprint() is None                                   # over a mutable list


_BLAS_PROBE = """
import sys, numpy as np, ops
from tilec.backends.numba import blas
{setup}
a = np.arange(12, dtype=np.float32).reshape(3, 4)
assert np.allclose(ops.gemm(a, a.T), a @ a.T) and np.allclose(ops.gemv(a, a[0]), a @ a[0])
print("scipy.linalg" in sys.modules)
import scipy.linalg.cython_blas, scipy.linalg.blas    # a later import of the package works as usual
assert "sgemm" in scipy.linalg.cython_blas.__pyx_capi__
assert np.allclose(scipy.linalg.blas.sgemm(1.0, a, a.T), a @ a.T)
"""


def test_warm_kernels_reach_blas_without_the_scipy_linalg_package(tmp_path):
    """A warm process gets the BLAS pointers without scipy.linalg's package init, leaves
    scipy importable as usual, and falls back to the plain import when the extension is not
    where it looks."""
    cache = str(tmp_path)
    warm = _python(_BLAS_PROBE.format(setup=""), TILEC_CACHE_DIR=cache)      # compiles (imports scipy)
    assert warm.returncode == 0, warm.stderr
    again = _python(_BLAS_PROBE.format(setup=""), TILEC_CACHE_DIR=cache)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["False"]
    moved = "from pathlib import Path\nblas._scipy_home = lambda: Path('/nonexistent')"
    fallback = _python(_BLAS_PROBE.format(setup=moved), TILEC_CACHE_DIR=cache)
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.split() == ["True"]
