"""A one-line notice on stderr when a compile runs long, so a first call that takes seconds
says why: ``tilec: compiling gemm for float32 on numba (first use, cached)``. Printed once a
compile has taken ``AFTER`` seconds; ``TILEC_QUIET=1`` silences it."""
from __future__ import annotations

import os
import sys
import threading

AFTER = 1.0


def quiet() -> bool:
    return os.environ.get("TILEC_QUIET", "").strip().lower() not in ("", "0", "false", "no")


class CompileNotice:
    """``start()`` when a compile of ``what`` (e.g. "gemm for float32") begins, ``stop()`` when
    it ends: a timer prints the notice if it is still running after ``AFTER`` seconds."""

    def __init__(self, what: str, backend: str):
        self.message = f"tilec: compiling {what} on {backend} (first use, cached)"
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is None and not quiet():
            self._timer = threading.Timer(AFTER, lambda: print(self.message, file=sys.stderr, flush=True))
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
