"""The compiled-kernel cache: a second process reuses it; damaged entries are rebuilt."""
from __future__ import annotations

import json
import os
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


def _run(cache: Path) -> dict:
    env = dict(os.environ, TILEC_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    # import numba and friends first so the timing below is the kernel's own load
    out = subprocess.run([sys.executable, "-c", "import numba, numpy, ops\n" + SCRIPT], env=env, cwd=ROOT,
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
