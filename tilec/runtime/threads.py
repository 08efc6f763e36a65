"""How OpenMP thread pools wait between parallel regions, beside other libraries' pools.

Numba's OpenMP layer and torch's ATen/MKL each run an OpenMP runtime of their own (two copies
of libgomp in one process), each with a thread per core. With OpenMP's default wait a team's
threads keep spinning after a region; on a loaded 2-core machine the other pool's next region
then waits for cores held by spinners: a 256^3 torch matmul took ~0.1 s instead of <1 ms,
and a tilec launch after a torch op 5-30 ms. With the passive policy idle threads sleep at
once, and a region pays a futex wake (tens of us) instead.

So ``import tilec`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy. OpenMP
reads it once, when a runtime loads: Numba's pool always starts after it (at tilec's first
parallel launch); torch's runtime gets it when torch is imported after tilec (import torch
first and its pool keeps OpenMP's default; set the variable yourself to choose for both).
Small launches never wake Numba's pool (the Numba runner runs them on the calling thread).
"""
from __future__ import annotations

import os

POLICY = "PASSIVE"


def default_wait_policy() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", POLICY)
