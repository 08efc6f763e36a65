"""Register-blocked loop nests for float32 dots with few rows whose right operand is computed
(codes unpacked from packed bytes, dequantized keys), instead of a materialized tile and BLAS.

The operand's elementwise expression is inlined into the loop nest, so it is never stored.
Its tile must be (..., L) reshaped to (tokens, L) at most, L being the contiguous axis, and one
of its leading axes must leave every tile it reads by name unchanged: the shift axis of packed
codes, along which each byte read serves PB codes. That axis is unrolled (U of its entries per
pass) together with up to four rows of the left operand, so one pass over L computes U operand
rows from one read of each byte and takes them into 4U sums (dot(a, trans(b)): a's rows times
b's rows, reduced along L) or into 4 rows of the result (dot(a, b): a's weights times b's rows).

KIVI decode step (4 query rows, 256 tokens, d 128, 2-bit, one thread): keys 4.2 us against
5.7 for dequantizing them into a tile and calling BLAS, values 2.9 against 7.2 us. Blocking U
consecutive tokens instead (a byte row each) ran 1.6-1.8x slower than sharing the byte: no
such dot is blocked, it keeps BLAS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir import ELEMENTWISE, Function, Op, Value

_MAX_ROWS = 16      # more rows than this: BLAS's packed kernels win
_ROW_BLOCK = (4, 3, 2, 1)   # rows per pass: the first that divides the row count


@dataclass(frozen=True)
class BlockedDot:
    operand: Value      # the computed tile, (..., L)
    shared_axis: int    # a leading axis of it along which no tile read by name changes
    unroll: int         # entries of that axis per pass
    rows: int           # rows of the left operand per pass
    transposed: bool    # dot(a, trans(operand)) rather than dot(a, operand)


class BlockedDots:
    """Planning and rendering of blocked dots, mixed into NumbaRenderer."""

    def _plan_blocked_dots(self, fn: Function) -> dict[int, BlockedDot]:
        """Per dot result id: its plan. The operand joins ``inline``; the reshape and trans
        between it and the dot are not rendered (``skipped``)."""
        plans: dict[int, BlockedDot] = {}
        if self.options.get("dot") != "blas":
            return plans
        for op in fn.walk():
            plan, between = self._blocked_dot_plan(op)
            if plan is not None:
                plans[op.result.id] = plan
                self.skipped |= {v.id for v in between}
        return plans

    def _blocked_dot_plan(self, op: Op) -> tuple[BlockedDot | None, list[Value]]:
        if op.kind != "dot" or op.result.dtype.name != "float32":
            return None, []
        a, b = op.operands[:2]
        if a.shape[0] > _MAX_ROWS or a is b:
            return None, []
        between, x, transposed = [], b, False
        if x.producer is not None and x.producer.kind == "trans":
            between.append(x)
            x, transposed = x.producer.operands[0], True
        y = x
        if y.producer is not None and y.producer.kind == "reshape":
            between.append(y)
            y = y.producer.operands[0]
        p = y.producer
        if p is None or p.kind not in ELEMENTWISE or p.kind == "const" or len(y.shape) < 2 or \
                y.dtype.name != "float32" or y.shape[-1] != x.shape[-1] or \
                math.prod(y.shape[:-1]) != x.shape[0] or y.id in self.carried or \
                any(self.count.get(v.id, 0) != 1 or v.id in self.carried for v in between + [y]):
            return None, []
        self.inline.add(y.id)
        best = None
        for ax, n in enumerate(y.shape[:-1]):
            unroll = 4 if n % 4 == 0 else 2 if n % 2 == 0 else 1
            if unroll > 1 and not self._named_reads_vary(y, ax) and (best is None or unroll >= best[1]):
                best = (ax, unroll)
        if best is None:
            self.inline.discard(y.id)
            return None, []
        rows = next(r for r in _ROW_BLOCK if a.shape[0] % r == 0)
        return BlockedDot(y, best[0], best[1], rows, transposed), between

    def _named_reads_vary(self, v: Value, axis: int) -> bool:
        """Does a tile read by name inside v's inlined expression change along v's ``axis``?"""
        if axis < 0 or v.shape == () or v.shape[axis] == 1:
            return False
        if v.id not in self.inline:
            return True
        p = v.producer
        if p.kind == "gather":
            return True   # its table is read by name at an index computed per element
        if p.kind == "expand_dims":
            e = p.attrs["axis"]
            return axis != e and self._named_reads_vary(p.operands[0], axis - (axis > e))
        return any(self._named_reads_vary(w, axis - (len(v.shape) - len(w.shape))) for w in p.operands)

    # -- rendering ------------------------------------------------------------------------------
    def _blocked_dot(self, op: Op, plan: BlockedDot) -> None:
        a = op.operands[0]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        if acc is None:
            self.emit(f"{self.name(r)} = {self.empty(r)}")
            if not plan.transposed:
                self.emit(f"{self.name(r)}[:] = 0")
        elif self._owns(acc, op):
            self.name.alias(r, self.name(acc))   # accumulates in place
        else:
            self.emit(f"{self.name(r)} = {self.name(acc)}.copy()")
        name = self.name(r)
        y = plan.operand
        lead = y.shape[:-1]
        at: list[str] = []
        opened = 0
        for d, n in enumerate(lead):
            if d == plan.shared_axis:
                at.append("")
                if n > plan.unroll:
                    at[-1] = self.name.fresh("t")
                    self.emit(f"for {at[-1]} in range(0, {n}, {plan.unroll}):")
                    self.depth += 1
                    opened += 1
                continue
            at.append(self.name.fresh(f"i{d}"))
            self.emit(f"for {at[-1]} in range({n}):")
            self.depth += 1
            opened += 1
        m = a.shape[0]
        if m > plan.rows:
            rv = self.name.fresh("r")
            self.emit(f"for {rv} in range(0, {m}, {plan.rows}):")
            self.depth += 1
            opened += 1
            rows = [rv] + [f"{rv} + {k}" for k in range(1, plan.rows)]
        else:
            rows = [str(k) for k in range(plan.rows)]
        ax, base = plan.shared_axis, at[plan.shared_axis]
        unrolled = [at[:ax] + [f"{base} + {u}" if base else str(u)] + at[ax + 1:] for u in range(plan.unroll)]
        strides = [math.prod(lead[d + 1:]) for d in range(len(lead))]
        tokens = [" + ".join(f"{i} * {s}" if s > 1 else i for i, s in zip(idx, strides)) for idx in unrolled]
        if plan.transposed:
            self._blocked_rows_times_rows(name, a, y, rows, unrolled, tokens, acc is not None)
        else:
            self._blocked_weights_times_rows(name, a, y, rows, unrolled, tokens)
        self.depth -= opened

    def _blocked_rows_times_rows(self, name: str, a: Value, y: Value, rows: list[str], unrolled: list[list[str]],
                                 tokens: list[str], accumulate: bool) -> None:
        """out[i, token] (+)= sum over L of a[i, :] * y[token, :] for the pass's rows and tokens."""
        sums = [[self.name.fresh(f"{name}_acc") for _ in unrolled] for _ in rows]
        self.emit(f"{' = '.join(s for row in sums for s in row)} = np.float32(0)")
        c = self.name.fresh("c")
        self.emit(f"for {c} in range({y.shape[-1]}):")
        self.open_inner(c, rows=True)
        self.depth += 1
        xs = self._emit_reads(a, [[i, c] for i in rows], "x")
        es = self._emit_reads(y, [idx + [c] for idx in unrolled], "e")
        for row, x in zip(sums, xs):
            for s, e in zip(row, es):
                self.emit(f"{s} = {s} + {x} * {e}")
        self.close_inner()
        self.depth -= 1
        for i, row in zip(rows, sums):
            for s, token in zip(row, tokens):
                cell = f"{name}[{i}, {token}]"
                self.emit(f"{cell} = {cell} + {s}" if accumulate else f"{cell} = {s}")

    def _blocked_weights_times_rows(self, name: str, a: Value, y: Value, rows: list[str],
                                    unrolled: list[list[str]], tokens: list[str]) -> None:
        """out[i, :] += sum over the pass's tokens of a[i, token] * y[token, :]."""
        weights = [self._emit_reads(a, [[i, token] for token in tokens], "w") for i in rows]
        c = self.name.fresh("c")
        self.emit(f"for {c} in range({y.shape[-1]}):")
        self.open_inner(c, rows=True)
        self.depth += 1
        es = self._emit_reads(y, [idx + [c] for idx in unrolled], "e")
        for i, ws in zip(rows, weights):
            cell = self._cell(name, [i, c])
            self.emit(f"{cell} = {cell} + ({' + '.join(f'{w} * {e}' for w, e in zip(ws, es))})")
        self.close_inner()
        self.depth -= 1

    def _emit_reads(self, v: Value, indices: list[list[str]], prefix: str) -> list[str]:
        """Locals holding v at each index (its expression if v is inlined)."""
        names = []
        for idx in indices:
            names.append(self.name.fresh(prefix))
            self.emit(f"{names[-1]} = {self.ref(v, idx)}")
        return names
