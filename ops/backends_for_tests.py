"""Backends the op tests run on: numba always; triton in its CPU interpreter and cuda in the C++
emulator when they are installed (these tests feed NumPy arrays, which both accept); a backend
that cannot run here is listed, skipped with the reason."""
from __future__ import annotations

import pytest

from tilec import backends
from tilec.errors import TilecError


def _param(name: str):
    try:
        be = backends.get(name)
        reason = be.missing()
    except TilecError as e:
        reason = str(e)
    if reason is None and not be.accepts("cpu"):
        reason = f"{name} needs its device arrays; these tests feed NumPy arrays"
    marks = [pytest.mark.skip(reason=f"{name} backend unavailable: {reason}")] if reason else []
    return pytest.param(name, marks=marks, id=name)


BACKENDS = [_param(n) for n in backends.names()]
