"""How Numba's thread pool waits between launches, beside other libraries' pools.

Numba's OpenMP layer and torch's ATen/MKL each run an OpenMP runtime of their own (two copies
of libgomp in one process), each with a thread per core. With OpenMP's default wait, a team's
threads keep spinning after a parallel region; on a loaded 2-core machine the next region of
the *other* pool then waits for cores held by spinners, and a 256^3 torch matmul took
~0.1 s instead of <1 ms (and a small tilec launch after a torch op 5-7 ms). With the passive
policy idle threads sleep at once: a region pays a futex wake (tens of us) instead.

So Numba's pool starts with ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy. The
variable is set only while the pool starts (OpenMP reads it once, when its runtime loads) and
then removed, so torch's own runtime keeps whatever the user chose; to give torch the same,
set ``OMP_WAIT_POLICY=PASSIVE`` before importing it. Small launches do not start the pool at
all (the runner runs them on the calling thread).
"""
from __future__ import annotations

import functools
import os

import numba

POLICY = "PASSIVE"


@functools.cache
def start_pool() -> int:
    """Start Numba's threads with the passive wait (unless ``OMP_WAIT_POLICY`` is set);
    returns the number of threads."""
    chosen = os.environ.get("OMP_WAIT_POLICY")
    if chosen is None:
        os.environ["OMP_WAIT_POLICY"] = POLICY
    try:
        return numba.get_num_threads()        # loads the threading layer; OpenMP reads its settings
    finally:
        if chosen is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
