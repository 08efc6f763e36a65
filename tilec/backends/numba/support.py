"""Helpers the generated Numba source calls: 16-bit float storage (NumPy has no bf16 and Numba
no fp16, so such tensors arrive as uint16 bits and tiles compute in fp32)."""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload


@numba.njit(cache=True, inline="always")
def widen_bf16(bits):
    """uint16 bf16 bits -> float32 (exact)."""
    wide = np.empty(bits.shape, np.uint32)
    flat_w = wide.reshape(-1)
    flat_b = bits.reshape(-1)
    for i in range(flat_b.size):
        flat_w[i] = np.uint32(flat_b[i]) << np.uint32(16)
    return wide.view(np.float32)


@numba.njit(cache=True, inline="always")
def narrow_bf16(x):
    """float32 -> uint16 bf16 bits, round to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(x).view(np.uint32).reshape(-1)
    out = np.empty(bits.size, np.uint16)
    for i in range(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            out[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x40))
        else:
            out[i] = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    return out.reshape(x.shape)


@numba.njit(cache=True, inline="always")
def widen_f16(bits):
    """uint16 IEEE half bits -> float32 (exact, subnormals and inf/nan included)."""
    out = np.empty(bits.shape, np.float32)
    flat_o = out.reshape(-1)
    flat_b = bits.reshape(-1)
    for i in range(flat_b.size):
        h = np.int64(flat_b[i])
        sign = -1.0 if h & 0x8000 else 1.0
        exp = (h >> 10) & 0x1F
        mant = h & 0x3FF
        if exp == 0:
            v = sign * mant * 2.0 ** -24
        elif exp == 31:
            v = sign * np.inf if mant == 0 else np.nan
        else:
            v = sign * (1.0 + mant / 1024.0) * 2.0 ** (exp - 15)
        flat_o[i] = np.float32(v)
    return out


@numba.njit(cache=True, inline="always")
def narrow_f16(x):
    """float32 -> uint16 IEEE half bits, round to nearest even."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.size, np.uint16)
    for i in range(flat.size):
        out[i] = _f32_to_f16_bits(np.float64(flat[i]))
    return out.reshape(x.shape)


@numba.njit(cache=True)
def _f32_to_f16_bits(v):
    if v != v:
        return np.uint16(0x7E00)
    sign = 0x8000 if (v < 0.0 or (v == 0.0 and np.copysign(1.0, v) < 0.0)) else 0
    a = abs(v)
    if a >= 65520.0:  # rounds to inf
        return np.uint16(sign | 0x7C00)
    if a < 2.0 ** -14:  # subnormal: units of 2^-24
        q = np.rint(a * 2.0 ** 24)
        return np.uint16(sign | int(q))
    e = int(np.floor(np.log2(a)))
    if 2.0 ** e > a:
        e -= 1
    if 2.0 ** (e + 1) <= a:
        e += 1
    m = np.rint((a / 2.0 ** e - 1.0) * 1024.0)
    if m >= 1024.0:
        m = 0.0
        e += 1
    if e > 15:
        return np.uint16(sign | 0x7C00)
    return np.uint16(sign | ((e + 15) << 10) | int(m))


@numba.njit(cache=True, inline="always")
def round_bf16(x):
    """float32 tile rounded to bf16 precision, kept as float32."""
    return widen_bf16(narrow_bf16(x))


@numba.njit(cache=True, inline="always")
def round_f16(x):
    """float32 tile rounded to fp16 precision, kept as float32."""
    return widen_f16(narrow_f16(x))


# -- a vectorizable exp2 -----------------------------------------------------------------------
# np.exp2 inside a Numba loop is a scalar libm call (the llvmlite wheels carry no SVML), which
# keeps LLVM from vectorizing the loop. exp2f is plain arithmetic instead: split x into an
# integer and a fraction, a polynomial for 2**fraction, and 2**integer built directly as float
# bits, so a loop over a tile compiles to SIMD code.

@intrinsic
def _bits_as_f32(typingctx, bits):
    """The low 32 bits of an integer reinterpreted as a float32 (an LLVM bitcast, no memory)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], llvm_ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, llvm_ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """A float32's bits as an int32 (an LLVM bitcast, no memory)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(32))

    return types.int32(x), codegen


# 2**f on [0, 1): least-squares fit of the relative error on Chebyshev nodes, degree 6
# (max relative error 1.0e-7 in float32 evaluation, about one ulp).
_E0, _E1, _E2, _E3 = 1.000000001815494, 0.6931469870574746, 0.24022979581425571, 0.05548352472393272
_E4, _E5, _E6 = 0.009678472554515764, 0.0012443081507784591, 0.000216906091723634


@numba.njit(cache=True, inline="always", fastmath={"contract", "nsz"})
def exp2f(x):
    """2**x in float32: 0 below -126 (no subnormals), inf from 128 on, NaN for NaN."""
    xf = np.float32(x)
    # Clamp with selects that keep x when it is NaN, so NaN runs through to the result with no
    # test of its own. Past the ends 2**i gets the exponent bits 0 (-127: zero) and 255 (128:
    # inf), so neither end needs a test either (softmax is 1% faster without the tests).
    c = np.float32(-127.0) if xf < np.float32(-127.0) else xf
    c = np.float32(128.0) if c > np.float32(128.0) else c
    i = np.floor(c)
    f = c - i
    p = np.float32(_E6) * f + np.float32(_E5)
    p = p * f + np.float32(_E4)
    p = p * f + np.float32(_E3)
    p = p * f + np.float32(_E2)
    p = p * f + np.float32(_E1)
    p = p * f + np.float32(_E0)
    # 2**i from the exponent bits i + 127: adding 1.5 * 2**23 puts them in the low mantissa
    # bits, with no float-to-int conversion (undefined for NaN in LLVM)
    return p * _bits_as_f32(_f32_bits(i + np.float32(12582912.0 + 127.0)) << 23)


# -- tc.dot through BLAS, in place ---------------------------------------------------------------
# np.dot allocates its result, so `acc + a @ b` cost a temporary and a second pass, and its
# operands had to be tile copies. sgemm takes leading dimensions and beta: it reads a tile
# straight out of the tensor (a strided view) and accumulates into the accumulator in place.
# numba_xxgemm is the C helper Numba's own np.dot calls (scipy's BLAS), so caching still works.

@intrinsic
def _sgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Column-major sgemm: c[m x n] = op(a) @ op(b) + beta * c, alpha 1, on the arrays' data."""
    from numba.np.linalg import ensure_blas
    ensure_blas()

    def codegen(context, builder, signature, args):
        ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args
        char, intp, voidp = llvm_ir.IntType(8), context.get_value_type(types.intp), cgutils.voidptr_t
        fnty = llvm_ir.FunctionType(llvm_ir.IntType(32), [char, char, char, intp, intp, intp, voidp, voidp,
                                                          intp, voidp, intp, voidp, voidp, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        one = cgutils.alloca_once_value(builder, context.get_constant(types.float32, 1.0))
        beta_slot = cgutils.alloca_once_value(builder, beta_)
        data = [builder.bitcast(context.make_array(ty)(context, builder, v).data, voidp)
                for ty, v in ((signature.args[5], a_), (signature.args[7], b_), (signature.args[10], c_))]
        builder.call(fn, [llvm_ir.Constant(char, ord("s")), builder.trunc(ta, char), builder.trunc(tb, char),
                          m_, n_, k_, builder.bitcast(one, voidp), data[0], lda_, data[1], ldb_,
                          builder.bitcast(beta_slot, voidp), data[2], ldc_])
        return context.get_dummy_value()

    sig = types.none(types.intp, types.intp, types.intp, types.intp, types.intp, a, types.intp, b,
                     types.intp, types.float32, c, types.intp)
    return sig, codegen


@intrinsic
def _sgemv(typingctx, trans, m, n, a, lda, x, beta, y):
    """Column-major sgemv: y = op(a[m x n]) @ x + beta * y, alpha 1, unit strides for x and y."""
    from numba.np.linalg import ensure_blas
    ensure_blas()

    def codegen(context, builder, signature, args):
        from numba.core import cgutils
        ta, m_, n_, a_, lda_, x_, beta_, y_ = args
        char, intp, voidp = llvm_ir.IntType(8), context.get_value_type(types.intp), cgutils.voidptr_t
        fnty = llvm_ir.FunctionType(llvm_ir.IntType(32), [char, char, intp, intp, voidp, voidp, intp,
                                                          voidp, voidp, voidp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemv")
        one = cgutils.alloca_once_value(builder, context.get_constant(types.float32, 1.0))
        beta_slot = cgutils.alloca_once_value(builder, beta_)
        data = [builder.bitcast(context.make_array(ty)(context, builder, v).data, voidp)
                for ty, v in ((signature.args[3], a_), (signature.args[5], x_), (signature.args[7], y_))]
        builder.call(fn, [llvm_ir.Constant(char, ord("s")), builder.trunc(ta, char), m_, n_,
                          builder.bitcast(one, voidp), data[0], lda_, data[1], builder.bitcast(beta_slot, voidp),
                          data[2]])
        return context.get_dummy_value()

    sig = types.none(types.intp, types.intp, types.intp, a, types.intp, x, types.float32, y)
    return sig, codegen


@numba.njit(cache=True)
def _blas_operand(x):
    """(x or a contiguous copy, 'n' or 't', leading dimension) for x as a row-major BLAS operand."""
    rows, cols = x.shape
    s0, s1 = x.strides[0] // 4, x.strides[1] // 4
    if (s1 == 1 or cols == 1) and s0 >= max(cols, 1) and x.strides[0] % 4 == 0:
        return x, ord("n"), s0 if rows > 1 else max(cols, 1)
    if (s0 == 1 or rows == 1) and s1 >= max(rows, 1) and x.strides[1] % 4 == 0:
        return x, ord("t"), s1 if cols > 1 else max(rows, 1)
    y = np.ascontiguousarray(x)
    return y, ord("n"), max(cols, 1)


@numba.njit(cache=True)
def matmul_into(a, b, c, beta):
    """c = a @ b + beta * c for float32 2-D arrays; a and b may be strided views (a tile read in
    place, or a transposed one), and smaller than the tiles they stand for (an edge tile read
    in place): what they lack counts as zeros. c must be C-contiguous."""
    rows, cols = c.shape
    m, n, k = min(a.shape[0], rows), min(b.shape[1], cols), min(a.shape[1], b.shape[0])
    if m == 0 or n == 0 or k == 0:
        _scale_outside(c, 0, 0, beta)    # a @ b is all zeros: c = beta * c everywhere
        return
    if (m < rows or n < cols) and beta != 1:
        _scale_outside(c, m, n, beta)
    a_part, b_part = a[:m, :k], b[:k, :n]
    a2, ta, lda = _blas_operand(a_part)
    if cols == 1 and (b_part.strides[0] == 4 or k == 1):
        # matrix-vector: sgemv streams a once (sgemm would pack it first)
        if ta == ord("n"):   # row-major a is column-major a^T
            _sgemv(ord("t"), k, m, a2, lda, b_part, np.float32(beta), c)
        else:
            _sgemv(ord("n"), m, k, a2, lda, b_part, np.float32(beta), c)
        return
    b2, tb, ldb = _blas_operand(b_part)
    if m == 1 and ta == ord("n"):
        # vector-matrix: c's first row = b^T @ a's row, one sgemv (sgemm with one row is ~2x slower)
        if tb == ord("n"):   # row-major b is column-major b^T
            _sgemv(ord("n"), n, k, b2, ldb, a2, np.float32(beta), c)
        else:
            _sgemv(ord("t"), k, n, b2, ldb, a2, np.float32(beta), c)
        return
    # row-major C = A @ B is column-major C^T = B^T @ A^T: swap the operands
    _sgemm(tb, ta, n, m, k, b2, ldb, a2, lda, np.float32(beta), c, max(cols, 1))


@numba.njit(cache=True)
def _scale_outside(c, m, n, beta):
    """c = beta * c outside its top-left m x n block (beta 0 clears: c may be uninitialized)."""
    for i in range(c.shape[0]):
        for j in range(n if i < m else 0, c.shape[1]):
            c[i, j] = 0.0 if beta == 0 else beta * c[i, j]


# -- table lookups in a register ---------------------------------------------------------------
# A gather from a 16-entry fp32 table is one AVX-512 vpermps per 16 lookups: the table sits in a
# register and the indices select lanes. LLVM never emits this from a scalar loop (and prefers
# scalar loads to vgatherdps), so the loop is written here. LUT-GEMM's inner step (hits of 32
# tables of 16 entries over 512 columns, summed): 0.8 us, against 6.6 us for the scalar loop.

def _target_has_avx512() -> bool:
    """Does the CPU Numba compiles for have AVX-512F? NUMBA_CPU_NAME / NUMBA_CPU_FEATURES (a
    portable build, say) override the host; a named CPU without a feature list counts as no."""
    from llvmlite import binding
    features = numba.config.CPU_FEATURES
    if features is None:
        if numba.config.CPU_NAME not in (None, "host"):
            return False
        features = binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


PERMUTE16 = _target_has_avx512()


@numba.njit(inline="always")
def _lookup_sum_from(out, tables, index, first):
    """lookup_sum on the columns from ``first`` on, one lookup at a time."""
    for j in range(index.shape[0]):
        for n in range(first, out.shape[0]):
            out[n] += tables[j, index[j, n]]


def lookup_sum(out, tables, index):
    """out[n] += sum over j of tables[j, index[j, n]]: a gather from one table per row j, summed
    over the rows. Index values must be valid positions in the tables."""
    _lookup_sum_from(out, tables, index, 0)


@intrinsic
def _permute_sum16(typingctx, out, tables, index, n):
    """lookup_sum on the first n columns (a multiple of 16) for tables of 16 entries: for each
    block of 16 columns, a register sums one vpermps per table."""
    def codegen(context, builder, signature, args):
        from numba.core import cgutils
        out_, tables_, index_, n_ = args
        v16f, v16i = llvm_ir.VectorType(llvm_ir.FloatType(), 16), llvm_ir.VectorType(llvm_ir.IntType(32), 16)
        ix = context.get_value_type(signature.args[2].dtype)
        permute = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(v16f, [v16f, v16i]),
                                                 "llvm.x86.avx512.permvar.sf.512")
        dst, src, at = (context.make_array(ty)(context, builder, v)
                        for ty, v in zip(signature.args[:3], (out_, tables_, index_)))
        rows, width = builder.extract_value(at.shape, 0), builder.extract_value(at.shape, 1)
        sixteen = context.get_constant(types.intp, 16)
        with cgutils.for_range(builder, builder.udiv(n_, sixteen)) as block:
            start = builder.mul(block.index, sixteen)
            slot = builder.bitcast(builder.gep(dst.data, [start]), v16f.as_pointer())
            total = cgutils.alloca_once_value(builder, builder.load(slot, align=4))
            with cgutils.for_range(builder, rows) as row:
                table = builder.load(builder.bitcast(builder.gep(src.data, [builder.mul(row.index, sixteen)]),
                                                     v16f.as_pointer()), align=4)
                lanes = builder.gep(at.data, [builder.add(builder.mul(row.index, width), start)])
                lanes = builder.load(builder.bitcast(lanes, llvm_ir.VectorType(ix, 16).as_pointer()), align=1)
                lanes = builder.zext(lanes, v16i) if ix.width < 32 else lanes
                builder.store(builder.fadd(builder.load(total), builder.call(permute, [table, lanes])), total)
            builder.store(builder.load(total), slot, align=4)
        return context.get_dummy_value()

    return types.none(out, tables, index, types.intp), codegen


@overload(lookup_sum, jit_options={"fastmath": True})
def _lookup_sum(out, tables, index):
    vector = PERMUTE16 and all(isinstance(a, types.Array) and a.layout == "C" for a in (out, tables, index)) \
        and (out.ndim, tables.ndim, index.ndim) == (1, 2, 2) \
        and out.dtype == types.float32 and tables.dtype == types.float32 \
        and isinstance(index.dtype, types.Integer) and index.dtype.bitwidth <= 32

    def scalar(out, tables, index):
        _lookup_sum_from(out, tables, index, 0)

    def in_registers(out, tables, index):
        n = out.shape[0]
        done = n - n % 16 if tables.shape[1] == 16 else 0
        if done:
            _permute_sum16(out, tables, index, done)
        _lookup_sum_from(out, tables, index, done)

    return in_registers if vector else scalar


# -- max / min along rows ----------------------------------------------------------------------
# LLVM does not vectorize a float max or min reduction written as a loop in Numba (a 128 x 64
# row max took 2.5 us, the same with 16 partial lanes), so rows are reduced here 16 lanes at a
# time with a compare and select (one vmaxps / vminps), then halved lane by lane the same way.
# llvm.maxnum and llvm.vector.reduce.fmax did this 4-5x slower (0.12-0.16 against 0.03 ns per
# element for 4..256 x 64..256 rows): their NaN rules cost an extra compare and blend per
# step. A row holding NaN gives an unspecified result, as the loop did: tc.max does not
# promise to propagate NaN.

def _extreme16(which: str):
    @intrinsic
    def extreme(typingctx, x, start, n):
        """max or min of the float32 run x.flat[start:start + n], n a positive multiple of 16."""
        def codegen(context, builder, signature, args):
            from numba.core import cgutils
            x_, start_, n_ = args
            v16f = llvm_ir.VectorType(llvm_ir.FloatType(), 16)
            cmp = ">" if which == "max" else "<"

            def pick(a, b):   # a where it wins, else b: vmaxps / vminps
                return builder.select(builder.fcmp_ordered(cmp, a, b), a, b)

            base = builder.gep(context.make_array(signature.args[0])(context, builder, x_).data, [start_])
            sixteen = context.get_constant(types.intp, 16)
            one = context.get_constant(types.intp, 1)
            best = cgutils.alloca_once_value(builder, builder.load(builder.bitcast(base, v16f.as_pointer()), align=4))
            with cgutils.for_range(builder, builder.sub(builder.udiv(n_, sixteen), one)) as block:
                at = builder.mul(builder.add(block.index, one), sixteen)
                lanes = builder.load(builder.bitcast(builder.gep(base, [at]), v16f.as_pointer()), align=4)
                builder.store(pick(lanes, builder.load(best)), best)
            v = builder.load(best)
            half = 8
            while half:   # lanes [half, 2 half) against [0, half)
                order = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), 16),
                                         [half + i if i < half else i for i in range(16)])
                v = pick(builder.shuffle_vector(v, v, order), v)
                half //= 2
            return builder.extract_element(v, llvm_ir.Constant(llvm_ir.IntType(32), 0))

        return types.float32(x, types.intp, types.intp), codegen
    return extreme


_max16, _min16 = _extreme16("max"), _extreme16("min")


def row_max(x, out):
    """out[i] = max over j of x[i, j] for a 2-D float32 x."""
    for i in range(x.shape[0]):
        out[i] = x[i].max()


def row_min(x, out):
    """out[i] = min over j of x[i, j] for a 2-D float32 x."""
    for i in range(x.shape[0]):
        out[i] = x[i].min()


def _row_extreme(vector_run, better):
    """The overload of row_max / row_min: 16 lanes at a time for a C-ordered float32 x."""
    def implement(x, out):
        vector = isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" and x.dtype == types.float32

        def by_lanes(x, out):
            cols = x.shape[1]
            body = cols - cols % 16
            for i in range(x.shape[0]):
                best = vector_run(x, i * cols, body) if body else x[i, 0]
                for j in range(body, cols):
                    if better(x[i, j], best):
                        best = x[i, j]
                out[i] = best

        def scalar(x, out):
            for i in range(x.shape[0]):
                best = x[i, 0]
                for j in range(1, x.shape[1]):
                    if better(x[i, j], best):
                        best = x[i, j]
                out[i] = best

        return by_lanes if vector else scalar
    return implement


@numba.njit(inline="always")
def _greater(a, b):
    return a > b


@numba.njit(inline="always")
def _less(a, b):
    return a < b


overload(row_max, jit_options={"fastmath": {"nsz"}})(_row_extreme(_max16, _greater))
overload(row_min, jit_options={"fastmath": {"nsz"}})(_row_extreme(_min16, _less))


@intrinsic
def call_at(typingctx, address, args):
    """Call the Numba-compiled function at ``address`` (its native entry, found by the runner for
    exactly these argument types) with the tuple ``args``, propagating its error status. The
    runner's prange calls kernels this way: a call to the kernel by name would link the kernel
    into the prange's module, and optimizing that again took 2.5 s per kernel."""
    arg_types = list(args.types)

    def codegen(context, builder, sig, llargs):
        fn_ptr_type = context.call_conv.get_function_type(types.none, arg_types).as_pointer()
        fn_ptr = builder.inttoptr(llargs[0], fn_ptr_type)
        values = [builder.extract_value(llargs[1], i) for i in range(len(arg_types))]
        status, _ = context.call_conv.call_function(builder, fn_ptr, types.none, arg_types, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(types.intp, args), codegen


@intrinsic
def fetch_add(typingctx, counter, step):
    """Atomically add ``step`` to ``counter[0]`` (an int64 array) and return the old value: the
    runner's threads take runs of programs from one counter."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(step, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        cell = context.make_array(sig.args[0])(context, builder, args[0]).data
        amount = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("add", cell, amount, "monotonic")

    return types.int64(counter, step), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask for the cache line holding ``array[index]`` (a tuple of in-bounds ints) to be read
    soon: an LLVM prefetch into every cache level, with no load to wait on. Generated kernels
    prefetch the next loop step's tiles (see the renderer's ``_plan_prefetch``)."""
    if not (isinstance(array, types.Array) and isinstance(index, types.BaseTuple) and len(index) == array.ndim
            and all(isinstance(t, types.Integer) for t in index)):
        return None

    def codegen(context, builder, sig, args):
        aryty, idxty = sig.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, builder.extract_value(args[1], i), t, types.intp)
               for i, t in enumerate(idxty.types)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        byte_ptr = builder.bitcast(ptr, llvm_ir.IntType(8).as_pointer())
        i32 = llvm_ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_ptr.type, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [byte_ptr, i32(0), i32(3), i32(1)])   # read, keep in all levels, data
        return context.get_dummy_value()

    return types.none(array, index), codegen


from .intdot import int_dot, int_dot_quads, int_dot_quads_at  # noqa: E402,F401  (tc.dot on bytes: see intdot.py)
