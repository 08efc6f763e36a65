"""The benchmarks' record of how much CPU time the hypervisor took during a run."""
from __future__ import annotations

import sys

import pytest

from bench.timing import cpu_times, steal_since


def test_steal_is_the_share_of_steal_ticks_among_all_ticks():
    before = [100, 0, 50, 1000, 5, 0, 1, 20, 0, 0]
    after = [190, 0, 60, 1080, 5, 0, 1, 40, 0, 0]        # 90 user, 10 system, 80 idle, 20 steal
    assert steal_since(before, after) == pytest.approx(20 / 200)
    assert steal_since(before, before) == 0.0
    assert steal_since(None, after) is None and steal_since(before[:5], after[:5]) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_this_machine_reports_a_share_between_0_and_1():
    before = cpu_times()
    sum(range(200_000))
    share = steal_since(before)
    assert before is not None and 0.0 <= share <= 1.0
