"""Loads and stores in the Numba renderer, mixed into NumbaRenderer: each tile load printed as
the lowering passes chose (``lowering`` on the load, passes/views.py): read in place with the
next step's rows prefetched, a BLAS view, a slab view or a copy; a box crossing the tensor's
edge is a padded copy."""
from __future__ import annotations

from ...ir import Op, Value
from .spelling import bits16, literal, np_type


class Memory:
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
            how = op.attrs["lowering"]    # passes/views.py
            if how == "in_place":
                self._prefetch_plan(op)
                self._load_window(op, target, store_dtype, fill, bounds, conds)
                return
            if how == "view":
                # BLAS reads the tile where it lies (a strided view): no copy
                self.emit(f"{target} = {self._view(tensor, offsets, box)}")
            else:
                spans = self._slab_spans(op) if how == "slab" else None
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
            edge_view = how == "view" and pad == 0
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

    def _prefetch_plan(self, op: Op) -> None:
        """The offsets of the box a window reads in its loop's next step, where the IR says to
        prefetch it (``prefetch``: each offset's step, passes/windows.py). The prefetches go row
        by row into the loop nest that reads the window (_prefetch_rows), spread over the step."""
        deltas = op.attrs.get("prefetch")
        if deltas is not None:
            self.prefetch_rows[op.result.id] = [self.name(o) if d == 0 else f"{self.name(o)} + {d}"
                                                for o, d in zip(op.operands[1:], deltas)]

    def _slab_spans(self, op: Op) -> list[str]:
        """The run-time conditions under which a ``slab`` load's box is a slab of whole rows,
        ``T[i, j, n:n + R]`` (passes/views.py): every sliced axis past the first starts at 0
        and spans the tensor, so that a C-ordered tensor gives a C-ordered view, no copy."""
        tensor, offsets, box = op.operands[0], op.operands[1:], op.attrs["box"]
        sliced = [ax for ax, e in enumerate(box) if e is not None]
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

    def op_limit(self, op: Op) -> None:
        """A view cut at the bounds: loads and stores test against its (smaller) shape."""
        bounds = dict(zip(op.attrs["axes"], op.operands[1:]))
        index = ", ".join(f":max({self.name(bounds[ax])}, 0)" if ax in bounds else ":"
                          for ax in range(op.result.type.rank))
        self.emit(f"{self.name(op.result)} = {self.name(op.operands[0])}[{index}]")

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
            if len(idx) < len(bounds):
                self.emit(f"for {var} in range({lo}, {hi}):")
            else:   # the innermost counts from 0: LLVM vectorizes no loop from a runtime start here
                step = self.name.fresh("j")
                self.emit(f"for {step} in range({hi} - {lo}):")
            self.depth += 1
        dst = _tensor_index(self.name, offsets, box, idx)
        if idx:
            self.open_inner(idx[-1])
            self.emit(f"{idx[-1]} = {bounds[-1][0]} + {step}")
        if sixteen:
            rhs = f"{bits}[{', '.join(idx)}]" if value.shape else f"{bits}[0]"
        else:
            rhs = self.ref(value, idx)
        self.emit(f"{tname}[{dst}] = {rhs}")
        self.close_inner()
        self.depth -= len(idx) + 1

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
