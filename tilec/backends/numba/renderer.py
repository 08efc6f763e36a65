"""Render tile IR as Python source for Numba: the file, expressions, elementwise loop nests,
dots and control flow (loads and stores: memory.py; reductions: reductions.py; blocked dots:
blocked_dots.py).

Tile shapes are static, so every tile op becomes an explicit loop nest over constant bounds
that LLVM vectorizes. What to inline, read in place, prefetch, block, fuse or allocate once is
decided by the Numba lowering passes (``tilec.passes.LOWERING["numba"]``) and stated on the IR;
this module prints it. The kernel function runs programs ``first`` to ``stop - 1``; the runner
hands such runs to CPU threads. ``dot`` lowers to ``np.dot`` (BLAS) or to a loop nest, as the
``dot`` option says.
"""
from __future__ import annotations

import re

from ...errors import TilecError
from ...ir import Block, Function, Op, Value
from ...passes.analysis import by_helper, in_place, inlined
from ..render import INFIX, Renderer, kernel_symbol
from .blocked_dots import BlockedDots
from .memory import Memory
from .reductions import Reductions
from .spelling import literal, np_type

_PYOP = {**INFIX, "floordiv": "//", "mod": "%", "pow": "**"}
_UNARY = {"exp": "np.exp({})", "exp2": "np.exp2({})", "log": "np.log({})", "log2": "np.log2({})",
          "sqrt": "np.sqrt({})", "abs": "abs({})", "floor": "np.floor({})", "ceil": "np.ceil({})",
          "tanh": "np.tanh({})", "sin": "np.sin({})", "cos": "np.cos({})", "erf": "math.erf({})"}

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


class NumbaRenderer(Memory, Reductions, BlockedDots, Renderer):
    backend = "numba"

    def __init__(self, fn: Function, options: dict):
        super().__init__(fn, options, {"np", "numba", "math", "rt", "prange", "pid", "grid0", "grid1", "grid2"})
        fn = self.fn    # lines: source lines, loop headers (_Header) and slots (_Slot)
        self.inline = inlined(fn)   # tiles computed inside their readers (passes/inlining.py)
        self.inner: dict | None = None   # the innermost loop being rendered (see open_inner)
        # what the lowering passes decided (tilec/passes): values a blocked dot reads through,
        # dot result id -> its BlockedDot, tile id -> the row sum its loop computes too, loads
        # read in place
        self.skipped = {op.result.id for op in fn.walk() if op.attrs.get("read_through")}
        self.blocked = {op.result.id: op.attrs["blocked"] for op in fn.walk() if "blocked" in op.attrs}
        self.fused_sums = {op.result.id: op.attrs["row_sum"].producer for op in fn.walk() if "row_sum" in op.attrs}
        self.windows = in_place(fn)
        self.window_offsets: dict[int, list[str]] = {}   # per window: its offset variables
        self.private: dict[int, tuple] = {}  # loop-private tile -> (its loop's _Slot, indent)
        self.buffers: dict[int, str] = {}   # loop-private tile -> its buffer, once allocated
        self.prefetch_rows: dict[int, list[str]] = {}  # window -> next step's offsets (_prefetch_plan)
        self.row_loops: dict[str, _Header] = {}  # loop variable -> its plain loop's header (emit_loop)

    # -- output -----------------------------------------------------------------------------
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
        head = self.header() + [
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

    def skip(self, op: Op) -> bool:
        """Inlined into its reader, read through by a blocked dot, or summed by the loop that
        made its operand."""
        return bool(op.results) and (op.results[0].id in self.inline or op.results[0].id in self.skipped) or \
            op.kind == "reduce" and self.fused_sums.get(op.operands[0].id) is op

    def block(self, block: Block) -> None:
        before = len(self.lines)
        super().block(block)
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
        if k == "from_quads":
            return self.ref(op.operands[0], [f"({own[0]} >> 2)", f"(4 * {own[1]} + ({own[0]} & 3))"])
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
        over = op.attrs.get("in_place_of")   # passes/views.py: written over that tile's array
        if over is not None:
            self.name.alias(r, self.name(over))
        name = self.name(r)
        if r.shape == ():
            self.emit(f"{name} = {self.expr(op, [])}")
            return
        if over is None:
            self.emit(f"{name} = {self.empty(r)}")
        row_sum = self.fused_sums.get(r.id)
        if row_sum is not None:
            self._materialize_summing_rows(op, row_sum)
            return
        idx = self.loops(r.shape)
        self.open_inner(idx[-1], rows=True)
        value = self.expr(op, idx)
        if over is not None:   # spelled as ref() reads it (size-1 axes at 0): one row view for both
            idx = ["0" if s == 1 else i for s, i in zip(r.shape, idx)]
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

    op_full = op_arange = op_unary = op_binary = op_where = op_expand_dims = op_broadcast = op_from_quads = materialize

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

    # -- structure ----------------------------------------------------------------------------

    def op_dot(self, op: Op) -> None:
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        name = self.name(r)
        (m, k), n = a.shape, b.shape[1]
        if r.id in self.blocked:
            self._blocked_dot(op, self.blocked[r.id])
            return
        if by_helper(op):
            self._int_dot_rows(op)
            return
        if self.options["dot"] == "blas" and r.dtype.name == "float32":
            if acc is None:
                self.emit(f"{name} = {self.empty(r)}")
            elif op.attrs.get("in_place_acc"):   # passes/views.py
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

    def _int_dot_rows(self, op: Op) -> None:
        """A byte dot reading b by rows, or in k-quad order (passes/int_dots.py): one call of the
        vector helper."""
        a, b = op.operands[:2]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        if acc is None:
            self.emit(f"{self.name(r)} = {self.empty(r)}")
        elif op.attrs.get("in_place_acc"):   # passes/views.py
            self.name.alias(r, self.name(acc))
        else:
            self.emit(f"{self.name(r)} = {self.name(acc)}.copy()")
        starts = self.prefetch_rows.pop(b.id, None)
        if starts is not None:   # the next step's rows of b, fetched while this step's are multiplied
            t, box = self.name(b.producer.operands[0]), b.producer.attrs["box"]
            row, ahead = self.name.fresh("row"), self.name.fresh("ahead")
            line = max(1, 64 // b.dtype.itemsize)
            self.emit(f"for {row} in range(max({starts[0]}, 0), min({starts[0]} + {box[0]}, {t}.shape[0])):")
            self.emit(f"    for {ahead} in range(max({starts[1]}, 0), min({starts[1]} + {box[1]}, {t}.shape[1]), {line}):")
            self.emit(f"        rt.prefetch({t}, (np.uintp({row}), np.uintp({ahead})))")
        shift, mask = op.attrs.get("b_unpack", (0, 255))
        tail = f"{self.name(r)}, {op.attrs['b_max']}, {acc is not None}, {shift}, {mask}"
        if op.attrs.get("quads") and all(self._plain_window(v) for v in (a, b)):
            # read in place by address: a view per operand and step costs atomic reference counts
            at = [f"{self.name(v)}, {', '.join(self.window_offsets[v.id])}, {v.shape[0]}, {v.shape[1]}" for v in (a, b)]
            self.emit(f"rt.int_dot_quads_at({at[0]}, {at[1]}, {tail})")
            return
        views = [self._window_read(v, [], len(v.shape)) if v.id in self.windows else self.name(v) for v in (a, b)]
        helper = "int_dot_quads" if op.attrs.get("quads") else "int_dot"
        self.emit(f"rt.{helper}({views[0]}, {views[1]}, {tail})")

    def _plain_window(self, v) -> bool:
        """A 2-D tile read in place from a 2-D tensor, both axes tiled (its window's offsets are
        the tile's)."""
        return v.id in self.windows and len(v.producer.attrs["box"]) == 2 and None not in v.producer.attrs["box"]

    def op_trans(self, op: Op) -> None:
        src = self.name(op.operands[0])
        if op.attrs.get("view"):   # passes/views.py
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
        copy = ".copy()" if op.attrs.get("copy") else ""   # passes/views.py
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


def render(fn: Function, options: dict) -> str:
    return NumbaRenderer(fn, options).render()
