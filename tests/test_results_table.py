"""bench/RESULTS.md is generated from bench/results/*.json and kept in step with them."""
from __future__ import annotations

import json

from bench import results_table


def test_records_become_tables(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({
        "machine": {"cpus": 2, "blas": ["openblas"]},
        "cases": [{"M": 1, "rows": {"numpy": {"ms": 2.0}, "tilec": {"ms": 1.0}}, "ratio": 2.0},
                  {"M": 7, "rows": {"numpy": {"ms": 4.0}}, "ratio": 0.5}]}))
    (tmp_path / "a.json").write_text(json.dumps({"cold_s": 1.25, "warm": {"s": 0.5}}))
    text = results_table.render(tmp_path)
    assert text.index("## a") < text.index("## b")                  # files in name order
    assert "Conditions: cpus 2" in text
    lines = text.splitlines()
    header = lines.index("| M | ratio | rows | ms |")
    assert lines[header + 2:header + 5] == ["| 1 | 2 | numpy | 2 |", "| 1 | 2 | tilec | 1 |",
                                            "| 7 | 0.5 | numpy | 4 |"]
    assert "| cold_s | warm.s |" in text and "| 1.25 | 0.5 |" in text


def test_wide_records_name_the_columns_left_out(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"rows": [{f"c{i}": i for i in range(20)}]}))
    text = results_table.render(tmp_path)
    assert "6 more columns" in text and "c19" in text


def test_results_md_is_up_to_date():
    assert results_table.main(["--check"]) == 0, "run: python -m bench.results_table"
