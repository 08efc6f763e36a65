"""CLTune's ``gemm_fast`` OpenCL SGEMM (the UCI "SGEMM GPU kernel performance" data, GTX 680)
as a workload and a kernel description, counted from the kernel's own index arithmetic.

Parameters: work-group tile MWG x NWG (KWG deep), MDIMC x NDIMC threads, each keeping an
MWI x NWI register tile (MWI = MWG/MDIMC, NWI = NWG/NDIMC); A and B either staged in local
memory (SA, SB; loaded by an MDIMA x KDIMA / NDIMB x KDIMB thread layout) or read by every
thread straight from global memory; vector widths VWM, VWN; STRM/STRN choose strided
(consecutive threads take consecutive vectors) or blocked per-thread access; KWI unrolls
the k loop. A is stored k-major ([k*M + m]), B likewise ([k*N + n]).

For one warp the index arithmetic gives, per k step, how many 32-bank shared-memory
wavefronts its loads take (bank conflicts included; 4-byte banks) and how many 32-byte
sectors its global loads touch (coalescing included); the per-k-tile copies into local
memory are counted the same way. No figure here comes from the measured runtimes.
"""
from __future__ import annotations

import functools

WARP = 32
BANKS = 32
SECTOR_WORDS = 8                   # 32-byte sectors of 4-byte words
WAVEFRONT_BYTES = 4 * BANKS        # one wavefront: one word from each bank
REGISTER_OVERHEAD = 16             # [E] indices, pointers, loop counters beside the tiles


def _wavefronts(words: tuple) -> int:
    """Shared-memory wavefronts for one warp access: per bank, the distinct words it must serve
    (the same word for several threads is a broadcast)."""
    banks: dict[int, set] = {}
    for per_thread in words:
        for a in per_thread:
            banks.setdefault(a % BANKS, set()).add(a)
    return max(len(v) for v in banks.values())


def _sectors(words: tuple) -> int:
    return len({a // SECTOR_WORDS for per_thread in words for a in per_thread})


@functools.lru_cache(maxsize=None)
def _private(mdimc: int, ndimc: int, wi: int, vw: int, strided: int, along_m: bool) -> tuple[int, int, int]:
    lanes = [(t % mdimc, t // mdimc) for t in range(WARP)]
    n = max(1, wi // vw)
    dim = mdimc if along_m else ndimc
    wf = sec = 0
    for i in range(n):
        words = []
        for l0, l1 in lanes:
            lid = l0 if along_m else l1
            g = i + lid * n if strided == 0 else lid + i * dim
            words.append(tuple(g * vw + j for j in range(vw)))
        wf += _wavefronts(tuple(words))
        sec += _sectors(tuple(words))
    return n, wf, sec


@functools.lru_cache(maxsize=None)
def tile_copy(threads: int, dima: int, wg: int, kwg: int, vw: int, strided: int, row: int) -> tuple[int, int, int]:
    """One k tile (KWG x WG) copied from global into local memory by all warps of a work-group:
    (load instructions per thread, global sectors, shared-memory store wavefronts)."""
    kdima = threads // dima
    wa, kwa = wg // dima, max(1, kwg // kdima)
    per_thread = max(1, wa // vw) * kwa
    sec = wf = 0
    for warp in range(max(1, threads // WARP)):
        tids = range(warp * WARP, min(threads, (warp + 1) * WARP))
        for mia in range(max(1, wa // vw)):
            for kia in range(kwa):
                glob, loc = [], []
                for tid in tids:
                    la0, la1 = tid % dima, tid // dima
                    mg = mia + la0 * (wa // vw) if strided == 0 else la0 + mia * dima
                    kg = kia + la1 * kwa
                    glob.append(tuple((kg * (row // vw) + mg) * vw + j for j in range(vw)))
                    loc.append(tuple((kg * (wg // vw) + mg) * vw + j for j in range(vw)))
                sec += _sectors(tuple(glob))
                wf += _wavefronts(tuple(loc))
    return per_thread, sec, wf


def _parts(shape: dict, c: dict) -> dict:
    M, N, K = (int(shape[k]) for k in "MNK")
    mwg, nwg, kwg = int(c["MWG"]), int(c["NWG"]), int(c["KWG"])
    mdimc, ndimc = int(c["MDIMC"]), int(c["NDIMC"])
    sa, sb = int(c["SA"]), int(c["SB"])
    vwm, vwn = int(c["VWM"]), int(c["VWN"])
    threads = mdimc * ndimc
    mwi, nwi = mwg // mdimc, nwg // ndimc
    na, wfa, seca = _private(mdimc, ndimc, mwi, vwm, int(c["STRM"]), True)
    nb, wfb, secb = _private(mdimc, ndimc, nwi, vwn, int(c["STRN"]), False)
    gm, gn = cdiv(M, mwg), cdiv(N, nwg)
    warp_steps = gm * gn * max(1, threads // WARP) * K          # (warp, k) pairs of the launch
    tiles = gm * gn * cdiv(K, kwg)                           # (work-group, k tile) pairs
    wavefronts = warp_steps * (wfa * sa + wfb * sb)
    sectors = warp_steps * (seca * (1 - sa) + secb * (1 - sb))
    in_flight = (na * (1 - sa) + nb * (1 - sb)) * int(c["KWI"])
    if sa:
        per, s, w = tile_copy(threads, int(c["MDIMA"]), mwg, kwg, vwm, int(c["STRM"]), M)
        sectors += tiles * s
        wavefronts += tiles * w
        in_flight += per
    if sb:
        per, s, w = tile_copy(threads, int(c["NDIMB"]), nwg, kwg, vwn, int(c["STRN"]), N)
        sectors += tiles * s
        wavefronts += tiles * w
        in_flight += per
    return {"M": M, "N": N, "K": K, "gm": gm, "gn": gn, "threads": threads, "mwi": mwi, "nwi": nwi,
            "loads": na + nb, "wavefronts": wavefronts, "sectors": sectors, "in_flight": in_flight,
            "local": (sa * kwg * mwg + sb * kwg * nwg) * 4}


def description(shape: dict, c: dict) -> dict:
    """CLTune gemm_fast as a workload description (a record's ``workload`` field): the
    launch's flops, its bytes at each level as the warps' accesses move them (shared-memory
    wavefronts, global sectors, the panels re-read from DRAM), the work-group's threads, local
    memory and registers (the MWI x NWI accumulators, the MWI + NWI operands and the overhead;
    more than the limit spills, which the model prices)."""
    q = _parts(shape, c)
    M, N, K, gm, gn = q["M"], q["N"], q["K"], q["gm"], q["gn"]
    e = 4
    regs = q["mwi"] * q["nwi"] + q["mwi"] + q["nwi"] + REGISTER_OVERHEAD
    return dict(flops=2.0 * M * N * K, bytes=3.0 * M * N * e, grid=(gm, gn), tile_bytes_local=q["local"],
                threads_per_program=q["threads"], registers_per_thread=regs,
                traffic={"dram": (M * K * gn + K * N * gm) * e + M * N * e,
                         "L2": q["sectors"] * SECTOR_WORDS * 4.0 + M * N * e,
                         "local": q["wavefronts"] * float(WAVEFRONT_BYTES)},
                inner_iterations=cdiv(K, int(c["KWG"])) if (c["SA"] or c["SB"]) else 1, dot_shape=None)


def describe(shape: dict, dtype: str, c: dict) -> dict:
    """The register tile, operand loads per k step, unroll and loads in flight of a warp."""
    q = _parts(shape, c)
    return {"thread_tile": (q["mwi"], q["nwi"]), "loads_per_step": float(q["loads"]),
            "unroll": int(c["KWI"]), "loads_in_flight": float(q["in_flight"])}


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))
