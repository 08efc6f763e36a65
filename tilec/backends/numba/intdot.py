"""Integer dot products for the Numba backend: ``tc.dot`` on 8-bit operands (int8 rows times
uint8 rows, int32 sums), written with x86 vector intrinsics because LLVM does not find them from
a scalar loop.

``int_dot(a, b, out, b_max, accumulate, shift=0, mask=255)``: out[m, n] (+)= sum_k a[m, k] *
((b[n, k] >> shift) & mask) for a (M, K) int8 and b (N, K) uint8 (shift and mask unpack packed
codes in registers), both with contiguous rows (the right operand is read as the rows of
its transpose: each output column is one contiguous run of K). Exact for every input. Routes,
picked when the helper is compiled from the features of the CPU Numba compiles for:

- ``vnni``: AVX-512 VNNI ``vpdpbusd`` on 256-bit vectors (u8 x s8, four products summed into
  each int32 lane): one instruction per 32 products.
- ``avx2``: ``vpmaddubsw`` (u8 x s8 -> pair sums in int16) then ``vpmaddwd`` with ones (-> int32).
  The pair sums saturate past 32767, so this route is taken only when the caller states
  ``b_max`` (the largest value the unpacked b holds) with 2 * b_max * 128 <= 32767, e.g. 4-bit codes; two
  pair sums share one widening while 4 * b_max * 128 fits too.
- ``wide``: AVX2 widening of both operands to int16 and ``vpmaddwd``: exact for any bytes.
- ``scalar``: a plain loop (no AVX2, rows that are not contiguous, and the K % 32 tail).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic

CHUNK = 32   # products per vector step


def host_features() -> set[str]:
    """The features of the CPU Numba compiles for (NUMBA_CPU_FEATURES overrides the host; a named
    CPU without a feature list counts as none)."""
    from llvmlite import binding
    features = numba.config.CPU_FEATURES
    if features is None:
        if numba.config.CPU_NAME not in (None, "host"):
            return set()
        features = binding.get_host_cpu_features().flatten()
    return {f[1:] for f in features.split(",") if f.startswith("+")}


def best_route(features: set[str] | None = None) -> str:
    f = host_features() if features is None else features
    if {"avx512vnni", "avx512vl"} <= f or "avxvnni" in f:
        return "vnni"
    return "avx2" if "avx2" in f else "scalar"


ROUTE = best_route()

_i8, _i16, _i32 = llvm_ir.IntType(8), llvm_ir.IntType(16), llvm_ir.IntType(32)
_v32i8, _v16i16, _v8i32 = llvm_ir.VectorType(_i8, 32), llvm_ir.VectorType(_i16, 16), llvm_ir.VectorType(_i32, 8)
_v16i8 = llvm_ir.VectorType(_i8, 16)


def _chunks(route: str, cols: int):
    """An intrinsic: the int32 dots of ``n`` (a multiple of the step) int8 bytes at address ``pa``
    with ``cols`` (1 or 8) runs of uint8 bytes at ``pb``, ``sb`` bytes apart, stored as int32 at
    ``pout``; by ``route`` ("vnni", "avx2", "avx2x2": two pair sums per widening, "wide").
    Eight columns at a time keep eight independent accumulators and sum their lanes together
    (a vphaddd tree), where one column pays a whole horizontal sum per dot."""
    @intrinsic
    def dot_run(typingctx, pa, pb, sb, n, shift, mask, pout):
        def codegen(context, builder, signature, args):
            pa_, pb_, sb_, n_, shift_, mask_, pout_ = args
            ptr8 = _i8.as_pointer()
            a0 = builder.inttoptr(pa_, ptr8)
            bases = [builder.inttoptr(builder.add(pb_, builder.mul(sb_, context.get_constant(types.intp, j))), ptr8)
                     for j in range(cols)]
            out = builder.inttoptr(pout_, _i32.as_pointer())
            mod = builder.module
            fn = lambda name, ret, params: cgutils.get_or_insert_function(  # noqa: E731
                mod, llvm_ir.FunctionType(ret, params), name)
            step = 2 * CHUNK if route == "avx2x2" else CHUNK
            totals = [cgutils.alloca_once_value(builder, llvm_ir.Constant(_v8i32, None)) for _ in range(cols)]
            count = builder.udiv(n_, context.get_constant(types.intp, step))

            def splat(x, ty):
                lane = builder.trunc(x, ty.element)
                return builder.shuffle_vector(builder.insert_element(llvm_ir.Constant(ty, None), lane, _i32(0)),
                                              llvm_ir.Constant(ty, None), llvm_ir.Constant(
                                                  llvm_ir.VectorType(_i32, ty.count), [0] * ty.count))

            def load(base, at, ty):
                return builder.load(builder.bitcast(builder.gep(base, [at]), ty.as_pointer()), align=1)

            def load_b(base, at, ty):   # b's bytes unpacked in registers: (b >> shift) & mask
                return builder.and_(builder.lshr(load(base, at, ty), splat(shift_, ty)), splat(mask_, ty))

            ones = llvm_ir.Constant(_v16i16, [1] * 16)
            with cgutils.for_range(builder, count) as loop:
                at = builder.mul(loop.index, context.get_constant(types.intp, step))
                at2 = builder.add(at, context.get_constant(types.intp, CHUNK))
                xa = load(a0, at, _v32i8)
                xa2 = load(a0, at2, _v32i8) if route == "avx2x2" else None
                for base, total in zip(bases, totals):
                    acc = builder.load(total)
                    if route == "vnni":
                        dp = fn("llvm.x86.avx512.vpdpbusd.256", _v8i32, [_v8i32, _v32i8, _v32i8])
                        acc = builder.call(dp, [acc, load_b(base, at, _v32i8), xa])
                    elif route in ("avx2", "avx2x2"):
                        maddubs = fn("llvm.x86.avx2.pmadd.ub.sw", _v16i16, [_v32i8, _v32i8])
                        madd = fn("llvm.x86.avx2.pmadd.wd", _v8i32, [_v16i16, _v16i16])
                        pairs = builder.call(maddubs, [load_b(base, at, _v32i8), xa])
                        if route == "avx2x2":
                            pairs = builder.add(pairs, builder.call(maddubs, [load_b(base, at2, _v32i8), xa2]))
                        acc = builder.add(acc, builder.call(madd, [pairs, ones]))
                    else:   # wide: both operands widened to int16, 16 products per vpmaddwd
                        madd = fn("llvm.x86.avx2.pmadd.wd", _v8i32, [_v16i16, _v16i16])
                        for half in (0, 16):
                            at_h = builder.add(at, context.get_constant(types.intp, half))
                            wb = builder.zext(load_b(base, at_h, _v16i8), _v16i16)
                            wa = builder.sext(load(a0, at_h, _v16i8), _v16i16)
                            acc = builder.add(acc, builder.call(madd, [wa, wb]))
                    builder.store(acc, total)
            accs = [builder.load(t) for t in totals]
            if cols == 1:
                reduce_add = fn("llvm.vector.reduce.add.v8i32", _i32, [_v8i32])
                builder.store(builder.call(reduce_add, accs), out)
            else:
                hadd = fn("llvm.x86.avx2.phadd.d", _v8i32, [_v8i32, _v8i32])
                h = [builder.call(hadd, [accs[i], accs[i + 1]]) for i in range(0, 8, 2)]
                q0, q1 = builder.call(hadd, [h[0], h[1]]), builder.call(hadd, [h[2], h[3]])
                # q0 = [c0..c3 of the low 128 bits, c0..c3 of the high]; q1 the same for c4..c7
                pick = lambda idx: builder.shuffle_vector(q0, q1, llvm_ir.Constant(_v8i32, idx))  # noqa: E731
                sums = builder.add(pick([0, 1, 2, 3, 8, 9, 10, 11]), pick([4, 5, 6, 7, 12, 13, 14, 15]))
                builder.store(sums, builder.bitcast(out, _v8i32.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(types.intp, types.intp, types.intp, types.intp, types.int32, types.int32,
                          types.intp), codegen
    return dot_run


_RUNS = {(r, c): _chunks(r, c) for r in ("vnni", "avx2", "avx2x2", "wide") for c in (1, 8)}
_dot_vnni, _dot_avx2, _dot_avx2x2, _dot_wide = (_RUNS[r, 1] for r in ("vnni", "avx2", "avx2x2", "wide"))
_dot8_vnni, _dot8_avx2, _dot8_avx2x2, _dot8_wide = (_RUNS[r, 8] for r in ("vnni", "avx2", "avx2x2", "wide"))


def _make(route: str):
    """int_dot compiled for one route (tests call each route; ``int_dot`` is the host's)."""
    vector = route != "scalar"
    is_vnni = route == "vnni"

    @numba.njit(cache=True)
    def int_dot(a, b, out, b_max, accumulate, shift=0, mask=255):
        # a and b may be views smaller than the tiles they stand for (an edge tile read in
        # place): what they lack counts as zeros
        rows, cols = min(a.shape[0], out.shape[0]), min(b.shape[0], out.shape[1])
        depth = min(a.shape[1], b.shape[1])
        if not accumulate:
            out[:] = 0
        contiguous = a.strides[1] == 1 and b.strides[1] == 1
        body = depth - depth % CHUNK if vector and contiguous else 0
        if is_vnni or 2 * b_max * 128 > 32767:
            kind = 0 if is_vnni else 3                       # vnni / wide: exact for any bytes
        else:
            kind = 1 if body % (2 * CHUNK) == 0 and 4 * b_max * 128 <= 32767 else 2   # avx2x2 / avx2
        sh, mk = np.int32(shift), np.int32(mask)
        pa, pb = a.ctypes.data, b.ctypes.data
        sa, sb = a.strides[0], b.strides[0]
        part = np.empty(8, np.int32)
        pp = part.ctypes.data
        eights = cols - cols % 8 if body else 0
        for j in range(0, eights, 8):
            for i in range(rows):
                if kind == 0:
                    _dot8_vnni(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                elif kind == 1:
                    _dot8_avx2x2(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                elif kind == 2:
                    _dot8_avx2(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                else:
                    _dot8_wide(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                for c in range(8):
                    out[i, j + c] += part[c]
        for j in range(eights, cols):
            for i in range(rows):
                if body:
                    if kind == 0:
                        _dot_vnni(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                    elif kind == 1:
                        _dot_avx2x2(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                    elif kind == 2:
                        _dot_avx2(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                    else:
                        _dot_wide(pa + i * sa, pb + j * sb, sb, body, sh, mk, pp)
                    out[i, j] += part[0]
        for j in range(cols):                               # the K % 32 tail
            for i in range(rows):
                s = np.int32(0)
                for k in range(body, depth):
                    s += np.int32(a[i, k]) * ((np.int32(b[j, k]) >> sh) & mk)
                out[i, j] += s
    return int_dot


ROUTES = {r: _make(r) for r in ("vnni", "avx2", "scalar")}
int_dot = ROUTES[ROUTE]


def route_runs(route: str) -> bool:
    """Can this CPU run ``route``?"""
    order = {"scalar": 0, "avx2": 1, "vnni": 2}
    have = best_route()
    return order[route] <= order[have] and (route != "vnni" or have == "vnni")


# -- the k-quad order (tc.from_quads): lanes are columns ------------------------------------------

def _quads(route: str, rows: int, vecs: int):
    """An intrinsic: for ``rows`` rows of a (int8, ``sa`` bytes apart) and 8 * ``vecs`` columns of
    b held in k-quad order (uint8, rows of b ``sb`` bytes apart, 4 bytes a column), add over
    ``nq`` quads sum_q a[r, 4q..4q+3] . ((b[q, 4c..4c+3] >> shift) & mask) to the int32 outputs at
    ``pout`` (rows ``so`` bytes apart). Each int32 lane is one column, so no horizontal sums: one
    vpdpbusd (or vpmaddubsw + vpmaddwd) per quad and 8 columns, the row's four bytes broadcast.
    Every unpacked weight vector serves all ``rows`` rows; one row alternates two accumulators."""
    @intrinsic
    def quad_run(typingctx, pa, sa, pb, sb, nq, shift, mask, pout, so):
        def codegen(context, builder, signature, args):
            pa_, sa_, pb_, sb_, nq_, shift_, mask_, pout_, so_ = args
            ptr8 = _i8.as_pointer()
            const = lambda v: context.get_constant(types.intp, v)  # noqa: E731
            a0, b0, o0 = (builder.inttoptr(p, ptr8) for p in (pa_, pb_, pout_))
            mod = builder.module
            fn = lambda name, ret, params: cgutils.get_or_insert_function(  # noqa: E731
                mod, llvm_ir.FunctionType(ret, params), name)

            def splat(x, ty):
                lane = builder.trunc(x, ty.element) if x.type != ty.element else x
                return builder.shuffle_vector(builder.insert_element(llvm_ir.Constant(ty, None), lane, _i32(0)),
                                              llvm_ir.Constant(ty, None), llvm_ir.Constant(
                                                  llvm_ir.VectorType(_i32, ty.count), [0] * ty.count))

            sh, mk = splat(shift_, _v32i8), splat(mask_, _v32i8)
            chains = 2 if rows == 1 else 1
            accs = [[cgutils.alloca_once_value(builder, llvm_ir.Constant(_v8i32, None)) for _ in range(vecs * chains)]
                    for _ in range(rows)]
            ones = llvm_ir.Constant(_v16i16, [1] * 16)

            def step(q, chain):
                brow = builder.gep(b0, [builder.mul(q, sb_)])
                ws = [builder.and_(builder.lshr(builder.load(builder.bitcast(
                    builder.gep(brow, [const(32 * v)]), _v32i8.as_pointer()), align=1), sh), mk) for v in range(vecs)]
                for r in range(rows):
                    at = builder.add(builder.mul(const(r), sa_), builder.mul(q, const(4)))
                    four = builder.load(builder.bitcast(builder.gep(a0, [at]), _i32.as_pointer()), align=1)
                    xa = builder.bitcast(splat(four, _v8i32), _v32i8)
                    for v, w in enumerate(ws):
                        slot = accs[r][v * chains + chain]
                        if route == "vnni":
                            dp = fn("llvm.x86.avx512.vpdpbusd.256", _v8i32, [_v8i32, _v32i8, _v32i8])
                            acc = builder.call(dp, [builder.load(slot), w, xa])
                        else:
                            maddubs = fn("llvm.x86.avx2.pmadd.ub.sw", _v16i16, [_v32i8, _v32i8])
                            madd = fn("llvm.x86.avx2.pmadd.wd", _v8i32, [_v16i16, _v16i16])
                            acc = builder.add(builder.load(slot),
                                              builder.call(madd, [builder.call(maddubs, [w, xa]), ones]))
                        builder.store(acc, slot)

            pairs = builder.udiv(nq_, const(chains))
            with cgutils.for_range(builder, pairs) as loop:
                for chain in range(chains):
                    step(builder.add(builder.mul(loop.index, const(chains)), const(chain)), chain)
            if chains == 2:
                with cgutils.if_unlikely(builder, builder.icmp_unsigned("!=", builder.urem(nq_, const(2)), const(0))):
                    step(builder.sub(nq_, const(1)), 0)
            for r in range(rows):
                orow = builder.gep(o0, [builder.mul(const(r), so_)])
                for v in range(vecs):
                    total = builder.load(accs[r][v * chains])
                    if chains == 2:
                        total = builder.add(total, builder.load(accs[r][v * chains + 1]))
                    dst = builder.bitcast(builder.gep(orow, [const(32 * v)]), _v8i32.as_pointer())
                    builder.store(builder.add(builder.load(dst, align=4), total), dst, align=4)
            return context.get_dummy_value()

        return types.none(types.intp, types.intp, types.intp, types.intp, types.intp, types.int32, types.int32,
                          types.intp, types.intp), codegen
    return quad_run


_QUADS = {(route, r, v): _quads(route, r, v) for route in ("vnni", "avx2") for r in (1, 2, 4) for v in (1, 4)}


def _make_quads(route: str):
    """int_dot_quads and int_dot_quads_at compiled for one route (tests call each; the module's
    names are the host's). Inlined where called: their arguments are mostly constants there,
    and their branches fold."""
    vector = route != "scalar"
    is_vnni = route == "vnni"
    # the route's intrinsics by rows and 8-column vectors (scalar never calls them)
    q1_1, q2_1, q4_1, q1_4, q2_4, q4_4 = (_QUADS[route if vector else "avx2", r, v] for v in (1, 4) for r in (1, 2, 4))

    @numba.njit(cache=True, inline="always")
    def int_dot_quads_at(a, a0, a1, a_rows, a_cols, b, b0, b1, b_rows, b_cols, out, b_max, accumulate, shift, mask):
        # out[m, n] (+)= sum_k A[m, k] * ((B[k // 4, 4 n + k % 4] >> shift) & mask) for the
        # (a_rows, a_cols) window of a at (a0, a1) and the (b_rows, b_cols) window of b at (b0, b1),
        # read in place through their addresses (no views made: in a kernel's loop each view
        # costs two atomic reference counts); past out's extents the windows count as zeros
        i0, i1, j0, j1 = np.intp(a0), np.intp(a1), np.intp(b0), np.intp(b1)   # offsets may come unsigned
        rows, cols = min(np.intp(a_rows), out.shape[0]), min(np.intp(b_cols) // 4, out.shape[1])
        depth = min(np.intp(a_cols), 4 * np.intp(b_rows))
        if not accumulate:
            out[:] = 0
        exact = is_vnni or 2 * b_max * 128 <= 32767        # int16 pair sums of vpmaddubsw
        fast = vector and exact and a.strides[1] == 1 and b.strides[1] == 1 and out.strides[1] == 4
        nq = depth // 4 if fast else 0
        sh, mk = np.int32(shift), np.int32(mask)
        sa, sb, so = a.strides[0], b.strides[0], out.strides[0]
        pa, pb, po = a.ctypes.data + i0 * sa + i1 * a.strides[1], b.ctypes.data + j0 * sb + j1 * b.strides[1], \
            out.ctypes.data
        wide = cols - cols % 8 if nq else 0
        j = 0
        while j < wide:
            two = j + 32 <= wide
            i = 0
            while i < rows:
                r = 4 if i + 4 <= rows else (2 if i + 2 <= rows else 1)
                aa, bb, oo = pa + i * sa, pb + 4 * j, po + i * so + 4 * j
                if two:
                    if r == 4:
                        q4_4(aa, sa, bb, sb, nq, sh, mk, oo, so)
                    elif r == 2:
                        q2_4(aa, sa, bb, sb, nq, sh, mk, oo, so)
                    else:
                        q1_4(aa, sa, bb, sb, nq, sh, mk, oo, so)
                elif r == 4:
                    q4_1(aa, sa, bb, sb, nq, sh, mk, oo, so)
                elif r == 2:
                    q2_1(aa, sa, bb, sb, nq, sh, mk, oo, so)
                else:
                    q1_1(aa, sa, bb, sb, nq, sh, mk, oo, so)
                i += r
            j += 32 if two else 8
        for n in range(0 if 4 * nq < depth else wide, cols):   # depth past the quads; columns past the vectors
            start = 4 * nq if n < wide else 0
            for m in range(rows):
                s = np.int32(0)
                for k in range(start, depth):
                    s += np.int32(a[i0 + m, i1 + k]) * ((np.int32(b[j0 + (k >> 2), j1 + 4 * n + (k & 3)]) >> sh) & mk)
                out[m, n] += s

    @numba.njit(cache=True, inline="always")
    def int_dot_quads(a, b, out, b_max, accumulate, shift=0, mask=255):
        # the same on whole arrays a (M, K) and b (K/4, 4N) (views smaller than the tiles they
        # stand for, edge tiles read in place, count as zeros beyond)
        int_dot_quads_at(a, 0, 0, a.shape[0], a.shape[1], b, 0, 0, b.shape[0], b.shape[1], out, b_max, accumulate,
                         shift, mask)
    return int_dot_quads, int_dot_quads_at


_QUAD_PAIRS = {r: _make_quads(r) for r in ("vnni", "avx2", "scalar")}
QUAD_ROUTES = {r: pair[0] for r, pair in _QUAD_PAIRS.items()}
QUAD_AT_ROUTES = {r: pair[1] for r, pair in _QUAD_PAIRS.items()}
int_dot_quads, int_dot_quads_at = _QUAD_PAIRS[ROUTE]
