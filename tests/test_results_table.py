"""bench/RESULTS.md is generated from bench/results/*.json and kept up to date."""
from __future__ import annotations

import json

from bench import results_table


def test_records_become_tables_with_flattened_columns(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps({
        "machine": {"cpus": 2, "blas": ["openblas"]},
        "cold_s": 2.5,
        "cases": [{"n": 1, "times": {"tilec": 0.001234, "numpy": 2.0}}, {"n": 7, "extra": True}]}))
    text = results_table.render(tmp_path)
    assert "## demo" in text and "### cases" in text
    assert "| n | times.tilec | times.numpy | extra |" in text
    assert "| 1 | 0.00123 | 2 |  |" in text and "| 7 |  |  | True |" in text
    assert "| cold_s |" in text and "cpus=2; blas=openblas" in text


def test_the_committed_results_md_is_current():
    assert results_table.main(["--check"]) == 0, "run: python -m bench.results_table"
