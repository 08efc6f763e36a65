"""Every script in examples/ runs (small sizes) and says what it should."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "quantized_mlp.py": (["--hidden", "256", "--tokens", "2"], "ms/token"),
    "attention_block.py": (["--prompt", "70", "--heads", "4", "--kv-heads", "2", "--dim", "32"], "relative difference"),
    "tune_for_profile.py": (["--trials", "8"], "bound by"),
    "train_attention.py": (["--steps", "30"], "loss curves match"),
}
NEEDS = {"train_attention.py": "torch"}      # optional packages an example imports


def test_every_example_is_covered():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script):
    args, expect = CASES[script]
    need = NEEDS.get(script)
    if need and importlib.util.find_spec(need) is None:
        pytest.skip(f"{script} needs {need}, which is optional: pip install {need}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout
