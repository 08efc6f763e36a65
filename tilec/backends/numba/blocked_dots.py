"""Rendering of register-blocked dots (planned by ``tilec.passes.blocked_dots``): the operand's
elementwise expression inlined into a loop nest that unrolls the plan's shared axis together
with a few rows of the left operand, so one pass over the contiguous axis L computes several
operand rows from one read of each byte and takes them into 4U sums (dot(a, trans(b))) or into
the rows of the result (dot(a, b))."""
from __future__ import annotations

import math

from ...ir import Op, Value
from ...passes.blocked_dots import BlockedDot


class BlockedDots:
    """Rendering of blocked dots, mixed into NumbaRenderer."""

    # -- rendering ------------------------------------------------------------------------------
    def _blocked_dot(self, op: Op, plan: BlockedDot) -> None:
        a = op.operands[0]
        acc = op.operands[2] if len(op.operands) > 2 else None
        r = op.result
        if acc is None:
            self.emit(f"{self.name(r)} = {self.empty(r)}")
            if not plan.transposed:
                self.emit(f"{self.name(r)}[:] = 0")
        elif op.attrs.get("in_place_acc"):
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
