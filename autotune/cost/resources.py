"""Measured launch resources a record can carry, overriding the workload builders' estimates:
registers per thread (ptxas -v, cuobjdump --dump-resource-usage, a dataset's column),
shared memory per block (bytes) and threads per block. The estimates are fitted to one
compiler's kernels; a record from another source knows better.

Record fields (``Record.extra``, or a Kernel Tuner cache entry's fields of these names):
``registers`` (or ``num_regs``), ``shared_bytes`` (or ``shared_mem_bytes``), ``threads``.
"""
from __future__ import annotations

from dataclasses import replace

from tilec.errors import TilecError

FIELDS = {"registers_per_thread": ("registers", "num_regs"),
          "tile_bytes_local": ("shared_bytes", "shared_mem_bytes"),
          "threads_per_program": ("threads",)}


def measured(extra: dict) -> dict:
    """The Workload fields a record's ``extra`` measures: {field: positive int}."""
    out = {}
    for field, names in FIELDS.items():
        for n in names:
            v = extra.get(n)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
                raise TilecError(f"measured {n} must be a non-negative integer, got {v!r}")
            out[field] = int(v)
            break
    return out


def apply(w, extra: dict):
    """``w`` with the measured resources in place of the estimates."""
    fields = measured(extra or {})
    return replace(w, **fields) if fields else w
