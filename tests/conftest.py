"""Shared test setup: a private kernel cache per test session and a hypothesis profile."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Compiled kernels go to a fresh directory unless the caller chose one (CI keeps it per run).
os.environ.setdefault("TILEC_CACHE_DIR", tempfile.mkdtemp(prefix="tilec-test-cache-"))

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          print_blob=True)
settings.load_profile("ci")

SHARED = next((p for p in (Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared"))
               if p.is_dir()), None)


@pytest.fixture
def shared_dir() -> Path:
    if SHARED is None:
        pytest.skip("../shared (development datasets) is not present")
    return SHARED
