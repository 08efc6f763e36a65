"""Cost-model inputs counted from a kernel's IR, over its whole launch: floating-point and
integer ops, special functions, bytes loaded and stored (per tensor), loop trips, and the
dots with their shapes. Loop bounds and branch conditions are evaluated from the tensors'
shapes and the program ids, so a change to a kernel (its tiles, its loops) changes what is
counted; nothing is declared by hand.

Loads and stores count their whole box (edge tiles included): the traffic a kernel asks for,
an upper bound on what it moves. A loop whose nested control does not depend on its index
or carried values is counted once and multiplied by its trips; others step by step."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .ir import Block, Function, Op, Value

SPECIAL = {"exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "tanh", "erf", "sin", "cos"}
_PY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
       "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b, "truediv": lambda a, b: a / b,
       "max": max, "min": min, "pow": lambda a, b: a ** b, "and": lambda a, b: a & b, "or": lambda a, b: a | b,
       "xor": lambda a, b: a ^ b, "shl": lambda a, b: a << b, "shr": lambda a, b: a >> b,
       "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
       "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}


@dataclass
class Workload:
    programs: int = 0
    flops: float = 0.0              # floating-point element ops, plus 2*m*n*k per dot
    dot_flops: float = 0.0          # the dots' part of flops
    int_ops: float = 0.0            # integer element ops (unpacking, index arithmetic on tiles)
    special: float = 0.0            # special-function evaluations (exp, log, sqrt, ...)
    bytes_loaded: float = 0.0
    bytes_stored: float = 0.0
    loop_trips: int = 0             # iterations of the kernel's loops, all programs together
    dots: Counter = field(default_factory=Counter)       # (m, n, k) -> how many
    tensor_bytes: Counter = field(default_factory=Counter)   # tensor name -> bytes loaded + stored
    approximate: bool = False       # a loop bound or branch could not be evaluated

    def add(self, other: "Workload", times: int = 1) -> None:
        for name in ("flops", "dot_flops", "int_ops", "special", "bytes_loaded", "bytes_stored", "loop_trips"):
            setattr(self, name, getattr(self, name) + times * getattr(other, name))
        for k, v in other.dots.items():
            self.dots[k] += times * v
        for k, v in other.tensor_bytes.items():
            self.tensor_bytes[k] += times * v
        self.approximate |= other.approximate


def count(fn: Function, grid: tuple, shapes: dict[str, tuple], scalars: dict[str, Any] | None = None) -> Workload:
    """The workload of launching ``fn`` over ``grid``; ``shapes`` gives each tensor parameter's
    extents by its name, ``scalars`` scalar parameters' values (unknown ones leave the counts
    approximate only where a bound depends on them)."""
    grid = tuple(grid) + (1,) * (3 - len(grid))
    total = Workload(programs=math.prod(grid))
    env0: dict[int, Any] = {}
    for p in fn.params:
        if p.is_tensor:
            env0[p.id] = ("tensor", p.hint, tuple(shapes[p.hint]))
        else:
            env0[p.id] = (scalars or {}).get(p.hint)
    for pid in range(total.programs):
        ids = (pid % grid[0], (pid // grid[0]) % grid[1], pid // (grid[0] * grid[1]))
        w = Workload()
        _block(fn.body, dict(env0), ids, grid, w)
        total.add(w)
    return total


def _value(env: dict, v: Value):
    return env.get(v.id)


def _block(block: Block, env: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    for op in block.ops:
        _op(op, env, ids, grid, w)


def _op(op: Op, env: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    k = op.kind
    if k == "for":
        _loop(op, env, ids, grid, w)
        return
    if k == "if":
        cond = _value(env, op.operands[0])
        if cond is None:
            w.approximate = True
            branches = [Workload() for _ in op.blocks]
            for blk, bw in zip(op.blocks, branches):
                _block(blk, dict(env), ids, grid, bw)
            w.add(max(branches, key=lambda b: (b.flops, b.bytes_loaded)))
        else:
            _block(op.blocks[0 if cond else 1], env, ids, grid, w)
        return
    if op.results and op.result.shape == ():
        env[op.result.id] = _scalar(op, env, ids, grid)
    if op.kind == "load":
        tensor = op.operands[0]
        n = math.prod(e for e in op.attrs["box"] if e is not None) * tensor.dtype.itemsize
        w.bytes_loaded += n
        w.tensor_bytes[tensor.hint] += n
    elif op.kind == "store":
        tensor = op.operands[0]
        n = math.prod(e for e in op.attrs["box"] if e is not None) * tensor.dtype.itemsize
        w.bytes_stored += n
        w.tensor_bytes[tensor.hint] += n
    elif op.kind == "dot":
        (m, kk), n = op.operands[0].shape, op.operands[1].shape[1]
        w.dots[(m, n, kk)] += 1
        w.dot_flops += 2.0 * m * n * kk
        w.flops += 2.0 * m * n * kk
    elif op.kind in ("unary", "binary", "where", "reduce") and op.results:
        r = op.result
        n = math.prod(op.operands[0].shape) if k == "reduce" else math.prod(r.shape)
        if k == "unary" and op.attrs["op"] in SPECIAL:
            w.special += n
        if (op.operands[0].dtype if k == "reduce" else r.dtype).is_float or \
                k == "binary" and op.operands[0].dtype.is_float:
            w.flops += n
        else:
            w.int_ops += n


def _loop(op: Op, env: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    start, stop, step = (_value(env, v) for v in op.operands[:3])
    body = op.blocks[0]
    iv, carried = body.args[0], body.args[1:]
    for arg, init in zip(carried, op.operands[3:]):
        env[arg.id] = _value(env, init)
    if None in (start, stop, step) or step == 0:
        w.approximate = True
        trips_range = [start or 0]
    else:
        trips_range = range(start, stop, step)
    if not _varies(body, {iv.id} | {a.id for a in carried}):
        env[iv.id] = trips_range[0] if len(trips_range) else None
        if len(trips_range):
            one = Workload()
            _block(body, dict(env), ids, grid, one)
            w.add(one, len(trips_range))
        w.loop_trips += len(trips_range)
        for r in op.results:
            env[r.id] = None
        return
    for i in trips_range:
        env[iv.id] = i
        _block(body, env, ids, grid, w)
        for arg, y in zip(carried, body.yields):
            env[arg.id] = _value(env, y)
        w.loop_trips += 1
    for r, arg in zip(op.results, carried):
        env[r.id] = env.get(arg.id)


def _varies(body: Block, roots: set[int]) -> bool:
    """Does control nested in ``body`` (a loop bound, a branch) depend on ``roots``?"""
    depends = set(roots)
    for op in _walk(body):
        if any(v.id in depends for v in op.operands) and op.kind not in ("for", "if"):
            depends.update(r.id for r in op.results)
    return any(o.kind in ("for", "if") and any(v.id in depends for v in o.operands) for o in _walk(body))


def _walk(block: Block):
    for op in block.ops:
        yield op
        for child in op.blocks:
            yield from _walk(child)


def _scalar(op: Op, env: dict, ids: tuple, grid: tuple):
    k = op.kind
    if k == "const":
        return op.attrs["value"]
    if k == "program_id":
        return ids[op.attrs["axis"]]
    if k == "num_programs":
        return grid[op.attrs["axis"]]
    if k == "dim":
        t = env.get(op.operands[0].id)
        return t[2][op.attrs["axis"]] if t else None
    vals = [env.get(v.id) for v in op.operands]
    if any(v is None for v in vals):
        return None
    try:
        if k == "binary":
            out = _PY[op.attrs["op"]](*vals)
            return int(out) if op.result.dtype.is_int and not isinstance(out, bool) else out
        if k == "cast":
            return vals[0] if not op.result.dtype.is_int else int(vals[0])
        if k == "where":
            return vals[1] if vals[0] else vals[2]
        if k == "unary" and op.attrs["op"] == "neg":
            return -vals[0]
    except (ArithmeticError, ValueError, TypeError):
        return None
    return None
