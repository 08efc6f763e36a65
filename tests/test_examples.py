"""Every script in examples/ runs (small sizes) and says what it should, and so do the README's
NumPy snippets."""
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


def _readme_snippet(section: str) -> str:
    import re
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(section):], re.S).group(1)


def test_readme_snippets_run(tmp_path):
    """The README's "Calling ops" block, then its "Writing kernels" block on the arrays it made,
    as a new user pastes them into a file (kernels need their source on disk); the torch block
    needs a model of the user's."""
    script = tmp_path / "readme_snippets.py"
    script.write_text(_readme_snippet("## Calling ops") + _readme_snippet("## Writing kernels") + (
        "np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)\n"
        "assert y1.shape == (4, 300) and np.isfinite(o1).all()\nprint('snippets ran')\n"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "snippets ran" in out.stdout
