"""Reductions in the Numba renderer, mixed into NumbaRenderer: a loop nest, or the form the
choose-reductions pass named (``lowering`` on the reduce, passes/reductions.py)."""
from __future__ import annotations

from ...ir import Op, Value
from ...passes.reductions import LANES, ROW_BLOCK
from . import support as rt_support
from .spelling import np_type

_INIT = {"sum": "0", "max": "-np.inf", "min": "np.inf"}


class Reductions:
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
            # same sum into a local scalar
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
        loops) without AVX-512."""
        x, r = op.operands[0], op.result
        if not rt_support.PERMUTE16:   # AVX-512's 16-lane permute: a target feature
            return False
        src, index = x.producer.operands
        rank = len(x.shape)
        outer = [self.name.fresh(f"i{d}") for d in range(rank - 2)]
        tables, hits = self._block(src, outer), self._block(index, outer)
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

    def _block(self, v: Value, outer: list[str]) -> str:
        """The 2-D view of ``v``'s last two axes at the consumer's outer index (trailing
        alignment, as in ``ref``), through inlined expand_dims (passes/reductions.py made sure
        there is one)."""
        inner = len(v.shape) - 2
        own = ['0' if n == 1 else i for n, i in zip(v.shape[:inner], outer[len(outer) - inner:] if inner else [])]
        if v.id in self.windows:  # where it lies (see op_load): tensor[..., o:o + m, p:p + n]
            return self._window_read(v, own, sliced=2)
        if v.id in self.inline:   # an expand_dims in front of the last two axes
            ax = v.producer.attrs["axis"]
            mine = outer[len(outer) - inner:] if inner else []
            return self._block(v.producer.operands[0], mine[:ax] + mine[ax + 1:])
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
