"""Render tile IR as CUDA C: one thread block per program.

The plan (``plan.py``) says where each tile lives. Every tile op becomes a loop over the
elements the thread owns in its layout (unrolled: the slots are registers); ops that need
another thread's elements read them from the shared-memory arena, written by their producer
and fenced with ``__syncthreads``. ``dot`` is a register-blocked SIMT product over shared
tiles, or WMMA 16x16x16 fragments for f16/bf16; reductions give each output element a group
of lanes that combine with warp shuffles. The same text compiles with NVRTC/nvcc and, with
``emulation/tilec_emulation.h``, with g++ on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import TilecError
from ...ir import COMPARE_OPS, Function, Op, Value
from ...passes.analysis import operand_identity
from .. import render as base
from . import cnames as C
from .index_uses import axes, expr_reads, flat_reads, value_reads
from .limits import STATIC_SMEM_PER_BLOCK
from .plan import WARP, Plan, make_plan

_SYM = base.INFIX
_MATH = {"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "floor", "ceil", "tanh", "erf", "sin", "cos"}
_SHUFFLE_TYPES = {"float", "double", "int", "long long", "unsigned int"}

HELPERS = r"""// Python semantics for integer floor division and modulo; NumPy-like max/min.
template <class T> static __device__ __forceinline__ T tc_floordiv(T a, T b) {
  T q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;
}
template <> __device__ __forceinline__ float tc_floordiv<float>(float a, float b) { return floorf(a / b); }
template <> __device__ __forceinline__ double tc_floordiv<double>(double a, double b) { return floor(a / b); }
template <class T> static __device__ __forceinline__ T tc_mod(T a, T b) {
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? T(r + b) : r;
}
template <> __device__ __forceinline__ float tc_mod<float>(float a, float b) { return a - floorf(a / b) * b; }
template <> __device__ __forceinline__ double tc_mod<double>(double a, double b) { return a - floor(a / b) * b; }
template <class T> static __device__ __forceinline__ T tc_max(T a, T b) { return b > a ? b : a; }
template <class T> static __device__ __forceinline__ T tc_min(T a, T b) { return b < a ? b : a; }
template <class T> static __device__ __forceinline__ T tc_abs(T a) { return a < 0 ? T(-a) : a; }
template <class T> static __device__ __forceinline__ T tc_ipow(T a, T b) {
  T r = 1;
  for (; b > 0; --b) r = T(r * a);
  return r;
}
template <class T> static __device__ __forceinline__ T tc_wrap(T i, int n) { return i < 0 ? T(i + n) : i; }
// 16-bit tiles compute in fp32; a cast to f16/bf16 rounds.
static __device__ __forceinline__ float tc_round_f16(float x) { return __half2float(__float2half_rn(x)); }
static __device__ __forceinline__ float tc_round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
"""


@dataclass(frozen=True)
class Param:
    """One C parameter of the generated kernel."""
    decl: str        # the C declaration
    ctype: str       # C type of the value passed
    index: int       # which runtime argument of the kernel it comes from
    role: str        # "data" | "shape" | "stride" | "scalar"
    axis: int = -1


def kernel_symbol(fn: Function) -> str:
    return base.kernel_symbol(fn, python=False)


class CudaRenderer(base.Renderer):
    backend = "cuda"
    comment = "//"
    indent = "  "

    def __init__(self, fn: Function, options: dict):
        reserved = set(C.RESERVED) | {f"t{a}{2 ** i}" for a in "xy" for i in range(12)}
        super().__init__(fn, {"threads": 128, "mma": "simt", "min_blocks": 1, **options}, reserved)
        fn = self.fn
        self.threads = int(self.options["threads"])
        self.plan: Plan = make_plan(fn, self.threads, self.options["mma"])
        self.depth = 1
        self.tx: set[int] = set()   # thread grid widths whose tx / ty something reads
        self.ty: set[int] = set()
        self.synced = False
        self.slot = "0"
        self.values = {p.id: p for p in fn.params}
        for op in fn.walk():
            self.values.update({r.id: r for r in op.results})
            for b in op.blocks:
                self.values.update({a.id: a for a in b.args})
        self.params = self._params()

    # -- output -------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        super().emit(line)
        self.synced = self.synced and line.startswith("//")  # a comment does not end a fenced stretch

    def open(self, line: str) -> None:
        self.emit(line)
        self.depth += 1

    def close(self, n: int = 1) -> None:
        for _ in range(n):
            self.depth -= 1
            self.emit("}")

    def sync(self) -> None:
        if not self.synced:
            self.emit("__syncthreads();")
            self.synced = True

    # -- signature ------------------------------------------------------------------------------
    def _params(self) -> list[Param]:
        out = []
        for i, p in enumerate(self.fn.params):
            n = self.name(p)
            if p.is_tensor:
                out.append(Param(f"{C.storage(p.dtype)}* __restrict__ {n}", f"{C.storage(p.dtype)}*", i, "data"))
                for ax in range(p.type.rank):
                    self.name.taken.add(f"{n}_shape{ax}")
                    out.append(Param(f"int {n}_shape{ax}", "int", i, "shape", ax))
                for ax in range(p.type.rank):
                    self.name.taken.add(f"{n}_stride{ax}")
                    out.append(Param(f"long long {n}_stride{ax}", "long long", i, "stride", ax))
            else:
                out.append(Param(f"{C.work(p.dtype)} {n}", C.work(p.dtype), i, "scalar"))
        return out

    def render(self) -> str:
        fn, plan = self.fn, self.plan
        self.block(fn.body)
        body = self.lines
        uses_wmma = bool(plan.wmma)
        out = self.header() + [
               f"// one block of {self.threads} threads per program; shared memory arena: {plan.arena_bytes} bytes",
               "#if defined(__CUDACC__)",
               "#include <cuda_fp16.h>",
               "#include <cuda_bf16.h>"]
        if uses_wmma:
            out.append("#include <mma.h>")
        out.append("#define TILEC_DYNAMIC_SHARED(name, bytes) extern __shared__ __align__(128) unsigned char name[]")
        out.append("#endif")
        if uses_wmma:
            out.append("using namespace nvcuda;")
        out.append(HELPERS)
        sig = ",\n    ".join(p.decl for p in self.params)
        bounds = f"{self.threads}, {int(self.options['min_blocks'])}"
        out.append(f'extern "C" __global__ void __launch_bounds__({bounds}) {kernel_symbol(fn)}(\n    {sig}) {{')
        if plan.arena_bytes > STATIC_SMEM_PER_BLOCK:  # over the static limit: dynamic, sized at launch
            out.append(f"  TILEC_DYNAMIC_SHARED(tc_smem, {plan.arena_bytes});  // launch with this many bytes")
        elif plan.arena_bytes:
            out.append(f"  __shared__ __align__(128) unsigned char tc_smem[{plan.arena_bytes}];")
        for h, buf in sorted(plan.smem.items(), key=lambda kv: kv[1].offset):
            v = self.values[h]
            out.append(f"  {C.storage(v.dtype)}* const {self.smem_name(v)} = "
                       f"reinterpret_cast<{C.storage(v.dtype)}*>(tc_smem + {buf.offset});"
                       f"  // {v.type}, live at ops {buf.start}..{buf.end}")
        for tn in sorted(self.tx | self.ty):
            if tn in self.tx:
                out.append(f"  const int tx{tn} = threadIdx.x % {tn};")
            if tn in self.ty:
                out.append(f"  const int ty{tn} = threadIdx.x / {tn};")
        out.extend(body)
        out.append("}")
        return "\n".join(out) + "\n"

    def smem_name(self, v: Value) -> str:
        """The arena pointer of a tile's home (scalar reduction results get a one-slot buffer)."""
        h = self.plan.home_of(v)
        home = self.values[h]
        if home.shape == ():
            key = -h - 1
            if key not in self.name.names:
                self.name.names[key] = self.name.fresh(self.name(home) + "_slot")
            return self.name.names[key]
        return self.name(home)

    # -- walking ------------------------------------------------------------------------------------
    def skip(self, op: Op) -> bool:
        return bool(op.results) and op.result.id in self.plan.inline

    def handler(self, op: Op):
        return getattr(self, "op_" + op.kind, self.op_expression)

    # -- the elements a thread owns ------------------------------------------------------------------
    def owned(self, shape: tuple[int, ...], reads: frozenset) -> tuple[list[str], int]:
        """Open loops over this thread's slots of a ``shape`` tile; returns the tile index (one C
        expression per axis) and how many braces to close. Sets ``self.slot``. Only the index
        helpers of the axes in ``reads`` (index_uses.py) and those a bounds test reads are bound."""
        lay = self.plan.layout(shape)
        tn, tm = lay.tn, lay.tm
        last = len(shape) - 1
        need_row = lay.guarded or any(d in reads for d in range(last))
        need_col = lay.guarded or last in reads
        opened = 0
        i = j = None
        if lay.rm > 1:
            i = self.name.fresh("i")
            self.emit("#pragma unroll")
            self.open(f"for (int {i} = 0; {i} < {lay.rm}; ++{i}) {{")
            opened += 1
        if lay.rn > 1:
            j = self.name.fresh("j")
            self.emit("#pragma unroll")
            self.open(f"for (int {j} = 0; {j} < {lay.rn}; ++{j}) {{")
            opened += 1
        row = self.name.fresh("row")
        col = self.name.fresh("col")
        if need_row:
            self.ty.add(tn)
            self.emit(f"const int {row} = ty{tn}" + (f" + {i} * {tm};" if i else ";"))
        if need_col:
            self.tx.add(tn)
            self.emit(f"const int {col} = tx{tn}" + (f" + {j} * {tn};" if j else ";"))
        self.slot = " + ".join(x for x in ([f"{i} * {lay.rn}" if lay.rn > 1 else i] if i else []) + ([j] if j else [])) \
            or "0"
        if lay.guarded:
            self.open(f"if ({row} < {lay.rows} && {col} < {lay.cols}) {{")
            opened += 1
        if len(shape) <= 1:
            return [col][:len(shape)], opened
        idx = []
        lead = shape[:-1]
        for d in range(len(lead)):
            stride = 1
            for s in lead[d + 1:]:
                stride *= s
            e = row if stride == 1 else f"{row} / {stride}"
            if d > 0:
                e = f"({e}) % {lead[d]}"
            idx.append(e if len(lead) == 1 else self._bind(e, "ix", needed=d in reads))
        return idx + [col], opened

    def _bind(self, expr: str, hint: str, ctype: str = "int", needed: bool = True) -> str:
        """A named constant for ``expr`` (named even when not ``needed``, so that the names
        after it do not depend on what is read)."""
        var = self.name.fresh(hint)
        if needed:
            self.emit(f"const {ctype} {var} = {expr};")
        return var

    @staticmethod
    def flat(idx: list[str], shape: tuple[int, ...]) -> str:
        """Row-major offset of ``idx`` (trailing-aligned, size-1 axes broadcast) in ``shape``."""
        own = idx[len(idx) - len(shape):] if shape else []
        terms, stride = [], 1
        for i, s in reversed(list(zip(own, shape))):
            if s != 1:
                terms.append(i if stride == 1 else f"({i}) * {stride}")
            stride *= s
        return " + ".join(reversed(terms)) or "0"

    # -- reading values ------------------------------------------------------------------------------
    def ref(self, v: Value, idx: list[str], ident: bool) -> str:
        if v.id in self.plan.inline:
            return self.expr(v.producer, idx, ident)
        if v.shape == ():
            return self.name(v)
        if self.plan.in_smem(v):
            return C.to_work(f"{self.smem_name(v)}[{self.flat(idx, v.shape)}]", v.dtype)
        if not ident:
            raise TilecError(f"cuda backend: tile {v!r} {v.type} is read across threads but was planned into "
                             f"registers (this is a tilec bug)")
        return f"{self.name(v)}[{self.slot}]"

    def operand(self, op: Op, k: int, idx: list[str], ident: bool) -> str:
        return self.ref(op.operands[k], idx, operand_identity(op, k, ident))

    def expr(self, op: Op, idx: list[str], ident: bool) -> str:
        """The value of expression op ``op`` at tile index ``idx`` (trailing-aligned)."""
        r = op.result
        own = idx[len(idx) - len(r.shape):] if r.shape else []
        k = op.kind
        t = C.work(r.dtype)
        if k == "const":
            return C.literal(op.attrs["value"], r.dtype)
        if k == "full":
            return self.operand(op, 0, own, ident)
        if k == "arange":
            return own[-1]
        if k == "cast":
            x = self.operand(op, 0, own, ident)
            if r.dtype.kind == "bool":
                return f"({x} != 0)"
            if r.dtype.name == "float16":
                return f"tc_round_f16((float)({x}))"
            if r.dtype.name == "bfloat16":
                return f"tc_round_bf16((float)({x}))"
            return f"(({t})({x}))"
        if k == "expand_dims":
            ax = op.attrs["axis"]
            return self.operand(op, 0, own[:ax] + own[ax + 1:], ident)
        if k == "broadcast":
            return self.operand(op, 0, own, ident)
        if k == "where":
            c, a, b = (self.operand(op, i, own, ident) for i in range(3))
            return f"({c} ? {a} : {b})"
        if k == "unary":
            return self._unary(op.attrs["op"], self.operand(op, 0, own, ident), r.dtype)
        if k == "binary":
            a, b = (self.operand(op, i, own, ident) for i in range(2))
            return self._binary(op.attrs["op"], a, b, op.operands[0].dtype, r.dtype)
        if k == "trans":
            return self.operand(op, 0, [own[1], own[0]], ident)
        if k == "from_quads":
            return self.operand(op, 0, [f"(({own[0]}) >> 2)", f"(4 * ({own[1]}) + (({own[0]}) & 3))"], ident)
        if k == "reshape":
            src = op.operands[0].shape
            f = self.flat(own, r.shape)
            sidx, stride = [], 1
            for s in reversed(src):
                sidx.append(f"(({f}) / {stride}) % {s}" if stride > 1 else f"({f}) % {s}")
                stride *= s
            return self.operand(op, 0, list(reversed(sidx)), ident)
        if k == "gather":
            src = op.operands[0]
            ax = op.attrs["axis"]
            at = self.operand(op, 1, own, ident)
            sidx = list(own)
            sidx[ax] = f"tc_wrap({at}, {src.shape[ax]})"
            return self.operand(op, 0, sidx, ident)
        raise TilecError(f"cuda backend cannot render {k} as an expression")

    def _unary(self, u: str, x: str, d) -> str:
        t = C.work(d)
        dbl = d.name == "float64"
        if u == "neg":
            return f"(({t})(-{x}))" if d.is_int and d.bits < 32 else f"(-{x})"
        if u == "not":
            return f"(!{x})" if d.kind == "bool" else f"(({t})(~{x}))"
        if u == "abs":
            return (f"fabs({x})" if dbl else f"fabsf({x})") if d.is_float else f"tc_abs<{t}>({x})"
        if u == "sigmoid":
            return f"(1.0 / (1.0 + exp(-({x}))))" if dbl else f"(1.0f / (1.0f + expf(-({x}))))"
        if u in _MATH:
            return f"{u}{'' if dbl else 'f'}({x})"
        raise TilecError(f"cuda backend: unknown unary op {u!r}")

    def _binary(self, o: str, a: str, b: str, operand_dtype, result_dtype) -> str:
        t = C.work(operand_dtype)
        if o in COMPARE_OPS:
            return f"({a} {_SYM[o]} {b})"
        if o in ("max", "min"):
            return f"tc_{o}<{t}>({a}, {b})"
        if o in ("floordiv", "mod"):
            return f"tc_{o}<{t}>({a}, {b})"
        if o == "pow":
            if operand_dtype.is_float:
                return f"pow({a}, {b})" if operand_dtype.name == "float64" else f"powf({a}, {b})"
            return f"tc_ipow<{t}>({a}, {b})"
        text = f"({a} {_SYM[o]} {b})"
        if result_dtype.kind == "bool" or (result_dtype.is_int and result_dtype.bits < 32):
            return f"(({C.work(result_dtype)}){text})"  # C promotes to int: keep the IR's width
        return text

    # -- writing values ------------------------------------------------------------------------------
    def declare(self, v: Value) -> None:
        """Register storage for a tile (nothing for smem homes, which live in the arena)."""
        if v.shape == ():
            self.emit(f"{C.work(v.dtype)} {self.name(v)};")
        elif not self.plan.in_smem(v):
            self.emit(f"{C.work(v.dtype)} {self.name(v)}[{self.plan.layout(v.shape).elems}];")

    def assign_reads(self, v: Value) -> frozenset:
        return flat_reads(axes(len(v.shape)), v.shape) if self.plan.in_smem(v) else frozenset()

    def assign(self, v: Value, idx: list[str], expr: str) -> None:
        if self.plan.in_smem(v):
            self.emit(f"{self.smem_name(v)}[{self.flat(idx, v.shape)}] = {C.to_storage(expr, v.dtype)};")
        else:
            self.emit(f"{self.name(v)}[{self.slot}] = {expr};")

    def produce(self, v: Value, compute, reads: frozenset) -> None:
        """Compute a tile over the owned elements: ``compute(idx)`` gives the C expression
        (and may emit statements first) and reads the axes ``reads``."""
        smem = self.plan.in_smem(v)
        if smem:
            self.sync()  # earlier readers of these bytes are done
        else:
            self.declare(v)
        idx, opened = self.owned(v.shape, reads | self.assign_reads(v))
        self.assign(v, idx, compute(idx))
        self.close(opened)
        if smem:
            self.sync()

    def copy(self, pairs: list[tuple[Value, Value]]) -> None:
        """Parallel assignment ``dst_i = src_i`` (loop-carried and branch results)."""
        pairs = [(d, s) for d, s in pairs if self.plan.home_of(d) != self.plan.home_of(s) or s.id in self.plan.inline]
        scalars = [(d, s) for d, s in pairs if d.shape == ()]
        temps = [self._bind(self.ref(s, [], True), "next", C.work(d.dtype)) if len(scalars) > 1 else
                 self.ref(s, [], True) for d, s in scalars]
        for (d, _), t in zip(scalars, temps):
            self.emit(f"{self.name(d)} = {t};")
        shapes = sorted({d.shape for d, _ in pairs if d.shape != ()})
        for shape in shapes:
            group = [(d, s) for d, s in pairs if d.shape == shape]
            smem = any(self.plan.in_smem(d) for d, _ in group)
            if smem:
                self.sync()
            at = axes(len(shape))
            reads = frozenset().union(*(value_reads(self.plan, s, at, True) | self.assign_reads(d) for d, s in group))
            idx, opened = self.owned(shape, reads)
            vals = [self.ref(s, idx, True) for _, s in group]
            if len(group) > 1:
                vals = [self._bind(x, "next", C.work(d.dtype)) for (d, _), x in zip(group, vals)]
            for (d, _), x in zip(group, vals):
                self.assign(d, idx, x)
            self.close(opened)
            if smem:
                self.sync()

    # -- ops ------------------------------------------------------------------------------------
    def op_expression(self, op: Op) -> None:
        r = op.result
        if r.shape == ():
            self.emit(f"const {C.work(r.dtype)} {self.name(r)} = {self.expr(op, [], True)};")
            return
        self.produce(r, lambda idx: self.expr(op, idx, True), expr_reads(self.plan, op, axes(len(r.shape)), True))

    def op_const(self, op: Op) -> None:
        self.name.alias(op.result, C.literal(op.attrs["value"], op.result.dtype))

    def op_program_id(self, op: Op) -> None:
        self.name.alias(op.result, f"(int)blockIdx.{'xyz'[op.attrs['axis']]}")

    def op_num_programs(self, op: Op) -> None:
        self.name.alias(op.result, f"(int)gridDim.{'xyz'[op.attrs['axis']]}")

    def op_dim(self, op: Op) -> None:
        self.name.alias(op.result, f"{self.name(op.operands[0])}_shape{op.attrs['axis']}")

    def op_limit(self, op: Op) -> None:
        """A pointer alias with its own extents (the bounded ones cut) and the same strides."""
        src, r = op.operands[0], op.result
        s, n = self.name(src), self.name(r)
        bounds = dict(zip(op.attrs["axes"], op.operands[1:]))
        self.emit(f"{C.storage(src.dtype)}* {n} = {s};")
        for ax in range(src.type.rank):
            self.name.taken.update([f"{n}_shape{ax}", f"{n}_stride{ax}"])
            extent = f"min({s}_shape{ax}, (int){self.name(bounds[ax])})" if ax in bounds else f"{s}_shape{ax}"
            self.emit(f"const int {n}_shape{ax} = {extent};")
            self.emit(f"const long long {n}_stride{ax} = {s}_stride{ax};")

    def _address(self, tensor: Value, offsets: list[Value], box: tuple, tile_idx: list[str]) -> tuple[str, str]:
        """(in-bounds test, element offset) of the tensor element under tile index ``tile_idx``."""
        tname = self.name(tensor)
        conds, terms, t = [], [], 0
        for ax, (off, ext) in enumerate(zip(offsets, box)):
            g = f"(long long){self.name(off)}"
            if ext is not None:
                g = self._bind(f"{g} + {tile_idx[t]}", f"g{ax}", "long long")
                t += 1
            conds.append(f"{g} >= 0 && {g} < {tname}_shape{ax}")
            terms.append(f"{g} * {tname}_stride{ax}")
        return " && ".join(conds) or "true", " + ".join(terms) or "0"

    def op_load(self, op: Op) -> None:
        tensor, offsets = op.operands[0], op.operands[1:]
        r = op.result
        pad = op.attrs["padding"]
        pad = C.literal(pad if r.dtype.is_float else int(pad), r.dtype)
        tname = self.name(tensor)

        def element(idx: list[str]) -> str:
            ok, at = self._address(tensor, offsets, op.attrs["box"], idx)
            return f"({ok}) ? {C.to_work(f'{tname}[{at}]', tensor.dtype)} : {pad}"

        if r.shape == ():
            self.emit(f"const {C.work(r.dtype)} {self.name(r)} = {element([])};")
        else:
            self.produce(r, element, frozenset(range(len(r.shape))))   # the address reads every axis

    def op_store(self, op: Op) -> None:
        tensor, offsets, value = op.operands[0], op.operands[1:-1], op.operands[-1]
        tname = self.name(tensor)
        if value.shape == ():
            self.open("if (threadIdx.x == 0) {")
            ok, at = self._address(tensor, offsets, op.attrs["box"], [])
            self.emit(f"if ({ok}) {tname}[{at}] = {C.to_storage(self.ref(value, [], True), tensor.dtype)};")
            self.close()
            return
        idx, opened = self.owned(value.shape, frozenset(range(len(value.shape))))
        ok, at = self._address(tensor, offsets, op.attrs["box"], idx)
        self.emit(f"if ({ok}) {tname}[{at}] = {C.to_storage(self.ref(value, idx, True), tensor.dtype)};")
        self.close(opened)

    def op_reduce(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        axis, kind, keep = op.attrs["axis"], op.attrs["op"], op.attrs["keepdims"]
        length = x.shape[axis]
        outs = max(1, r.type.numel)
        lanes = 1  # lanes per output element: a power of two, within a warp
        while lanes * 2 <= min(WARP, max(1, self.threads // outs)) and lanes < length:
            lanes *= 2
        groups = self.threads // lanes
        t = C.work(r.dtype)
        init = {"sum": C.literal(0, r.dtype), "max": C.lowest(r.dtype), "min": C.highest(r.dtype)}[kind]

        def combine(a: str, b: str) -> str:
            if kind == "sum":
                return f"(({t})({a} + {b}))" if r.dtype.is_int and r.dtype.bits < 32 else f"{a} + {b}"
            return f"tc_{kind}<{t}>({a}, {b})"

        out = self.smem_name(r)
        self.emit(f"// {kind} over axis {axis} of {x.type}: {lanes} lane(s) per output element, warp shuffles")
        self.sync()
        self.open("{")
        lane, grp, q, o, j, acc = (self.name.fresh(s) for s in ("lane", "grp", "q", "o", "j", "part"))
        self.emit(f"const int {lane} = threadIdx.x % {lanes}, {grp} = threadIdx.x / {lanes};")
        rounds = -(-outs // groups)
        if rounds > 1:
            self.emit("#pragma unroll")
        self.open(f"for (int {q} = 0; {q} < {rounds}; ++{q}) {{")
        self.emit(f"const int {o} = {grp} + {q} * {groups};")
        self.emit(f"{t} {acc} = {init};")
        self.open(f"if ({o} < {outs}) {{")
        out_shape = r.shape
        out_idx, stride = [], 1
        for s in reversed(out_shape):
            out_idx.append(f"({o} / {stride}) % {s}" if stride > 1 else f"{o} % {s}")
            stride *= s
        out_idx.reverse()
        in_idx = list(out_idx)
        if keep:
            in_idx[axis] = j
        else:
            in_idx.insert(axis, j)
        self.open(f"for (int {j} = {lane}; {j} < {length}; {j} += {lanes}) {{")
        self.emit(f"{acc} = {combine(acc, self.ref(x, in_idx, False))};")
        self.close(2)
        off = lanes // 2
        while off >= 1:
            if t in _SHUFFLE_TYPES:
                other = f"__shfl_xor_sync(0xffffffffu, {acc}, {off})"
            else:
                other = f"({t})__shfl_xor_sync(0xffffffffu, (int){acc}, {off})"
            self.emit(f"{acc} = {combine(acc, other)};")
            off //= 2
        self.emit(f"if ({o} < {outs} && {lane} == 0) {out}[{o}] = {C.to_storage(acc, r.dtype)};")
        self.close(2)
        self.sync()
        if r.shape == ():
            self.emit(f"const {t} {self.name(r)} = {C.to_work(f'{out}[0]', r.dtype)};")

    def op_dot(self, op: Op) -> None:
        if op.result.id in self.plan.wmma:
            return self._dot_wmma(op)
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        (m, k), n = a.shape, b.shape[1]
        lay = self.plan.layout((m, n))
        self.tx.add(lay.tn)
        self.ty.add(lay.tn)
        t = C.work(r.dtype)
        smem_out = self.plan.in_smem(r)
        regs = self.name.fresh(self.name(r) + "_regs") if smem_out else self.name(r)
        self.emit(f"// dot {a.type} @ {b.type}: SIMT, {lay.rm}x{lay.rn} outputs per thread")
        self.emit(f"{t} {regs}[{lay.elems}];")
        idx, opened = self.owned((m, n), value_reads(self.plan, acc, axes(2), True) if acc is not None else frozenset())
        self.emit(f"{regs}[{self.slot}] = {self.ref(acc, idx, True) if acc is not None else C.literal(0, r.dtype)};")
        self.close(opened)
        kk, i, j, av, bv = (self.name.fresh(s) for s in ("kk", "i", "j", "a_col", "b_row"))
        row = f"ty{lay.tn} + {i} * {lay.tm}"
        col = f"tx{lay.tn} + {j} * {lay.tn}"
        if lay.rows % lay.tm:
            row = f"min({row}, {m - 1})"
        if lay.cols % lay.tn:
            col = f"min({col}, {n - 1})"
        if a.dtype.is_int and b.dtype.is_int and a.dtype.bits == b.dtype.bits == 8 and k % 4 == 0:
            self._dot_bytes(a, b, regs, lay, row, col, (k, n), (i, j, kk))
        else:
            self._dot_simt_loop(a, b, regs, lay, row, col, (k, n), (i, j, kk, av, bv), t)
        if smem_out:
            self.produce(r, lambda _idx: f"{regs}[{self.slot}]", frozenset())

    def _dot_bytes(self, a: Value, b: Value, regs: str, lay, row: str, col: str, kn, names) -> None:
        """A dot of 8-bit ints: four products per dp4a (PTX dp4a.{s,u}32.{s,u}32, int32 sums;
        the emulation's C++ sums the same four products)."""
        (k, n), (i, j, kk) = kn, names
        a4, b4, q = (self.name.fresh(s) for s in ("a4", "b4", "q"))
        sa, sb = ("s32" if v.dtype.kind == "int" else "u32" for v in (a, b))
        ca, cb = ("signed char" if v.dtype.kind == "int" else "unsigned char" for v in (a, b))

        def packed(elem) -> str:   # four bytes, the lowest k first
            return " | ".join(f"((unsigned int)(unsigned char){elem(d)} << {8 * d})" for d in range(4))
        self.emit("#pragma unroll 2")
        self.open(f"for (int {kk} = 0; {kk} < {k}; {kk} += 4) {{")
        self.emit(f"unsigned int {a4}[{lay.rm}], {b4}[{lay.rn}];")
        self.emit("#pragma unroll")
        self.emit(f"for (int {i} = 0; {i} < {lay.rm}; ++{i}) {a4}[{i}] = "
                  f"{packed(lambda d: f'{self.smem_name(a)}[({row}) * {k} + {kk} + {d}]')};")
        self.emit("#pragma unroll")
        self.emit(f"for (int {j} = 0; {j} < {lay.rn}; ++{j}) {b4}[{j}] = "
                  f"{packed(lambda d: f'{self.smem_name(b)}[({kk} + {d}) * {n} + {col}]')};")
        self.emit("#pragma unroll")
        self.open(f"for (int {i} = 0; {i} < {lay.rm}; ++{i}) {{")
        self.emit("#pragma unroll")
        self.open(f"for (int {j} = 0; {j} < {lay.rn}; ++{j}) {{")
        self.emit("#if defined(__CUDA_ARCH__)")
        self.emit(f'asm("dp4a.{sa}.{sb} %0, %1, %2, %0;" : "+r"({regs}[{i} * {lay.rn} + {j}]) : "r"({a4}[{i}]), "r"({b4}[{j}]));')
        self.emit("#else")
        self.emit(f"for (int {q} = 0; {q} < 4; ++{q}) {regs}[{i} * {lay.rn} + {j}] += "
                  f"(int)({ca})({a4}[{i}] >> (8 * {q})) * (int)({cb})({b4}[{j}] >> (8 * {q}));")
        self.emit("#endif")
        self.close(3)

    def _dot_simt_loop(self, a: Value, b: Value, regs: str, lay, row: str, col: str, kn, names, t: str) -> None:
        (k, n), (i, j, kk, av, bv) = kn, names
        self.emit("#pragma unroll 4")
        self.open(f"for (int {kk} = 0; {kk} < {k}; ++{kk}) {{")
        self.emit(f"{t} {av}[{lay.rm}], {bv}[{lay.rn}];")
        self.emit("#pragma unroll")
        self.emit(f"for (int {i} = 0; {i} < {lay.rm}; ++{i}) {av}[{i}] = "
                  f"{C.to_work(f'{self.smem_name(a)}[({row}) * {k} + {kk}]', a.dtype)};")
        self.emit("#pragma unroll")
        self.emit(f"for (int {j} = 0; {j} < {lay.rn}; ++{j}) {bv}[{j}] = "
                  f"{C.to_work(f'{self.smem_name(b)}[{kk} * {n} + {col}]', b.dtype)};")
        self.emit("#pragma unroll")
        self.open(f"for (int {i} = 0; {i} < {lay.rm}; ++{i}) {{")
        self.emit("#pragma unroll")
        self.emit(f"for (int {j} = 0; {j} < {lay.rn}; ++{j}) {regs}[{i} * {lay.rn} + {j}] += {av}[{i}] * {bv}[{j}];")
        self.close(2)

    def _dot_wmma(self, op: Op) -> None:
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        (m, k), n = a.shape, b.shape[1]
        frag = C.storage(a.dtype)
        pieces, warps = (m // 16) * (n // 16), self.threads // WARP
        out = self.smem_name(r)
        self.emit(f"// dot {a.type} @ {b.type}: WMMA 16x16x16, {pieces} output fragments over {warps} warps")
        self.sync()
        self.open("{")
        w, f, fm, fn_, kk, c, fa, fb = (self.name.fresh(s) for s in ("warp", "frag", "fm", "fn", "kk", "c_frag",
                                                                      "a_frag", "b_frag"))
        self.emit(f"const int {w} = threadIdx.x / {WARP};")
        self.open(f"for (int {f} = {w}; {f} < {pieces}; {f} += {warps}) {{")
        self.emit(f"const int {fm} = {f} / {n // 16}, {fn_} = {f} % {n // 16};")
        self.emit(f"wmma::fragment<wmma::accumulator, 16, 16, 16, float> {c};")
        if acc is not None:
            self.emit(f"wmma::load_matrix_sync({c}, {self.smem_name(acc)} + {fm} * {16 * n} + {fn_} * 16, {n}, "
                      f"wmma::mem_row_major);")
        else:
            self.emit(f"wmma::fill_fragment({c}, 0.0f);")
        self.emit("// not unrolled: each unrolled step would keep its own fragments live (~2x the registers)")
        self.emit("#pragma unroll 1")
        self.open(f"for (int {kk} = 0; {kk} < {k}; {kk} += 16) {{")
        self.emit(f"wmma::fragment<wmma::matrix_a, 16, 16, 16, {frag}, wmma::row_major> {fa};")
        self.emit(f"wmma::fragment<wmma::matrix_b, 16, 16, 16, {frag}, wmma::row_major> {fb};")
        self.emit(f"wmma::load_matrix_sync({fa}, {self.smem_name(a)} + {fm} * {16 * k} + {kk}, {k});")
        self.emit(f"wmma::load_matrix_sync({fb}, {self.smem_name(b)} + {kk} * {n} + {fn_} * 16, {n});")
        self.emit(f"wmma::mma_sync({c}, {fa}, {fb}, {c});")
        self.close()
        self.emit(f"wmma::store_matrix_sync({out} + {fm} * {16 * n} + {fn_} * 16, {c}, {n}, wmma::mem_row_major);")
        self.close(2)
        self.sync()

    def op_for(self, op: Op) -> None:
        start, stop, step = op.operands[:3]
        body = op.blocks[0]
        iv, carried = body.args[0], body.args[1:]
        for arg, res in zip(carried, op.results):
            self.name.alias(arg, self.name(res))
            self.declare(res)
        self.copy(list(zip(op.results, op.operands[3:])))
        p = step.producer
        s = p.attrs["value"] if p is not None and p.kind == "const" else None
        it = C.work(iv.dtype)
        i = self.name(iv)
        test = f"{i} < {self.name(stop)}" if s is None or s > 0 else f"{i} > {self.name(stop)}"
        if s is None:
            test = f"({self.name(step)} > 0 ? {i} < {self.name(stop)} : {i} > {self.name(stop)})"
        self.open(f"for ({it} {i} = {self.name(start)}; {test}; {i} += {self.name(step)}) {{")
        self.block(body)
        self.copy([(res, y) for res, y, arg in zip(op.results, body.yields, carried) if y is not arg])
        self.close()

    def op_if(self, op: Op) -> None:
        for res in op.results:
            self.declare(res)
        self.open(f"if ({self.name(op.operands[0])}) {{")
        self.block(op.blocks[0])
        self.copy(list(zip(op.results, op.blocks[0].yields)))
        self.depth -= 1
        self.open("} else {")
        self.block(op.blocks[1])
        self.copy(list(zip(op.results, op.blocks[1].yields)))
        self.close()


def render(fn: Function, options: dict) -> str:
    return CudaRenderer(fn, options).render()
