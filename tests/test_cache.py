"""The compiled-kernel cache: a second process reuses it; damaged entries are rebuilt."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One process: launch gemm once and report where the artefact lives, how long the launch
# took and whether Numba served the machine code from its disk cache.
SCRIPT = r"""
import json, sys, time, warnings
import numpy as np
import ops
from tilec.runtime import launch
a = np.arange(12, dtype=np.float32).reshape(3, 4); b = np.ones((4, 5), np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    t = time.perf_counter()
    c = ops.gemm(a, b, config={"BM": 16, "BN": 16, "BK": 16})
    elapsed = time.perf_counter() - t
compiled = next(iter(launch._compiled.values()))
import importlib
module = sys.modules[compiled.info["module"]]
dispatcher = [v for k, v in vars(module).items() if k.startswith("gemm_kernel")][0]
print(json.dumps({"ok": bool(np.allclose(c, a @ b)), "seconds": elapsed, "path": compiled.info["path"],
                  "hits": sum(dispatcher.stats.cache_hits.values()),
                  "misses": sum(dispatcher.stats.cache_misses.values()),
                  "warnings": [str(w.message) for w in caught]}))
"""


# Makes a directory behave like a read-only mount for this process: every call that would
# create, change or remove something under it fails with EROFS (tests often run as root, for
# whom chmod does not stop writes). Reads go through untouched.
READ_ONLY = r"""
import builtins, errno, io, os
_ro = os.path.realpath(os.environ["READ_ONLY_DIR"])
def _under(p):
    try:
        return os.path.realpath(os.fsdecode(p)).startswith(_ro)
    except TypeError:
        return False
def _deny(p):
    raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(p))
def _guard(real, writes):
    def wrapped(p, *a, **k):
        if _under(p) and writes(*a, **k):
            _deny(p)
        return real(p, *a, **k)
    return wrapped
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
os.open = _guard(os.open, lambda flags, *a, **k: flags & _W)
builtins.open = io.open = _guard(io.open, lambda mode="r", *a, **k: set(mode) & set("wax+"))
for _name in ("mkdir", "unlink", "remove", "rmdir", "utime", "chmod"):
    setattr(os, _name, _guard(getattr(os, _name), lambda *a, **k: True))
for _name in ("replace", "rename"):
    setattr(os, _name, (lambda real: lambda s, d, *a, **k: _deny(d) if _under(d) or _under(s) else real(s, d, *a, **k))
            (getattr(os, _name)))
"""


def _run(cache: Path, read_only: bool = False, script: str = SCRIPT) -> dict:
    env = dict(os.environ, TILEC_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), READ_ONLY_DIR=str(cache))
    # import numba and friends first so the timing below is the kernel's own load
    preamble = "import numba, numpy, ops\n" + (READ_ONLY if read_only else "")
    out = subprocess.run([sys.executable, "-c", preamble + script], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> tuple[Path, dict]:
    cache = tmp_path_factory.mktemp("cache")
    return cache, _run(cache)


def test_cold_compile_then_warm_reuse(warm_cache):
    cache, cold = warm_cache
    assert cold["ok"] and cold["misses"] == 1 and cold["hits"] == 0
    warm = _run(cache)
    assert warm["ok"] and warm["hits"] == 1 and warm["misses"] == 0, warm
    # (how long the warm start takes is a benchmark, not a test: python -m bench startup)
    assert not warm["warnings"]


def test_damaged_machine_code_is_detected_and_rebuilt(warm_cache):
    cache, _ = warm_cache
    nbc = sorted((cache / "numba" / "__pycache__").glob("gemm_kernel*.nbc"))
    assert nbc, "numba wrote no cache file"
    nbc[0].write_bytes(b"\x00garbage" * 10)
    again = _run(cache)
    assert again["ok"] and again["misses"] == 1, again
    assert any("damaged cache files" in w for w in again["warnings"]), again["warnings"]
    assert _run(cache)["hits"] == 1  # and the rebuilt entry serves the next process


def test_edited_generated_source_is_rewritten(warm_cache):
    cache, first = warm_cache
    path = Path(first["path"])
    path.write_text(path.read_text() + "\nimport os; os.environ['TILEC_PWNED'] = '1'\n")
    again = _run(cache)
    assert again["ok"]
    assert any("did not match its kernel" in w for w in again["warnings"])
    assert "TILEC_PWNED" not in path.read_text()


def test_corrupt_manifest_is_rebuilt(warm_cache):
    cache, first = warm_cache
    manifest = Path(first["path"][:-3] + ".manifest.json")
    manifest.write_text("{not json")
    again = _run(cache)
    assert again["ok"]
    assert json.loads(manifest.read_text())["files"]


def test_a_repeated_launch_reuses_its_specialization_and_a_new_dtype_gets_its_own(monkeypatch):
    """The in-memory launch memo: the same kernel, config and argument dtypes/ranks skip
    specialization; another dtype or rank is specialized anew and computes right."""
    import numpy as np

    import tilec as tc
    from tilec.runtime import launch

    @tc.kernel
    def add_one(X, Y, B: tc.constexpr):
        tc.store(Y, (tc.program_id(0) * B,), tc.load(X, (tc.program_id(0) * B,), (B,)) + 1)

    calls = []
    real = launch.compile_kernel
    monkeypatch.setattr(launch, "compile_kernel", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    for dtype, repeat in ((np.float32, 3), (np.int32, 2), (np.float32, 1)):
        for _ in range(repeat):
            x = np.arange(10, dtype=dtype)
            y = np.zeros(10, dtype)
            add_one[(3,)](x, y, B=4)
            assert y.dtype == dtype and np.array_equal(y, x + 1)
    assert len(calls) == 2                       # one per dtype, none for the repeats
    y = np.zeros(10, np.float32)
    add_one[(2,)](np.arange(10, dtype=np.float32), y, B=8)   # another config: specialized again
    assert len(calls) == 3 and np.array_equal(y, np.arange(10) + 1)


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def test_read_only_cache_serves_its_kernels_and_compiles_new_ones_privately(warm_cache, tmp_path):
    """A warm cache on a read-only mount (a container image): its kernels load from it
    without compiling, a kernel it lacks compiles elsewhere, one warning names the directory
    and TILEC_CACHE_DIR, and nothing under it changes."""
    cache, _ = warm_cache
    _run(cache)                                   # (earlier tests damaged entries: settle them)
    copy = tmp_path / "ro-cache"
    shutil.copytree(cache, copy)
    if os.geteuid() != 0:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    before = _files(copy)
    try:
        warm = _run(copy, read_only=True)
        assert warm["ok"] and warm["hits"] == 1 and warm["misses"] == 0, warm
        cache_warnings = [w for w in warm["warnings"] if "kernel cache" in w]
        assert len(cache_warnings) == 1 and str(copy) in cache_warnings[0] and "TILEC_CACHE_DIR" in cache_warnings[0]
        assert not Path(warm["path"]).is_relative_to(copy)
        other = _run(copy, read_only=True, script=SCRIPT.replace('"BM": 16', '"BM": 32'))
        assert other["ok"] and other["misses"] == 1, other
        assert _files(copy) == before
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_cache_dir_naming_a_file_is_a_clear_error(tmp_path):
    """TILEC_CACHE_DIR naming a file: a TilecError naming it, from ops and from `tilec tune`
    (a raw FileExistsError before)."""
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    env = dict(os.environ, TILEC_CACHE_DIR=str(bad), PYTHONPATH=str(ROOT))
    env.pop("TILEC_TUNING_DB", None)
    op = subprocess.run([sys.executable, "-c", "import numpy as np, ops, tilec\n"
                         "try:\n    ops.gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))\n"
                         "except tilec.TilecError as e:\n    print('TilecError:', e)\n"],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert op.returncode == 0 and "TilecError" in op.stdout and str(bad) in op.stdout, op.stderr
    assert "TILEC_CACHE_DIR" in op.stdout
    tune = subprocess.run([sys.executable, "-m", "tilec", "tune", "gemm", "--shape", "8x8x8", "--trials", "1",
                           "--quiet"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tune.returncode == 2 and "Traceback" not in tune.stderr, tune.stderr
    assert str(bad) in tune.stderr and "tilec: error:" in tune.stderr
