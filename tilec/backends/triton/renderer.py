"""Render tile IR as ``@triton.jit`` source.

Every tensor parameter ``A`` of rank r becomes ``A, A_shape0.., A_stride0..`` (pointer,
extents, element strides), so loads and stores are plain pointer blocks whose masks come
from the IR's boxes: ``A + rows[:, None] * A_stride0 + cols[None, :] * A_stride1`` masked by
``rows < A_shape0`` etc. Tile sizes are literals in the source (constexprs are folded in the
IR), so the kernel has no constexpr parameters.

Triton differs from the IR in a few places the renderer bridges explicitly:
- tile extents must be powers of two: other extents are padded up (masked where lanes mix);
- ``//`` and ``%`` on integers truncate; the IR follows Python (floor);
- 16-bit floats: loads and stores keep the storage type and ``tl.dot`` takes them as they
  are; elementwise math on them runs in fp32 (the IR's "compute in fp32 inside tiles");
- ``tl.dot`` needs every extent >= 16 (inner >= 32 for 8-bit); smaller dots become a
  broadcast-multiply-sum, or, for floats whose product would crowd registers, a tl.dot on
  operands zero-padded to 16.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import TilecError
from ...ir import Block, Function, Op, Value, const_value, uses
from ..naming import Namer
from ..render import INFIX, Renderer, kernel_symbol

# IR dtype name -> triton.language type
TL_TYPE = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float64": "tl.float64",
           "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "int64": "tl.int64",
           "uint8": "tl.uint8", "uint16": "tl.uint16", "uint32": "tl.uint32", "bool": "tl.int1"}
# IR dtype name -> the type string Triton's signatures use (offline compile)
SIG_TYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "i8",
            "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32",
            "bool": "i1"}
_SIXTEEN = ("tl.float16", "tl.bfloat16")
_INFIX = INFIX
_UNARY = {"exp": "tl.exp({})", "exp2": "tl.exp2({})", "log": "tl.log({})", "log2": "tl.log2({})",
          "sqrt": "tl.sqrt_rn({})", "rsqrt": "tl.rsqrt({})", "abs": "tl.abs({})", "floor": "tl.floor({})",
          "ceil": "tl.ceil({})", "sigmoid": "tl.sigmoid({})", "erf": "tl.erf({})", "sin": "tl.sin({})",
          "cos": "tl.cos({})"}
_REDUCE = {"sum": "tl.sum", "max": "tl.max", "min": "tl.min"}
_SPECIAL_FLOATS = {"inf": "INF", "-inf": "NEG_INF", "nan": "NAN"}
_ONE_STATEMENT = {"dot", "binary", "unary", "where", "reduce", "broadcast", "full"}  # kinds rendered as one assignment
DOT_MIN = 16     # tl.dot's smallest extent on every axis
DOT_MIN_K8 = 32  # ... and its smallest inner extent for 8-bit operands (the GPU compile rejects 16)
BROADCAST_PER_THREAD = 64  # a smaller float dot as a broadcast product only up to this many per thread


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def pow2(n: int) -> int:
    """The power-of-two extent that holds a tile extent ``n`` in Triton."""
    return 1 << (n - 1).bit_length()


def padded(shape: tuple) -> tuple:
    return tuple(pow2(s) for s in shape)


def _scaled(expr: str, factor: int) -> str:
    return expr if factor == 1 else f"{expr} * {factor}"


def tensor_arg_names(fn: Function) -> list[tuple[Value, str, list[str], list[str]]]:
    """(param, pointer name, shape names, stride names) for every tensor parameter, in order;
    scalars get empty shape/stride lists. This is the generated kernel's signature."""
    namer = Namer({"tl", "triton", "range", "float", "INF", "NEG_INF", "NAN"})
    out = []
    for p in fn.params:
        base = namer(p)
        if p.is_tensor:
            r = p.type.rank
            out.append((p, base, [namer.fresh(f"{base}_shape{i}") for i in range(r)],
                        [namer.fresh(f"{base}_stride{i}") for i in range(r)]))
        else:
            out.append((p, base, [], []))
    return out


class TritonRenderer(Renderer):
    backend = "triton"

    def __init__(self, fn: Function, options: dict, interpreter: bool = False):
        super().__init__(fn, options, {"tl", "triton", "range", "float", "INF", "NEG_INF", "NAN"})
        fn = self.fn
        self.interpreter = interpreter
        self.held: dict[int, str] = {}        # value id -> the Triton type the variable has
        self.nonneg: set[int] = set()
        self.zero_padded: set[int] = set()    # tiles whose padded lanes are known to be 0         # scalars known to be >= 0 (their masks skip the low side)
        self.specials: set[str] = set()
        self.count = uses(fn)                 # value id -> number of readers
        self.shape_of: dict[int, list[str]] = {}
        self.stride_of: dict[int, list[str]] = {}
        self.signature: list[str] = []
        for p, base, shapes, strides in tensor_arg_names(fn):
            self.name.alias(p, base)
            self.name.taken.update([base, *shapes, *strides])
            self.signature += [base, *shapes, *strides]
            if p.is_tensor:
                self.shape_of[p.id], self.stride_of[p.id] = shapes, strides
            else:
                self.held[p.id] = TL_TYPE[p.dtype.name]

    # -- output -------------------------------------------------------------------------------
    def render(self) -> str:
        fn = self.fn
        self.depth = 1
        self.block(fn.body)
        if len(self.lines) == 0:
            self.emit("pass")
        mode = " for the CPU interpreter" if self.interpreter else ""
        head = self.header(mode) + [
                "import triton",
                "import triton.language as tl",
                ""]
        consts = {"INF": 'float("inf")', "NEG_INF": 'float("-inf")', "NAN": 'float("nan")'}
        head += [f"{s} = tl.constexpr({consts[s]})" for s in sorted(self.specials)]
        head += ["", "", "@triton.jit", f"def {kernel_symbol(fn)}({', '.join(self.signature)}):"]
        return "\n".join(head + self.lines) + "\n"

    def fail(self, op: Op, message: str):
        raise TilecError(f"triton backend: {message}", op.loc or None)

    # -- values -------------------------------------------------------------------------------
    def define(self, v: Value, expr: str, held: str | None = None) -> str:
        name = self.name(v)
        self.emit(f"{name} = {expr}")
        self.held[v.id] = held or TL_TYPE[v.dtype.name]
        return name

    def ref(self, v: Value) -> str:
        return self.name(v)

    def f32(self, v: Value) -> str:
        """``v`` for arithmetic: 16-bit floats widen to fp32 first."""
        if self.held.get(v.id) in _SIXTEEN:
            return self.convert(v, "tl.float32")
        return self.name(v)

    def as_type(self, v: Value, held: str) -> str:
        """``v`` converted to the Triton type ``held`` when it is held differently."""
        return self.name(v) if self.held.get(v.id) == held else self.convert(v, held)

    def convert(self, v: Value, t: str) -> str:
        # scalars may be Python ints in the interpreter (loop indices) or constexprs: tl.cast takes both
        return f"tl.cast({self.name(v)}, {t})" if not v.shape else f"{self.name(v)}.to({t})"

    def work_type(self, v: Value) -> str:
        """Type a variable carried across loop iterations or branches must have: 16-bit
        floats travel as fp32 so every assignment agrees."""
        t = TL_TYPE[v.dtype.name]
        return "tl.float32" if t in _SIXTEEN else t

    def aligned(self, v: Value, rank: int) -> str:
        """``v`` (as for arithmetic) with leading unit axes up to ``rank`` (NumPy broadcasting)."""
        expr = self.f32(v)
        missing = rank - len(v.shape)
        if v.shape and missing > 0:
            expr = f"{expr}[{', '.join(['None'] * missing + [':'] * len(v.shape))}]"
        return expr

    def literal(self, value, dtype) -> str:
        if dtype.kind == "bool":
            return "True" if value else "False"
        if dtype.is_float:
            text = repr(float(value))
            if text in _SPECIAL_FLOATS:
                self.specials.add(_SPECIAL_FLOATS[text])
                text = _SPECIAL_FLOATS[text]
            return text if dtype.name == "float32" else f"tl.full((), {text}, {TL_TYPE[dtype.name]})"
        return str(int(value)) if dtype.name == "int32" else f"tl.full((), {int(value)}, {TL_TYPE[dtype.name]})"

    # -- scalars ------------------------------------------------------------------------------
    def op_const(self, op: Op) -> None:
        r = op.result
        value = op.attrs["value"]
        text = self.literal(value, r.dtype)
        # literals (and typed ``tl.full((), v, T)`` scalars) are written where they are used
        self.name.alias(r, f"({text})" if text.startswith("-") else text)
        self.held[r.id] = TL_TYPE[r.dtype.name]
        if not r.dtype.is_float and r.dtype.kind != "bool" and int(value) >= 0:
            self.nonneg.add(r.id)

    def op_program_id(self, op: Op) -> None:
        self.name.alias(op.result, self.name.fresh(f"pid_{op.attrs['axis']}"))
        self.define(op.result, f"tl.program_id({op.attrs['axis']})")
        self.nonneg.add(op.result.id)

    def op_num_programs(self, op: Op) -> None:
        self.define(op.result, f"tl.num_programs({op.attrs['axis']})")
        self.nonneg.add(op.result.id)

    def op_dim(self, op: Op) -> None:
        self.name.alias(op.result, self.shape_of[op.operands[0].id][op.attrs["axis"]])
        self.held[op.result.id] = "tl.int32"
        self.nonneg.add(op.result.id)

    # -- padding -------------------------------------------------------------------------------
    # Triton tiles have power-of-two extents. A tile of extent E is held in pow2(E) lanes;
    # lanes past E hold anything and only matter where lanes mix: reductions and dot's inner
    # axis see them masked to a neutral value, gather indices are masked to 0, and loads and
    # stores are masked to the logical box.
    def valid(self, shape: tuple, axis: int) -> str:
        """Bool tile (broadcastable to ``padded(shape)``) that is true on lanes < extent of ``axis``."""
        rank = len(shape)
        view = "" if rank == 1 else f"[{', '.join(':' if d == axis else 'None' for d in range(rank))}]"
        return f"(tl.arange(0, {pow2(shape[axis])}){view} < {shape[axis]})"

    def masked(self, expr: str, shape: tuple, axes: list[int], fill: str) -> str:
        """``expr`` with the padded lanes of ``axes`` replaced by ``fill``."""
        conds = [self.valid(shape, d) for d in axes if not is_pow2(shape[d])]
        return f"tl.where({' & '.join(conds)}, {expr}, {fill})" if conds else expr

    def identity(self, kind: str, dtype) -> str:
        if kind == "sum":
            return "0"
        if dtype.is_float:
            self.specials.add("NEG_INF" if kind == "max" else "INF")
            return "NEG_INF" if kind == "max" else "INF"
        info = np.iinfo(dtype.numpy)
        return str(info.min if kind == "max" else info.max)

    # -- tile constructors ---------------------------------------------------------------------

    def op_full(self, op: Op) -> None:
        r = op.result
        src = op.operands[0]
        t = self.work_type(r)
        if not r.shape:
            self.define(r, self.as_type(src, t), t)
        else:
            self.define(r, f"tl.full({padded(r.shape)}, {self.f32(src)}, {t})", t)

    def op_arange(self, op: Op) -> None:
        self.define(op.result, f"tl.arange(0, {pow2(op.attrs['n'])})")
        self.nonneg.add(op.result.id)

    # -- elementwise ----------------------------------------------------------------------------
    def op_cast(self, op: Op) -> None:
        src, r = op.operands[0], op.result
        target = TL_TYPE[r.dtype.name]
        if self.held.get(src.id) == target:  # e.g. an fp16 product already held in fp32
            self.name.alias(r, self.name(src))
            self.held[r.id] = target
        elif r.dtype.kind == "bool":
            self.define(r, f"{self.ref(src)} != 0")
        else:
            self.define(r, self.convert(src, target), target)

    def op_unary(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        u = op.attrs["op"]
        a = self.f32(x)
        t = self.work_type(r)
        if u == "neg":
            expr = f"-{a}"
        elif u == "not":
            expr = f"{a} == 0" if r.dtype.kind == "bool" else f"~{a}"
        elif u == "tanh":  # no tl.tanh (libdevice is GPU-only); this form saturates cleanly
            expr = f"1.0 - 2.0 / (tl.exp(2.0 * {a}) + 1.0)"
        elif u == "abs" and not r.dtype.is_float:
            expr = f"tl.where({a} < 0, -{a}, {a})"
        else:
            expr = _UNARY[u].format(a)
        self.define(r, expr, t)

    def op_binary(self, op: Op) -> None:
        a_v, b_v = op.operands
        r = op.result
        o = op.attrs["op"]
        rank = len(r.shape)
        a, b = self.aligned(a_v, rank), self.aligned(b_v, rank)
        t = self.work_type(r)
        is_int = a_v.dtype.is_int
        signed = a_v.dtype.kind == "int"
        if o in ("max", "min"):
            self.define(r, f"tl.{o}imum({a}, {b})", t)
        elif o == "floordiv" and not is_int:
            self.define(r, f"tl.floor({a} / {b})", t)
        elif o == "floordiv":
            q = self.define(r, f"{a} // {b}", t)
            if signed and not self.positive_over_positive(a_v, b_v):
                # C truncation -> Python floor: one lower where inexact and the signs differ
                differ = f"({a} < 0)" if self.positive_const(b_v) else f"(({a} < 0) != ({b} < 0))"
                self.emit(f"{q} = {q} - tl.cast(({q} * {b} != {a}) & {differ}, {t})")
        elif o == "mod" and not is_int:
            self.define(r, f"{a} - tl.floor({a} / {b}) * {b}", t)
        elif o == "mod":
            m = self.define(r, f"{a} % {b}", t)
            if signed and not self.positive_over_positive(a_v, b_v):
                # a Python remainder takes the divisor's sign
                differ = f"({m} < 0)" if self.positive_const(b_v) else f"({m} != 0) & (({m} < 0) != ({b} < 0))"
                self.emit(f"{m} = {m} + tl.cast(tl.where({differ}, {b}, 0), {t})")
        elif o == "pow":
            if is_int:
                self.fail(op, "integer ** is not supported by the triton backend; cast to float first")
            self.render_pow(r, a, b)
        else:
            self.define(r, f"{a} {_INFIX[o]} {b}", t if o not in ("lt", "le", "gt", "ge", "eq", "ne") else "tl.int1")
        keeps_sign = o in ("add", "mul", "floordiv", "mod", "max", "shr", "and")
        if keeps_sign and all(v.id in self.nonneg for v in op.operands):
            self.nonneg.add(r.id)

    def positive_const(self, v: Value) -> bool:
        c = const_value(v)
        return c is not None and c > 0

    def positive_over_positive(self, a: Value, b: Value) -> bool:
        """Truncating and flooring division agree: a >= 0 and b > 0."""
        return a.id in self.nonneg and self.positive_const(b)

    def render_pow(self, r: Value, a: str, b: str) -> None:
        """Python's float ** without libdevice: exp2(b log2|a|), the sign from odd integer
        exponents of negative bases, NaN for other negative bases, and x ** 0 == 1."""
        mag = self.name.fresh(self.name(r) + "_mag")
        self.emit(f"{mag} = tl.exp2({b} * tl.log2(tl.abs({a})))")
        self.specials.add("NAN")
        whole = f"(tl.floor({b}) == {b})"
        odd = f"(tl.floor({b} * 0.5) * 2.0 != {b})"
        self.define(r, f"tl.where({b} == 0, 1.0, tl.where({a} < 0, tl.where({whole}, tl.where({odd}, -{mag}, {mag}), "
                       f"NAN), {mag}))", self.work_type(r))

    def op_where(self, op: Op) -> None:
        c, a, b = op.operands
        rank = len(op.result.shape)
        self.define(op.result, f"tl.where({self.aligned(c, rank)}, {self.aligned(a, rank)}, {self.aligned(b, rank)})",
                    self.work_type(op.result))

    def op_expand_dims(self, op: Op) -> None:
        x = op.operands[0]
        self.define(op.result, f"tl.expand_dims({self.ref(x)}, {op.attrs['axis']})", self.held.get(x.id))

    def op_broadcast(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        if not x.shape:
            t = self.work_type(r)
            self.define(r, f"tl.full({padded(r.shape)}, {self.f32(x)}, {t})", t)
            return
        self.define(r, f"tl.broadcast_to({self.aligned(x, len(r.shape))}, {padded(r.shape)})", self.work_type(r))

    # -- structure -------------------------------------------------------------------------------
    def op_reduce(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        axis, kind = op.attrs["axis"], op.attrs["op"]
        keep = ", keep_dims=True" if op.attrs["keepdims"] else ""
        src = self.masked(self.f32(x), x.shape, [axis], self.identity(kind, r.dtype))
        self.define(r, f"{_REDUCE[kind]}({src}, axis={axis}{keep})", self.work_type(r))

    def op_dot(self, op: Op) -> None:
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        (m, k), n = a.shape, b.shape[1]
        out = TL_TYPE[r.dtype.name]
        if not is_pow2(k):  # padded inner lanes must add nothing: zero them on both sides
            for v, axis in ((a, 1), (b, 0)):
                if v.id in self.zero_padded:
                    continue
                clean = self.name.fresh(f"{self.name(v)}_k")
                self.emit(f"{clean} = {self.masked(self.name(v), v.shape, [axis], '0')}")
                self.name.alias(v, clean)
        m, n, k = pow2(m), pow2(n), pow2(k)   # the lanes tl.dot sees
        native_ok = a.dtype.name != "uint8" and a.dtype == b.dtype and k >= (DOT_MIN_K8 if a.dtype.bits == 8 else DOT_MIN)
        if min(m, n) >= DOT_MIN and native_ok:
            native = self.dot_operand_type(a)
            args = [self.as_type(a, native), self.as_type(b, native)]
            if acc is not None:
                args.append(self.as_type(acc, out))
            if native == "tl.float32":  # ieee: exact fp32 products, as the IR promises (tf32 only on request)
                args.append(f'input_precision="{self.options.get("fp32_dot", "ieee")}"')
            if r.dtype.is_int:
                args.append("out_dtype=tl.int32")
            self.define(r, f"tl.dot({', '.join(args)})", out)
            return
        if min(m, n, k) >= DOT_MIN and a.dtype.is_int and a.dtype.bits == 8 and k * 255 * 255 < 2**24:
            # 8-bit ints where tl.dot has no int path (uint8, or k < 32): fp16 holds them exactly
            # and k products of at most 255 * 255 sum exactly in fp32, so an fp16 tl.dot is exact
            part = f"tl.dot({self.name(a)}.to(tl.float16), {self.name(b)}.to(tl.float16)).to(tl.int32)"
            self.define(r, f"{self.as_type(acc, out)} + {part}" if acc is not None else part, out)
            return
        threads = 32 * int(self.options.get("num_warps", 4))
        if r.dtype.is_float and m * k * n > BROADCAST_PER_THREAD * threads:
            self.padded_dot(a, b, acc, r, (m, k, n), out)
            return
        # a small product below tl.dot's extents: broadcast over (m, k, n), summed over k
        wa, wb = (f"{self.name(v)}.to({out})" if self.held.get(v.id) != out else self.name(v) for v in (a, b))
        expr = f"tl.sum({wa}[:, :, None] * {wb}[None, :, :], axis=1)"
        if acc is not None:
            expr = f"{self.as_type(acc, out)} + {expr}"
        self.define(r, expr, out)

    def dot_operand_type(self, a: Value) -> str:
        """The Triton type tl.dot takes ``a``'s tile in: its own, but fp32 for bf16 under the
        interpreter, which multiplies bf16 as raw uint16 bits (fp32 is exact)."""
        native = TL_TYPE[a.dtype.name]
        return "tl.float32" if native == "tl.bfloat16" and self.interpreter else native

    def padded_dot(self, a: Value, b: Value, acc: Value | None, r: Value, mkn: tuple[int, int, int],
                   out: str) -> None:
        """A float dot with an extent below 16 whose broadcast product would not fit registers
        (a (4, 128) @ (128, 64) product is 256 products per thread at 4 warps, which spills):
        zero-pad the short extents to 16, tl.dot, keep the real rows/columns. 16-bit operands
        stay 16-bit (tensor cores, fp32 accumulation): widened to fp32 such a dot spills where
        the fp32 one does not."""
        (m, k, n), full = mkn, [max(e, DOT_MIN) for e in mkn]
        operand = self.dot_operand_type(a) if a.dtype.is_float and a.dtype.bits == 16 else out
        wa, wb = (self.as_type(v, operand) for v in (a, b))
        wa = self.pad(self.pad(wa, (m, k), 0, full[0]), (full[0], k), 1, full[1])
        wb = self.pad(self.pad(wb, (k, n), 0, full[1]), (full[1], n), 1, full[2])
        prec = f', input_precision="{self.options.get("fp32_dot", "ieee")}"' if operand == "tl.float32" else ""
        part = self.name.fresh(f"{self.name(r)}_padded")
        self.emit(f"{part} = tl.dot({wa}, {wb}{prec})")
        part = self.unpad(self.unpad(part, (full[0], full[2]), 0, m), (m, full[2]), 1, n)
        self.define(r, f"{self.as_type(acc, out)} + {part}" if acc is not None else part, out)

    def pad(self, x: str, shape: tuple[int, int], axis: int, to: int) -> str:
        """``x`` (2-D, power-of-two extents) zero-padded along ``axis`` to ``to``: each tl.join
        with zeros doubles it on a new last axis; moving those axes in front of ``axis`` and
        reshaping leaves the real lanes first."""
        j = (to // shape[axis]).bit_length() - 1
        if j == 0:
            return x
        name = self.name.fresh(f"{x.split('.')[0]}_pad")
        self.emit(f"{name} = {x}")
        for _ in range(j):
            self.emit(f"{name} = tl.join({name}, tl.zeros_like({name}))")
        doubled = list(range(2, 2 + j))
        order = doubled + [0, 1] if axis == 0 else [0] + doubled + [1]
        new = (to, shape[1]) if axis == 0 else (shape[0], to)
        self.emit(f"{name} = tl.reshape(tl.permute({name}, {tuple(order)}), {new})")
        return name

    def unpad(self, x: str, shape: tuple[int, int], axis: int, keep: int) -> str:
        """The first ``keep`` lanes of ``x`` along ``axis``: the inverse of ``pad``, with
        tl.split taking the first half of each doubled axis."""
        j = (shape[axis] // keep).bit_length() - 1
        if j == 0:
            return x
        name = self.name.fresh(f"{x}_real")
        if axis == 0:
            split, order = (2,) * j + (keep, shape[1]), [j, j + 1] + list(range(j))
        else:
            split, order = (shape[0],) + (2,) * j + (keep,), [0, j + 1] + list(range(1, j + 1))
        self.emit(f"{name} = tl.permute(tl.reshape({x}, {split}), {tuple(order)})")
        for _ in range(j):
            self.emit(f"{name} = tl.split({name})[0]")
        return name

    def op_trans(self, op: Op) -> None:
        x = op.operands[0]
        self.define(op.result, f"tl.trans({self.ref(x)})", self.held.get(x.id))

    def op_from_quads(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        rows, cols = x.shape
        if padded(x.shape) != x.shape or not is_pow2(cols // 4):
            raise TilecError(f"triton backend: from_quads needs power-of-two extents, got {x.type}")
        # [r, 4 n + q] -> [r, n, q] -> [r, q, n] -> [4 r + q, n]
        self.define(r, f"tl.reshape(tl.permute(tl.reshape({self.ref(x)}, ({rows}, {cols // 4}, 4)), (0, 2, 1)), "
                       f"{r.shape})", self.held.get(x.id))

    def op_reshape(self, op: Op) -> None:
        x, r = op.operands[0], op.result
        if padded(x.shape) != x.shape or padded(r.shape) != r.shape:
            if [s for s in x.shape if s != 1] != [s for s in r.shape if s != 1]:
                self.reshape_padded(x, r)
                return
        self.define(r, f"tl.reshape({self.ref(x)}, {padded(r.shape)})", self.held.get(x.id))

    def reshape_padded(self, x: Value, r: Value) -> None:
        """A reshape whose padded lanes would land inside the result (tiles are padded to powers
        of two, e.g. (4, 3, 32) -> (12, 32) is (4, 4, 32) -> (16, 32)): each result lane gathers
        its element from the flattened source by index arithmetic on the real extents."""
        src_pad, out_pad = padded(x.shape), padded(r.shape)
        rank = len(r.shape)
        lanes = []
        for d in range(rank):
            view = "" if rank == 1 else f"[{', '.join(':' if e == d else 'None' for e in range(rank))}]"
            lanes.append(_scaled(f"tl.arange(0, {out_pad[d]}){view}", math.prod(r.shape[d + 1:])))
        flat = self.name.fresh(f"{self.name(r)}_at")
        self.emit(f"{flat} = {' + '.join(lanes)}")   # row-major position among the real elements
        at = []
        for d, extent in enumerate(x.shape):
            inner = math.prod(x.shape[d + 1:])
            at.append(_scaled(f"({flat}{f' // {inner}' if inner > 1 else ''} % {extent})", math.prod(src_pad[d + 1:])))
        inside = " & ".join(self.valid(r.shape, d) for d in range(rank) if not is_pow2(r.shape[d]))
        index = f"tl.where({inside}, {' + '.join(at)}, 0)" if inside else " + ".join(at)
        self.emit(f"{flat} = tl.reshape({index}, ({math.prod(out_pad)},))")
        source = f"tl.reshape({self.ref(x)}, ({math.prod(src_pad)},))"
        self.define(r, f"tl.reshape(tl.gather({source}, {flat}, 0), {out_pad})", self.held.get(x.id))

    def op_gather(self, op: Op) -> None:
        src, index = op.operands
        r = op.result
        axis = op.attrs["axis"]
        # tl.gather wants equal extents off the gathered axis: broadcast both sides first
        src_shape = padded(tuple(s if d == axis else r.shape[d] for d, s in enumerate(src.shape)))
        s_expr = self.name(src) if src_shape == padded(src.shape) else \
            f"tl.broadcast_to({self.name(src)}, {src_shape})"
        i_expr = self.name(index) if index.shape == r.shape else \
            f"tl.broadcast_to({self.name(index)}, {padded(r.shape)})"
        # padded lanes of the index could point anywhere: send them to element 0
        i_expr = self.masked(i_expr, r.shape, list(range(len(r.shape))), "0")
        self.define(r, f"tl.gather({s_expr}, {i_expr}, {axis})", self.held.get(src.id))

    # -- memory ----------------------------------------------------------------------------------
    def op_limit(self, op: Op) -> None:
        """The same pointer and strides; the bounded axes' extents cut to the bounds."""
        src, r = op.operands[0], op.result
        self.name.alias(r, self.name(src))
        shapes = list(self.shape_of[src.id])
        for ax, bound in zip(op.attrs["axes"], op.operands[1:]):
            cut = self.name.fresh(f"{self.name(src)}_limit{ax}")
            self.emit(f"{cut} = tl.minimum({shapes[ax]}, {self.name(bound)})")
            shapes[ax] = cut
        self.shape_of[r.id], self.stride_of[r.id] = shapes, self.stride_of[src.id]

    def addressing(self, op: Op, tensor: Value, offsets: list[Value], box: tuple) -> tuple[str, str | None]:
        """(pointer expression, mask expression or None) for a box of ``tensor`` at ``offsets``."""
        tname = self.name(tensor)
        shapes, strides = self.shape_of[tensor.id], self.stride_of[tensor.id]
        tile_axes = [ax for ax, e in enumerate(box) if e is not None]
        rank = len(tile_axes)
        terms, masks = [], []
        for ax, (off, ext) in enumerate(zip(offsets, box)):
            o = self.name(off)
            if ext is None:
                terms.append(f"{o} * {strides[ax]}")
                masks.append(f"({o} < {shapes[ax]})")
                if off.id not in self.nonneg:
                    masks.append(f"({o} >= 0)")
                continue
            pos = tile_axes.index(ax)
            role = "idx" if rank == 1 else "rows" if pos == 0 else "cols" if pos == rank - 1 else "idx"
            idx = self.name.fresh(f"{tname}_{role}{ax}")
            lanes = pow2(ext)
            self.emit(f"{idx} = {o} + tl.arange(0, {lanes})" if o != "0" else f"{idx} = tl.arange(0, {lanes})")
            view = idx if rank == 1 else f"{idx}[{', '.join(':' if p == pos else 'None' for p in range(rank))}]"
            terms.append(f"{view} * {strides[ax]}")
            masks.append(f"({view} < {shapes[ax]})")
            if lanes != ext:  # the padded lanes lie outside the box
                masks.append(f"({view} < {o} + {ext})" if o != "0" else f"({view} < {ext})")
            if off.id not in self.nonneg:
                masks.append(f"({view} >= 0)")
        return f"{tname} + {' + '.join(terms)}", " & ".join(masks) or None

    def op_load(self, op: Op) -> None:
        tensor, offsets = op.operands[0], op.operands[1:]
        r = op.result
        ptr, mask = self.addressing(op, tensor, offsets, op.attrs["box"])
        pad = self.pad_literal(op.attrs["padding"], r.dtype)
        args = [ptr] + ([f"mask={mask}", f"other={pad}"] if mask else [])
        self.define(r, f"tl.load({', '.join(args)})", TL_TYPE[tensor.dtype.name])
        if op.attrs["padding"] == 0:
            self.zero_padded.add(r.id)   # its padded lanes are masked off: they read as 0

    def pad_literal(self, value, dtype) -> str:
        """``other=`` of a masked load: a plain literal, converted by tl.load to the element type."""
        if dtype.kind == "bool":
            return "True" if value else "False"
        if dtype.is_int:
            return str(int(value))
        text = repr(float(value))
        if text in _SPECIAL_FLOATS:
            self.specials.add(_SPECIAL_FLOATS[text])
            return _SPECIAL_FLOATS[text]
        return text

    def op_store(self, op: Op) -> None:
        tensor, offsets, value = op.operands[0], op.operands[1:-1], op.operands[-1]
        ptr, mask = self.addressing(op, tensor, offsets, op.attrs["box"])
        v = self.as_type(value, TL_TYPE[tensor.dtype.name])
        self.emit(f"tl.store({ptr}, {v}" + (f", mask={mask})" if mask else ")"))

    # -- control flow ------------------------------------------------------------------------------
    def op_for(self, op: Op) -> None:
        start, stop, step = op.operands[:3]
        inits = op.operands[3:]
        body = op.blocks[0]
        iv, carried = body.args[0], body.args[1:]
        for arg, init, res in zip(carried, inits, op.results):
            t = self.work_type(arg)
            if init.shape and self.count.get(init.id, 0) == 1 and self.held.get(init.id) == t \
                    and init.producer is not None:
                self.name.alias(arg, self.name(init))   # the loop takes the init's variable over
            else:
                self.emit(f"{self.name(arg)} = {self.carried_init(init, t)}")
            self.held[arg.id] = t
            self.name.alias(res, self.name(arg))
            self.held[res.id] = t
        written_in_place = self.in_place_yields(body, carried)
        if start.id in self.nonneg and step.id in self.nonneg:
            self.nonneg.add(iv.id)
        self.held[iv.id] = "tl.int32"
        bounds = ", ".join(str(v.producer.attrs["value"]) if v.producer is not None and v.producer.kind == "const"
                           else self.name(v) for v in (start, stop, step))  # Triton promotes the types
        self.emit(f"for {self.name(iv)} in range({bounds}):")
        self.depth += 1
        before = len(self.lines)
        self.block(body)
        for arg, y in zip(carried, body.yields):
            if y.id not in written_in_place:
                self.emit(f"{self.name(arg)} = {self.carried_init(y, self.held[arg.id])}")
        if len(self.lines) == before:
            self.emit("pass")
        self.depth -= 1

    def in_place_yields(self, body: Block, carried: list[Value]) -> set[int]:
        """Yielded tiles computed by one statement in the loop body straight into the carried
        variable (``acc = tl.dot(a, b, acc)``), when nothing after that statement still reads
        the carried value. Returns their ids, already named like the carried variable."""
        done = set()
        yielded = [y.id for y in body.yields]
        for arg, y in zip(carried, body.yields):
            p = y.producer
            if not y.shape or p is None or p not in body.ops or self.count.get(y.id, 0) != 1 \
                    or yielded.count(y.id) != 1 or y.id in {a.id for a in carried}:
                continue
            if p.kind not in _ONE_STATEMENT or (p.kind == "binary" and p.attrs["op"] in ("floordiv", "mod", "pow")):
                continue
            later = body.ops[body.ops.index(p) + 1:]
            if any(_reads(o, arg.id) for o in later) or any(v.id == arg.id for v in body.yields):
                continue
            self.name.alias(y, self.name(arg))
            done.add(y.id)
        return done

    def carried_init(self, v: Value, t: str) -> str:
        """A loop-carried or branch variable's first value, typed so that later assignments
        agree (a literal would otherwise enter the loop as a constexpr)."""
        if not v.shape:
            return f"tl.full((), {self.name(v)}, {t})"
        return self.as_type(v, t)

    def op_if(self, op: Op) -> None:
        for res in op.results:
            self.held[res.id] = self.work_type(res)
        self.emit(f"if {self.name(op.operands[0])}:")
        for i, blk in enumerate(op.blocks):
            if i == 1:
                self.emit("else:")
            self.depth += 1
            before = len(self.lines)
            self.block(blk)
            for res, y in zip(op.results, blk.yields):
                self.emit(f"{self.name(res)} = {self.carried_init(y, self.held[res.id])}")
            if len(self.lines) == before:
                self.emit("pass")
            self.depth -= 1


def _reads(op: Op, value_id: int) -> bool:
    return any(v.id == value_id for v in op.operands) or \
        any(_reads(o, value_id) for b in op.blocks for o in b.ops) or \
        any(v.id == value_id for b in op.blocks for v in b.yields)


def render(fn: Function, options: dict, interpreter: bool = False) -> str:
    """``interpreter=True``: the variant for Triton's CPU interpreter (differs only where the
    interpreter lacks a GPU feature: bf16 dot operands are widened to fp32 there)."""
    return TritonRenderer(fn, options, interpreter).render()
