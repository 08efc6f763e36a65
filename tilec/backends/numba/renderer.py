"""Render tile IR as Python source for Numba.

Tile shapes are static, so every tile op becomes an explicit loop nest over constant bounds
that LLVM vectorizes. What to inline, read in place, prefetch, block, fuse or allocate once is
decided by the Numba lowering passes (``tilec.passes.LOWERING["numba"]``) and stated on the IR;
this module prints it. The kernel function runs programs ``first`` to ``stop - 1``; the runner
hands such runs to CPU threads. ``dot`` lowers to ``np.dot`` (BLAS) or to a loop nest, as the
``dot`` option says.
"""
from __future__ import annotations

import re
import struct

import numpy as np

from ... import __version__
from ...errors import TilecError
from ...ir import ELEMENTWISE, Block, Function, Op, Value, root, uses
from ...passes import lower
from ...passes.analysis import (blas_reads, branch_results, in_place, inlined, producers, read_only_by_dot,
                                used_up, yielded)
from ...passes.reductions import LANES, ROW_BLOCK
from ..naming import Namer
from . import support as rt_support
from .blocked_dots import BlockedDots

_PYOP = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
         "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>",
         "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_UNARY = {"exp": "np.exp({})", "exp2": "np.exp2({})", "log": "np.log({})", "log2": "np.log2({})",
          "sqrt": "np.sqrt({})", "abs": "abs({})", "floor": "np.floor({})", "ceil": "np.ceil({})",
          "tanh": "np.tanh({})", "sin": "np.sin({})", "cos": "np.cos({})", "erf": "math.erf({})"}
# Working dtype of tiles in this backend: 16-bit floats compute in fp32, rounded at casts.
_WORK = {"float16": "float32", "bfloat16": "float32", "bool": "bool_"}
_INIT = {"sum": "0", "max": "-np.inf", "min": "np.inf"}


def np_type(dtype) -> str:
    return "np." + _WORK.get(dtype.name, dtype.name)


def literal(value, dtype) -> str:
    if dtype.kind == "bool":
        return "True" if value else "False"
    if dtype.is_float:
        v = float(value)
        text = "np.inf" if v == float("inf") else "-np.inf" if v == float("-inf") else "np.nan" if v != v else repr(v)
        return f"{np_type(dtype)}({text})"
    return str(int(value))


def bits16(value: float, dtype) -> int:
    if dtype.name == "bfloat16":
        return struct.unpack("<I", struct.pack("<f", value))[0] >> 16
    return int(np.array(value, np.float16).view(np.uint16))


class _Header(str):
    """An emitted loop header with the places a renderer still adds lines to once it has moved
    on: ``before`` (reads hoisted out of the loop) and ``after`` (lines its body starts with)."""
    before: list[str]
    after: list[str]

    def __new__(cls, text: str) -> "_Header":
        line = super().__new__(cls, text)
        line.before, line.after = [], []
        return line


class _Slot(list):
    """A place in the output that lines are added to later (a loop's private buffers)."""


def _flat(lines: list) -> list[str]:
    out: list[str] = []
    for line in lines:
        if isinstance(line, _Slot):
            out += line
        else:
            out += [*getattr(line, "before", ()), line, *getattr(line, "after", ())]
    return out


class NumbaRenderer(BlockedDots):
    def __init__(self, fn: Function, options: dict):
        self.fn = fn = lower(fn, "numba", options)   # the renderer prints the lowered IR
        self.options = options
        self.name = Namer({"np", "numba", "math", "rt", "prange", "pid", "grid0", "grid1", "grid2"})
        self.lines: list = []   # source lines, loop headers (_Header) and slots (_Slot)
        self.depth = 0
        self.count = uses(fn)
        self.inline = inlined(fn)   # tiles computed inside their readers (passes/inlining.py)
        self.inner: dict | None = None   # the innermost loop being rendered (see open_inner)
        self.readers: dict[int, list[Op]] = {}   # value id -> the ops that read it
        for op in fn.walk():
            for v in op.operands:
                self.readers.setdefault(v.id, []).append(op)
        self.carried = yielded(fn.body)
        self.branch_results = branch_results(fn)   # value an if-branch yields -> the if's results
        # what the lowering passes decided (tilec/passes): values a blocked dot reads through,
        # dot result id -> its BlockedDot, tile id -> the row sum its loop computes too, loads
        # read in place
        self.skipped = {op.result.id for op in fn.walk() if op.attrs.get("read_through")}
        self.blocked = {op.result.id: op.attrs["blocked"] for op in fn.walk() if "blocked" in op.attrs}
        self.fused_sums = {op.result.id: op.attrs["row_sum"].producer for op in fn.walk() if "row_sum" in op.attrs}
        self.windows = in_place(fn)
        self.dot_only = read_only_by_dot(self.readers, self.carried)
        self.producer = producers(fn)
        self.written = {root(op.operands[0]).id for op in fn.walk() if op.kind == "store"}  # tensors stored to
        self.window_offsets: dict[int, list[str]] = {}   # per window: its offset variables
        self.private: dict[int, tuple] = {}  # loop-private tile -> (its loop's _Slot, indent)
        self.buffers: dict[int, str] = {}   # loop-private tile -> its buffer, once allocated
        self.prefetch_rows: dict[int, list[str]] = {}  # window -> next step's offsets (_prefetch_plan)
        self.row_loops: dict[str, _Header] = {}  # loop variable -> its plain loop's header (emit_loop)

    # -- output -----------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def emit_loop(self, var: str, n, pad: str = "") -> None:
        """``for var in range(n):``, a plain loop whose body may still get first lines (``after``):
        where a row prefetch goes (_prefetch_rows)."""
        line = _Header("    " * self.depth + pad + f"for {var} in range({n}):")
        self.lines.append(line)
        self.row_loops[var] = line

    def render(self) -> str:
        fn = self.fn
        params = [self.name(p) for p in fn.params]
        fname = kernel_symbol(fn)
        cfg = " ".join(f"{k}={v}" for k, v in {**fn.constexprs, **self.options}.items())
        head = [
            f"# Generated by tilec {__version__} (numba backend) from kernel {fn.name!r} in {fn.source_file}",
            f"# config: {cfg}" if cfg else "# config: (none)",
            "import math",
            "import numba",
            "import numpy as np",
            "from tilec.backends.numba import support as rt",
            "",
            "",
            # No parallel=True: Numba's parallel passes made compiling 2-3x slower. The runner
            # spreads runs of programs over Numba's threads through one small prange of its own.
            "@numba.njit(cache=True, nogil=True, "
            "fastmath={'reassoc', 'contract', 'nsz', 'arcp'}, boundscheck=False, error_model='numpy')",
            f"def {fname}(first, stop, grid0, grid1, grid2, {', '.join(params)}):",
        ]
        self.depth = 1
        self.emit("for pid in range(first, stop):")
        self.depth = 2
        self.emit("pid_0 = pid % grid0")
        if fn.grid_rank > 1:
            self.emit("pid_1 = (pid // grid0) % grid1")
        if fn.grid_rank > 2:
            self.emit("pid_2 = pid // (grid0 * grid1)")
        self.block(fn.body)
        return "\n".join(head + list(_flat(self.lines))) + "\n"

    def block(self, block: Block) -> None:
        before = len(self.lines)
        for op in block.ops:
            if op.results and (op.results[0].id in self.inline or op.results[0].id in self.skipped) or \
                    op.kind == "reduce" and self.fused_sums.get(op.operands[0].id) is op:
                continue   # inlined into its reader, read through by a blocked dot, or summed by
                # the loop that made its operand
            getattr(self, "op_" + op.kind)(op)
        if len(self.lines) == before and not block.yields:
            self.emit("pass")

    # -- expressions --------------------------------------------------------------------------
    def ref(self, v: Value, idx: list[str]) -> str:
        """``v`` read at the consumer's index ``idx`` (numpy broadcasting: trailing alignment)."""
        if v.id in self.inline:
            return self.expr(v.producer, idx)
        if v.shape == ():
            return self.name(v)
        own = ['0' if s == 1 else i for s, i in zip(v.shape, idx[len(idx) - len(v.shape):])]
        if v.id in self.windows:
            self._prefetch_rows(v, own)
            return self.hoisted(self._window_read(v, own))
        return self._row_view(self.name(v), own) or self.hoisted(f"{self.name(v)}[{', '.join(own)}]")

    def _row_view(self, name: str, own: list[str]) -> str | None:
        """In an elementwise loop nest (materialize), a tile read along the innermost loop only
        goes through a row view bound in front of that loop, so LLVM sees 1-D reads (deep nests
        vectorize better so)."""
        inner = self.inner
        if inner is None or not inner["rows"] or len(own) < 2 or own[-1] != inner["name"] \
                or any(inner["var"].search(i) for i in own[:-1]):
            return None
        outer = ", ".join(own[:-1])
        return f"{self.hoisted(f'{name}[{outer}]', 'row')}[{own[-1]}]"

    def _window_read(self, v: Value, own: list[str], sliced: int = 0) -> str:
        """A load read in place: the window's array (the tensor, or the padded copy) at the
        window's offset on each tensor axis (see op_load), at tile index ``own``; with
        ``sliced`` = k the last k tile axes are whole slices (own covers the others)."""
        box = v.producer.attrs["box"]
        tiled = [a for a, e in enumerate(box) if e is not None]
        whole = set(tiled[len(tiled) - sliced:])
        at, t = [], 0
        for a, (offset, ext) in enumerate(zip(self.window_offsets[v.id], box)):
            if ext is None:
                at.append(offset)
            elif a in whole:
                at.append(f"{offset}:{offset} + {ext}")
            else:
                at.append(offset if own[t] == "0" else f"{offset} + np.uintp({own[t]})")
                t += 1
        return f"{self.name(v)}[{', '.join(at)}]"

    # -- reads that stay fixed along the innermost loop ------------------------------------------
    def open_inner(self, var: str, rows: bool = False) -> None:
        """Call right after emitting the innermost ``for var`` line. Tile reads in its body whose
        index does not involve ``var`` move in front of it: LLVM cannot prove that tiles do not
        alias the one being written, so it would reload them every step and may not vectorize.
        With ``rows`` tiles read along ``var`` go through row views too (_row_view)."""
        line = self.lines[-1]
        if not isinstance(line, _Header):
            line = self.lines[-1] = _Header(line)
        self.inner = {"var": re.compile(rf"\b{re.escape(var)}\b"), "name": var, "rows": rows,
                      "header": line, "indent": line[:len(line) - len(line.lstrip())], "seen": {}}

    def close_inner(self) -> None:
        self.inner = None

    def hoisted(self, read: str, prefix: str = "inv") -> str:
        inner = self.inner
        if inner is None or inner["var"].search(read):
            return read
        if read not in inner["seen"]:
            local = self.name.fresh(prefix)
            inner["header"].before.append(f"{inner['indent']}{local} = {read}")
            inner["seen"][read] = local
        return inner["seen"][read]

    def expr(self, op: Op, idx: list[str]) -> str:
        """The value of an elementwise op at index ``idx`` (as long as its result's rank)."""
        r = op.result
        own = idx[len(idx) - len(r.shape):] if r.shape else []
        k = op.kind
        if k == "const":
            return literal(op.attrs["value"], r.dtype)
        if k == "full":
            return self.ref(op.operands[0], own)
        if k == "arange":
            return own[-1]
        if k == "cast":
            x = self.ref(op.operands[0], own)
            if r.dtype.kind == "bool":
                return f"({x} != 0)"
            return f"{np_type(r.dtype)}({x})"
        if k == "expand_dims":
            ax = op.attrs["axis"]
            return self.ref(op.operands[0], own[:ax] + own[ax + 1:])
        if k == "broadcast":
            return self.ref(op.operands[0], own)
        if k == "where":
            c, a, b = (self.ref(v, own) for v in op.operands)
            return f"({a} if {c} else {b})"
        if k == "unary":
            x = self.ref(op.operands[0], own)
            u = op.attrs["op"]
            one = literal(1, r.dtype)
            if u == "neg":
                return f"(-{x})"
            if u == "not":
                return f"(not {x})" if r.dtype.kind == "bool" else f"{np_type(r.dtype)}(~{x})"
            if u == "rsqrt":
                return f"({one} / np.sqrt({x}))"
            if u == "sigmoid":
                return f"({one} / ({one} + np.exp(-{x})))"
            if u == "erf":
                return f"{np_type(r.dtype)}(math.erf({x}))"
            if u == "exp2" and np_type(r.dtype) == "np.float32":
                return f"rt.exp2f({x})"  # vectorizes; np.exp2 is a scalar libm call
            return _UNARY[u].format(x)
        if k == "binary":
            a, b = (self.ref(v, own) for v in op.operands)
            o = op.attrs["op"]
            if o in ("max", "min"):
                return f"{o}({a}, {b})"
            text = f"({a} {_PYOP[o]} {b})"
            if r.dtype.is_int and (r.dtype.bits < 64 or o in ("truediv",)):
                return f"{np_type(r.dtype)}{text}"  # keep the IR's integer width and wrap-around
            return text
        if k == "gather":  # a table lookup read in place (no tile of hits in between)
            src, index = op.operands
            at = self.ref(index, own)
            axis = op.attrs["axis"]
            pos = [at if d == axis else ("0" if n == 1 else own[d]) for d, n in enumerate(src.shape)]
            return f"{self.name(src)}[{', '.join(pos)}]"
        raise TilecError(f"numba backend cannot inline {k}")

    # -- loops over a tile ----------------------------------------------------------------------
    def loops(self, shape: tuple[int, ...], prefix: str = "i") -> list[str]:
        idx = []
        for d, n in enumerate(shape):
            var = self.name.fresh(f"{prefix}{d}")
            idx.append(var)
            self.emit_loop(var, n)
            self.depth += 1
        return idx

    def empty(self, v: Value, dtype: str | None = None) -> str:
        """An uninitialized tile: a fresh array, or for a loop-private tile (passes/buffers.py) a
        buffer allocated once in front of its loop."""
        if v.id not in self.private or dtype not in (None, np_type(v.dtype)):
            return f"np.empty({v.shape}, {dtype or np_type(v.dtype)})"
        if v.id not in self.buffers:
            slot, indent = self.private[v.id]
            self.buffers[v.id] = self.name.fresh(f"{self.name(v)}_buffer")
            # the latest allocation first, as in front of the loop every buffer was put first
            slot.insert(0, f"{indent}{self.buffers[v.id]} = np.empty({v.shape}, {np_type(v.dtype)})")
        return self.buffers[v.id]

    def close(self, n: int) -> None:
        self.depth -= n

    def materialize(self, op: Op) -> None:
        r = op.result
        name = self.name(r)
        if r.shape == ():
            self.emit(f"{name} = {self.expr(op, [])}")
            return
        self.emit(f"{name} = {self.empty(r)}")
        row_sum = self.fused_sums.get(r.id)
        if row_sum is not None:
            self._materialize_summing_rows(op, row_sum)
            return
        idx = self.loops(r.shape)
        self.open_inner(idx[-1], rows=True)
        value = self.expr(op, idx)
        self.emit(f"{self._cell(name, idx)} = {value}")
        self.close_inner()
        self.close(len(idx))

    def _cell(self, name: str, idx: list[str]) -> str:
        """Where element idx of a tile being written goes: its row view's cell, or the tile's."""
        return self._row_view(name, idx) or f"{name}[{', '.join(idx)}]"

    def _materialize_summing_rows(self, op: Op, row_sum: Op) -> None:
        """The tile's loops, each row's total kept in a local scalar and written to the sum's
        array after the row (see passes/row_sums.py)."""
        r = op.result
        name, total = self.name(r), self.name(row_sum.result)
        if row_sum.result.shape:
            self.emit(f"{total} = {self.empty(row_sum.result)}")
        outer = self.loops(r.shape[:-1])
        acc = self.name.fresh(f"{total}_acc")
        self.emit(f"{acc} = np.float32(0)")
        inner = self.name.fresh(f"i{len(outer)}")
        self.emit_loop(inner, r.shape[-1])
        self.depth += 1
        idx = outer + [inner]
        self.open_inner(inner, rows=True)
        value = self.expr(op, idx)
        # the element in a local first: summing the row's cells would read back through a
        # store LLVM must assume aliases (much slower)
        element = self.name.fresh("e")
        self.emit(f"{element} = {value}")
        self.emit(f"{self._cell(name, idx)} = {element}")
        self.emit(f"{acc} = {acc} + {element}")
        self.close_inner()
        self.close(1)
        if row_sum.result.shape:
            self.emit(f"{total}[{', '.join(outer + (['0'] if row_sum.attrs['keepdims'] else []))}] = {acc}")
        else:
            self.emit(f"{total} = {acc}")
        self.close(len(outer))

    op_full = op_arange = op_unary = op_binary = op_where = op_expand_dims = op_broadcast = materialize

    def op_const(self, op: Op) -> None:
        self.name.alias(op.result, literal(op.attrs["value"], op.result.dtype))

    def op_cast(self, op: Op) -> None:
        target = op.attrs["dtype"]
        if target in ("float16", "bfloat16") and op.result.shape != ():
            src = op.operands[0]
            fn = "round_bf16" if target == "bfloat16" else "round_f16"
            inner = self.name(src) if src.dtype.name == "float32" else f"{self.name(src)}.astype(np.float32)"
            self.emit(f"{self.name(op.result)} = rt.{fn}({inner})")
        else:
            self.materialize(op)

    # -- scalars ----------------------------------------------------------------------------
    def op_program_id(self, op: Op) -> None:
        self.name.alias(op.result, f"pid_{op.attrs['axis']}")

    def op_num_programs(self, op: Op) -> None:
        self.name.alias(op.result, f"grid{op.attrs['axis']}")

    def op_dim(self, op: Op) -> None:
        self.emit(f"{self.name(op.result)} = {self.name(op.operands[0])}.shape[{op.attrs['axis']}]")

    # -- memory -----------------------------------------------------------------------------
    def op_limit(self, op: Op) -> None:
        """A view cut at the bounds: loads and stores test against its (smaller) shape."""
        bounds = dict(zip(op.attrs["axes"], op.operands[1:]))
        index = ", ".join(f":max({self.name(bounds[ax])}, 0)" if ax in bounds else ":"
                          for ax in range(op.result.type.rank))
        self.emit(f"{self.name(op.result)} = {self.name(op.operands[0])}[{index}]")

    def _window(self, tensor: Value, offsets: list[Value], box: tuple) -> tuple[list, list]:
        """Per tile axis: (lo, hi) of the part inside the tensor; per tensor axis: its source
        index expression builder. Indexed (None) axes are checked against the extent."""
        tname = self.name(tensor)
        bounds, conds = [], []
        for ax, (off, ext) in enumerate(zip(offsets, box)):
            o = self.name(off)
            if ext is None:
                conds.append(f"0 <= {o} < {tname}.shape[{ax}]")
                continue
            lo = self.name.fresh(f"lo{ax}")
            hi = self.name.fresh(f"hi{ax}")
            self.emit(f"{lo} = max(0, -{o})")
            self.emit(f"{hi} = min({ext}, {tname}.shape[{ax}] - {o})")
            bounds.append((lo, hi))
            conds.append(f"{hi} > {lo}")
        return bounds, conds

    def op_load(self, op: Op) -> None:
        tensor, offsets = op.operands[0], op.operands[1:]
        r = op.result
        box = op.attrs["box"]
        name = self.name(r)
        pad = op.attrs["padding"]
        sixteen = tensor.dtype.name in ("float16", "bfloat16")
        store_dtype = "np.uint16" if sixteen else np_type(r.dtype)
        fill = bits16(pad, tensor.dtype) if sixteen else literal(pad, r.dtype)
        target = name + "_bits" if sixteen else name
        bounds, conds = self._window(tensor, offsets, box)
        if r.shape == ():
            self.emit(f"{target} = {fill}")
            self.emit(f"if {' and '.join(conds)}:" if conds else "if True:")
            self.emit(f"    {target} = {self.name(tensor)}[{', '.join(self.name(o) for o in offsets)}]")
        else:
            # the whole box inside the tensor (the common case): a copy, no fill
            inside = [f"{lo} == 0 and {hi} == {ext}" for (lo, hi), ext in
                      zip(bounds, [e for e in box if e is not None])]
            inside += [c for c in conds if " <= " in c]
            self.emit(f"if {' and '.join(inside)}:")
            self.depth += 1
            if r.id in self.windows:
                self._prefetch_plan(op)
                self._load_window(op, target, store_dtype, fill, bounds, conds)
                return
            if self._blas_view(op):
                # BLAS reads the tile where it lies (a strided view): no copy
                self.emit(f"{target} = {self._view(tensor, offsets, box)}")
            else:
                spans = self._slab_spans(op)
                if spans == []:        # one sliced axis: always a slab
                    self.emit(f"{target} = {self._slab(tensor, offsets, box)}")
                else:
                    if spans:
                        self.emit(f"if {' and '.join(spans)}:")
                        self.emit(f"    {target} = {self._slab(tensor, offsets, box)}")
                        self.emit("else:")
                        self.depth += 1
                    copy = self.name.fresh(f"{target}_copy")
                    self.emit(f"{copy} = {self.empty(r, store_dtype)}")
                    self._copy_box(copy, tensor, offsets, box, [("0", str(e)) for e in box if e is not None])
                    self.emit(f"{target} = {copy}")
                    self.depth -= int(bool(spans))
            self.depth -= 1
            self.emit("else:")
            self.depth += 1
            edge_view = self._blas_view(op) and pad == 0
            if edge_view:
                # an edge tile only BLAS reads: the part inside the tensor, in place, and
                # matmul_into takes what it lacks as the zeros the padding would have been
                # (no padded copy: a last strip of few rows can be most of the tensor)
                ends = iter(hi for _, hi in bounds)
                inner = tuple(None if e is None else next(ends) for e in box)
                starts = [f"{lo} == 0" for lo, _ in bounds]
                self.emit(f"if {' and '.join(starts + conds)}:")
                self.emit(f"    {target} = {self._view(tensor, offsets, inner)}")
                self.emit("else:")
                self.depth += 1
            self.emit(f"{target} = np.full({r.shape}, {fill}, {store_dtype})")
            self.emit(f"if {' and '.join(conds)}:")
            self.depth += 1
            self._copy_box(target, tensor, offsets, box, bounds)
            self.depth -= 2 + int(edge_view)
        if sixteen:
            widen = "widen_bf16" if tensor.dtype.name == "bfloat16" else "widen_f16"
            if r.shape == ():
                self.emit(f"{name} = rt.{widen}(np.array([{target}], np.uint16))[0]")
            else:
                self.emit(f"{name} = rt.{widen}({target})")

    def _load_window(self, op: Op, name: str, store_dtype: str, fill: str, bounds, conds) -> None:
        """A load its readers index in place (``in_place``, passes/windows.py): inside the tensor the window
        is the tensor itself at the load's offsets; across an edge it is a padded copy, shaped
        with the tensor's rank (1 on single-index axes), at offset 0."""
        tensor, offsets, box = op.operands[0], op.operands[1:], op.attrs["box"]
        at = self.window_offsets[op.result.id] = [self.name.fresh(f"{name}_o{axis}") for axis in range(len(box))]
        for var, o in zip(at, offsets):
            self.emit(f"{var} = np.uintp({self.name(o)})")
        self.emit(f"{name} = {self.name(tensor)}")
        self.depth -= 1
        self.emit("else:")
        self.depth += 1
        padded = self.name.fresh(f"{name}_padded")
        self.emit(f"{padded} = np.full({op.result.shape}, {fill}, {store_dtype})")
        self.emit(f"if {' and '.join(conds)}:")
        self.depth += 1
        self._copy_box(padded, tensor, offsets, box, bounds)
        self.depth -= 1
        self.emit(f"{name} = {padded}.reshape({tuple(1 if e is None else e for e in box)})")
        for var in at:
            self.emit(f"{var} = np.uintp(0)")
        self.depth -= 1

    def _view(self, tensor: Value, offsets: list[Value], extents: tuple) -> str:
        """The tensor sliced from ``offsets`` over ``extents`` (None: a single index)."""
        window = ", ".join(self.name(o) if e is None else f"{self.name(o)}:{self.name(o)} + {e}"
                           for o, e in zip(offsets, extents))
        return f"{self.name(tensor)}[{window}]"

    def _prefetch_rows(self, v: Value, own: list[str]) -> None:
        """Emit window v's planned prefetch (_prefetch_plan) at the top of the loop over its
        first tile axis, ``for own[0]``, if that loop is open and not the innermost: each of its
        iterations prefetches the cache lines of the same row of the next step's box."""
        starts = self.prefetch_rows.get(v.id)
        row = own[0]
        loop = self.row_loops.get(row)
        if starts is None or loop is None or (self.inner is not None and self.inner["name"] == row):
            return    # no plain loop over the rows open (e.g. several rows a pass)
        del self.prefetch_rows[v.id]
        tensor, box = v.producer.operands[0], v.producer.attrs["box"]
        t = self.name(tensor)
        first, last = (ax for ax, e in enumerate(box) if e is not None)
        indent = loop[:len(loop) - len(loop.lstrip())] + "    "
        ahead = self.name.fresh("ahead")
        index = list(starts)
        index[first], index[last] = f"{starts[first]} + {row}", ahead
        checks = [f"0 <= {index[first]} < {t}.shape[{first}]"] + \
            [f"0 <= {st} < {t}.shape[{ax}]" for ax, (st, e) in enumerate(zip(starts, box)) if e is None]
        line = max(1, 64 // tensor.dtype.itemsize)   # elements per 64-byte cache line
        lines = [f"{indent}if {' and '.join(checks)}:   # the next step's row, prefetched (_plan_prefetch)",
                 f"{indent}    for {ahead} in range(max({starts[last]}, 0), min({starts[last]} + {box[last]}, "
                 f"{t}.shape[{last}]), {line}):",
                 f"{indent}        rt.prefetch({t}, ({', '.join(f'np.uintp({i})' for i in index)},))"]
        loop.after.extend(lines)

    def _used_up(self, v: Value) -> bool:
        return used_up(v, self.readers, self.carried, self.branch_results)

    def _prefetch_plan(self, op: Op) -> None:
        """The offsets of the box a window reads in its loop's next step, where the IR says to
        prefetch it (``prefetch``: each offset's step, passes/windows.py). The prefetches go row
        by row into the loop nest that reads the window (_prefetch_rows), spread over the step."""
        deltas = op.attrs.get("prefetch")
        if deltas is not None:
            self.prefetch_rows[op.result.id] = [self.name(o) if d == 0 else f"{self.name(o)} + {d}"
                                                for o, d in zip(op.operands[1:], deltas)]

    def _slab_spans(self, op: Op) -> list[str] | None:
        """A load whose tile is only read (``_used_up``) from a tensor the kernel never writes,
        with its box's single-index axes in front of its sliced ones: the run-time conditions
        under which the box is a slab of whole rows, ``T[i, j, n:n + R]`` (every sliced axis
        past the first starts at 0 and spans the tensor), so that a C-ordered tensor gives a
        C-ordered view and the copy is skipped. None when it never is."""
        tensor, offsets, box, r = op.operands[0], op.operands[1:], op.attrs["box"], op.result
        sliced = [ax for ax, e in enumerate(box) if e is not None]
        if tensor.dtype.name in ("float16", "bfloat16") or root(tensor).id in self.written or \
                r.id in self.carried or not sliced or sliced != list(range(sliced[0], len(box))) or \
                not self._used_up(r):
            return None
        spans = []
        for ax in sliced[1:]:
            if self.name(offsets[ax]) != "0":
                spans.append(f"{self.name(offsets[ax])} == 0")
            spans.append(f"{self.name(tensor)}.shape[{ax}] == {box[ax]}")
        return spans

    def _slab(self, tensor: Value, offsets: list[Value], box: tuple) -> str:
        """The view of a slab (see _slab_spans): indexed up to its first sliced axis, sliced there."""
        first = next(ax for ax, e in enumerate(box) if e is not None)
        lead = [self.name(o) for o in offsets[:first]]
        o = self.name(offsets[first])
        return f"{self.name(tensor)}[{', '.join(lead + [f'{o}:{o} + {box[first]}'])}]"

    def _blas_view(self, op: Op) -> bool:
        return blas_reads(op, self.options, self.dot_only)

    def _copy_box(self, target: str, tensor: Value, offsets: list[Value], box: tuple,
                  ranges: list[tuple[str, str]]) -> None:
        """Copy the part ``ranges`` of a box element by element. Explicit loops, because Numba's
        slice assignment copies through a generic strided iterator (several times slower); with
        a C-ordered tensor the innermost loop is a contiguous, vectorized copy."""
        idx = []
        for lo, hi in ranges:
            var = self.name.fresh(f"r{len(idx)}")
            self.emit(f"for {var} in range({hi}):" if lo == "0" else f"for {var} in range({lo}, {hi}):")
            self.depth += 1
            idx.append(var)
        self.emit(f"{target}[{', '.join(idx)}] = {self.name(tensor)}[{_tensor_index(self.name, offsets, box, idx)}]")
        self.depth -= len(idx)

    def op_store(self, op: Op) -> None:
        tensor, offsets, value = op.operands[0], op.operands[1:-1], op.operands[-1]
        box = op.attrs["box"]
        tname = self.name(tensor)
        bounds, conds = self._window(tensor, offsets, box)
        sixteen = tensor.dtype.name in ("float16", "bfloat16")
        if sixteen:
            narrow = "narrow_bf16" if tensor.dtype.name == "bfloat16" else "narrow_f16"
            src = self.name(value) if value.shape else f"np.array([{self.name(value)}], np.float32)"
            bits = self.name.fresh(self.name(value) + "_bits")
            self.emit(f"{bits} = rt.{narrow}({src})")
        self.emit(f"if {' and '.join(conds)}:" if conds else "if True:")
        self.depth += 1
        idx = []
        for lo, hi in bounds:
            var = self.name.fresh(f"i{len(idx)}")
            idx.append(var)
            self.emit(f"for {var} in range({lo}, {hi}):")
            self.depth += 1
        dst = _tensor_index(self.name, offsets, box, idx)
        if idx:
            self.open_inner(idx[-1])
        if sixteen:
            rhs = f"{bits}[{', '.join(idx)}]" if value.shape else f"{bits}[0]"
        else:
            rhs = self.ref(value, idx)
        self.emit(f"{tname}[{dst}] = {rhs}")
        self.close_inner()
        self.depth -= len(idx) + 1

    # -- structure ----------------------------------------------------------------------------
    def op_reduce(self, op: Op) -> None:
        how = op.attrs.get("lowering")   # passes/reductions.py
        if how == "table_lookup_sum" and self._lookup_sums(op):
            return
        x, r = op.operands[0], op.result
        axis, kind = op.attrs["axis"], op.attrs["op"]
        name = self.name(r)
        init = f"{np_type(r.dtype)}({_INIT[kind]})" if r.dtype.is_float or kind == "sum" else \
            f"np.iinfo({np_type(r.dtype)}).{'min' if kind == 'max' else 'max'}"
        combine = {"sum": "{a} + {b}", "max": "max({a}, {b})", "min": "min({a}, {b})"}[kind]
        keep = op.attrs["keepdims"]
        rank = len(x.shape)
        if axis == rank - 1:  # reduce the contiguous axis into a scalar per row
            if r.shape:
                self.emit(f"{name} = {self.empty(r)}")
            if how == "row_simd":
                self.emit(f"rt.row_{kind}({self.name(x)}, {name + '[:, 0]' if keep else name})")
                return
            if how == "row_blocks":
                self._row_block_sums(name, x, keep, init)
                return
            lanes = how == "lanes"
            if lanes:
                part = self.name.fresh(f"{name}_lanes")
                self.emit(f"{part} = np.empty({LANES}, {np_type(r.dtype)})")
            outer = self.loops(x.shape[:-1])
            cell = f"{name}[{', '.join(outer + (['0'] if keep else []))}]"
            # a sum adds into its cell of the result: LLVM vectorizes that loop, but not the
            # same sum into a local scalar (row sums of a 128 x 64 tile: 0.4 against 2.5 us)
            in_place = kind == "sum" and bool(r.shape)
            acc = cell if in_place else self.name.fresh(f"{name}_acc")
            self.emit(f"{acc} = {init}")
            inner = self.name.fresh("j")
            start = 0
            if lanes:
                self._lane_reduce(kind, part, acc, init, x, outer)
                start = x.shape[-1] - x.shape[-1] % LANES
            if start < x.shape[-1]:
                self.emit(f"for {inner} in range({start}, {x.shape[-1]}):")
                self.open_inner(inner)
                self.depth += 1
                self.emit(f"{acc} = {combine.format(a=acc, b=self.ref(x, outer + [inner]))}")
                self.close_inner()
                self.depth -= 1
            if r.shape and not in_place:
                self.emit(f"{cell} = {acc}")
            self.close(len(outer))
            if not r.shape:
                self.emit(f"{name} = {acc}")
            return
        self.emit(f"{name} = np.full({r.shape}, {init}, {np_type(r.dtype)})")
        idx = self.loops(x.shape)
        out = [("0" if keep else None) if d == axis else i for d, i in enumerate(idx)]
        cell = f"{name}[{', '.join(i for i in out if i is not None)}]"
        self.open_inner(idx[-1])
        self.emit(f"{cell} = {combine.format(a=cell, b=self.ref(x, idx))}")
        self.close_inner()
        self.close(len(idx))

    def _row_block_sums(self, name: str, x: Value, keep: bool, init: str) -> None:
        """Sums along the last axis, ROW_BLOCK rows per pass into local scalars (``row_blocks``,
        passes/reductions.py): what the rows share is read once per pass, and the independent
        sums keep the vector units busy."""
        outer = self.loops(x.shape[:-2])
        i = self.name.fresh("i")
        self.emit(f"for {i} in range(0, {x.shape[-2]}, {ROW_BLOCK}):")
        self.depth += 1
        rows = [i] + [f"{i} + {b}" for b in range(1, ROW_BLOCK)]
        accs = [self.name.fresh(f"{name}_acc") for _ in rows]
        self.emit(f"{' = '.join(accs)} = {init}")
        j = self.name.fresh("j")
        self.emit(f"for {j} in range({x.shape[-1]}):")
        self.open_inner(j)
        self.depth += 1
        for acc, row in zip(accs, rows):
            self.emit(f"{acc} = {acc} + {self.ref(x, outer + [row, j])}")
        self.close_inner()
        self.depth -= 1
        for acc, row in zip(accs, rows):
            self.emit(f"{name}[{', '.join(outer + [row] + (['0'] if keep else []))}] = {acc}")
        self.depth -= 1
        self.close(len(outer))

    def _lookup_sums(self, op: Op) -> bool:
        """A table-lookup sum (passes/reductions.py) as one ``rt.lookup_sum`` per outer index,
        which keeps each table in a SIMD register where the CPU has AVX-512. False (render as
        loops) without AVX-512 or where the tables or hits have no 2-D view."""
        x, r = op.operands[0], op.result
        if not rt_support.PERMUTE16:   # AVX-512's 16-lane permute: a target feature
            return False
        src, index = x.producer.operands
        rank = len(x.shape)
        outer = [self.name.fresh(f"i{d}") for d in range(rank - 2)]
        tables = self._block(src, outer)
        hits = self._block(index, outer)
        if tables is None or hits is None or index.shape[-2] == 1 or index.shape[-1] == 1:
            return False
        name = self.name(r)
        self.emit(f"{name} = np.zeros({r.shape}, np.float32)")
        for var, n in zip(outer, x.shape[:-2]):
            self.emit(f"for {var} in range({n}):")
            self.depth += 1
        at = outer + (["0"] if op.attrs["keepdims"] else [])
        row = f"{name}[{', '.join(at)}]" if at else name
        self.emit(f"rt.lookup_sum({row}, {tables}, {hits})")
        self.depth -= len(outer)
        return True

    def _block(self, v: Value, outer: list[str]) -> str | None:
        """A 2-D view of ``v``'s last two axes at the consumer's outer index (trailing
        alignment, as in ``ref``), through inlined expand_dims; None if v has no such view."""
        inner = len(v.shape) - 2
        own = ['0' if n == 1 else i for n, i in zip(v.shape[:inner], outer[len(outer) - inner:] if inner else [])]
        if v.id in self.windows:  # where it lies (see op_load): tensor[..., o:o + m, p:p + n]
            return self._window_read(v, own, sliced=2)
        if v.id in self.inline:
            p = v.producer
            if p.kind == "expand_dims" and p.attrs["axis"] < inner:
                ax = p.attrs["axis"]
                mine = outer[len(outer) - inner:] if inner else []
                return self._block(p.operands[0], mine[:ax] + mine[ax + 1:])
            return None
        return f"{self.name(v)}[{', '.join(own)}]" if own else self.name(v)

    def _lane_reduce(self, kind: str, part: str, acc: str, init: str, x: Value, outer: list[str]) -> None:
        """max/min of a row through LANES partial results, for rows that are an inlined
        expression rather than a tile of their own (those go to rt.row_max / row_min)."""
        j, lane = self.name.fresh("j"), self.name.fresh("lane")
        b = self.name.fresh("b")
        cmp = ">" if kind == "max" else "<"
        self.emit(f"for {lane} in range({LANES}):")
        self.emit(f"    {part}[{lane}] = {init}")
        self.emit(f"for {j} in range(0, {x.shape[-1] - x.shape[-1] % LANES}, {LANES}):")
        self.emit(f"    for {lane} in range({LANES}):")
        self.depth += 2
        self.emit(f"{b} = {self.ref(x, outer + [f'{j} + {lane}'])}")
        self.emit(f"{part}[{lane}] = {part}[{lane}] if {part}[{lane}] {cmp} {b} else {b}")
        self.depth -= 2
        self.emit(f"for {lane} in range({LANES}):")
        self.emit(f"    {acc} = {kind}({acc}, {part}[{lane}])")

    def op_dot(self, op: Op) -> None:
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        name = self.name(r)
        (m, k), n = a.shape, b.shape[1]
        if r.id in self.blocked:
            self._blocked_dot(op, self.blocked[r.id])
            return
        if self.options["dot"] == "blas" and r.dtype.name == "float32":
            if acc is None:
                self.emit(f"{name} = {self.empty(r)}")
            elif self._owns(acc, op):
                self.name.alias(r, self.name(acc))
            else:
                self.emit(f"{name} = {self.name(acc)}.copy()")
            self.emit(f"rt.matmul_into({self.name(a)}, {self.name(b)}, {self.name(r)}, {0.0 if acc is None else 1.0})")
            return
        self.emit(f"{name} = {self.name(acc)}.copy()" if acc is not None else
                  f"{name} = np.zeros(({m}, {n}), {np_type(r.dtype)})")
        i, kk, j = (self.name.fresh(s) for s in ("i", "k", "j"))
        aik = self.name.fresh("a_ik")
        cast = np_type(r.dtype)
        # k outside i: row kk of b stays in L1 while every row of the result takes its share
        self.emit_loop(kk, k)
        self.emit_loop(i, m, "    ")
        self.emit(f"        {aik} = {cast}({self.name(a)}[{i}, {kk}])")
        self.emit(f"        for {j} in range({n}):")
        self.depth += 2
        self.open_inner(j)
        self.emit(f"    {name}[{i}, {j}] += {aik} * {self.ref(b, [kk, j])}")
        self.close_inner()
        self.depth -= 2

    def _owns(self, v: Value, dot: Op | None = None) -> bool:
        """May ``dot`` overwrite tile ``v`` in place? Only if nothing else reads v and no other
        value shares its array. A loop-carried v qualifies when the loop carries this dot's
        result in its place and the array it starts from qualifies."""
        if self.count.get(v.id, 0) != 1:
            return False
        made_by = self.producer.get(v.id)
        if isinstance(made_by, tuple):
            loop, position = made_by
            return dot is not None and loop.blocks[0].yields[position] is dot.result and \
                self._owns(loop.operands[3 + position])
        return made_by is not None and made_by.kind in _FRESH and made_by.kind != "const"

    def op_trans(self, op: Op) -> None:
        src = self.name(op.operands[0])
        if op.result.id in self.dot_only and self.options["dot"] == "blas":
            # BLAS takes a transposed (Fortran-ordered) view as it is: no copy
            self.emit(f"{self.name(op.result)} = {src}.T")
        else:
            # element loops: np.ascontiguousarray(src.T) goes through Numba's generic strided copy
            r = op.result
            self.emit(f"{self.name(r)} = {self.empty(r)}")
            i, j = self.loops(r.shape)
            self.emit(f"{self.name(r)}[{i}, {j}] = {src}[{j}, {i}]")
            self.close(2)

    def op_reshape(self, op: Op) -> None:
        copy = ".copy()" if op.result.id in self.carried else ""  # a carried view would alias its source
        self.emit(f"{self.name(op.result)} = np.ascontiguousarray({self.name(op.operands[0])})"
                  f".reshape({op.attrs['shape']}){copy}")

    def op_gather(self, op: Op) -> None:
        src, index = op.operands
        r = op.result
        axis = op.attrs["axis"]
        name = self.name(r)
        self.emit(f"{name} = {self.empty(r)}")
        idx = self.loops(r.shape)
        self.open_inner(idx[-1])
        at = self.ref(index, idx)
        src_idx = [at if d == axis else ("0" if s == 1 else idx[d]) for d, s in enumerate(src.shape)]
        self.emit(f"{name}[{', '.join(idx)}] = {self.hoisted(f'{self.name(src)}[{chr(44).join(src_idx)}]')}")
        self.close_inner()
        self.close(len(idx))

    def op_for(self, op: Op) -> None:
        start, stop, step = (self.name(v) for v in op.operands[:3])
        inits = op.operands[3:]
        body = op.blocks[0]
        iv, carried = body.args[0], body.args[1:]
        slot = _Slot()   # the loop's private buffers (passes/buffers.py) go here, when first used
        self.lines.append(slot)
        for v in op.attrs.get("private", ()):
            self.private[v.id] = (slot, "    " * self.depth)
        for arg, init, res in zip(carried, inits, op.results):
            var = self.name(arg)
            self.emit(f"{var} = {self.name(init)}")
            self.name.alias(res, var)
        self.emit(f"for {self.name(iv)} in range({start}, {stop}, {step}):")
        self.depth += 1
        self.block(body)
        moved = [(self.name(a), self.name(y)) for a, y in zip(carried, body.yields) if self.name(a) != self.name(y)]
        if moved:  # (a dot that accumulated in place already left its result in the carried name)
            self.emit(f"{', '.join(a for a, _ in moved)} = {', '.join(y for _, y in moved)}")
        self.depth -= 1

    def op_if(self, op: Op) -> None:
        self.emit(f"if {self.name(op.operands[0])}:")
        for i, blk in enumerate(op.blocks):
            if i == 1:
                self.emit("else:")
            self.depth += 1
            self.block(blk)
            for res, y in zip(op.results, blk.yields):
                self.emit(f"{self.name(res)} = {self.name(y)}")
            self.depth -= 1


# ops whose result is a new array of its own (loads copy unless BLAS reads them as views or
# their readers index the tensor in place, and neither is ever a dot's accumulator: see
# passes/analysis.read_only_by_dot and passes/windows.py)
_FRESH = ELEMENTWISE | {"load", "dot", "reduce", "gather"}

def _tensor_index(name, offsets: list[Value], box: tuple, idx: list[str]) -> str:
    """The tensor index of tile element ``idx``: offset + loop variable on tiled axes. Cast to
    unsigned because these are never negative (the window checks made sure), and Numba
    otherwise adds a negative-index wraparound test to every access, which stops LLVM from
    vectorizing the copy (3x slower loads)."""
    out, t = [], 0
    for off, ext in zip(offsets, box):
        if ext is None:
            out.append(name(off))
        else:
            out.append(f"np.uintp({name(off)} + {idx[t]})")
            t += 1
    return ", ".join(out)


def kernel_symbol(fn: Function) -> str:
    """The generated function's name: the kernel's, plus its constexpr values."""
    parts = [fn.name] + [f"{k}{v}" for k, v in fn.constexprs.items() if isinstance(v, (int, bool, str))]
    return "_".join(str(p).lower().replace("-", "m") for p in parts)


def render(fn: Function, options: dict) -> str:
    return NumbaRenderer(fn, options).render()
