"""Cost-model inputs counted from a kernel's IR, over its whole launch: floating-point and
integer ops, special functions, bytes loaded and stored (per tensor), loop trips, the dots
with their shapes and operand types, table lookups, the element ops by the contiguous extent
they run along, partial (edge) tiles, and what one program keeps on chip. Loop bounds, branch
conditions and load offsets are evaluated from the tensors' shapes and the program ids, so a
change to a kernel (its tiles, its loops) changes what is counted; nothing is declared by hand.

Loads and stores count their whole box (edge tiles included): the traffic a kernel asks for.
Each tile also carries its valid extent (the part inside the tensors), from which the useful
work (``useful_flops``) and the bytes really moved (``valid_bytes``) are counted.

Speed (the tuner counts thousands of configs): a loop whose nested control does not depend on
its index or carried values is counted at its first and last trips (the last may be a partial
tile) and multiplied out; others step by step. Likewise programs along a grid axis that no
loop bound or branch depends on are counted at the axis's first and last program."""
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
_ADD = ("flops", "useful_flops", "dot_flops", "int_ops", "special", "bytes_loaded", "bytes_stored",
        "valid_bytes", "loop_trips", "lookups", "lookup_rows", "edge_accesses", "edge_elements", "edge_steps",
        "edge_in_loops")
_COUNTERS = ("dots", "dot_dtypes", "tensor_bytes", "tensor_valid_bytes", "elementwise")


@dataclass
class Workload:
    programs: int = 0
    flops: float = 0.0              # floating-point element ops, plus 2*m*n*k per dot (padding included)
    useful_flops: float = 0.0       # the same over the tiles' valid parts only
    dot_flops: float = 0.0          # the dots' part of flops
    int_ops: float = 0.0            # integer element ops (unpacking, index arithmetic on tiles)
    special: float = 0.0            # special-function evaluations (exp, log, sqrt, ...)
    bytes_loaded: float = 0.0       # whole boxes
    bytes_stored: float = 0.0
    valid_bytes: float = 0.0        # loaded + stored inside the tensors
    loop_trips: int = 0             # iterations of the kernel's loops, all programs together
    dots: Counter = field(default_factory=Counter)          # (m, n, k) -> how many
    dot_dtypes: Counter = field(default_factory=Counter)    # operand dtype name -> dot flops
    tensor_bytes: Counter = field(default_factory=Counter)  # tensor name -> bytes loaded + stored (boxes)
    tensor_valid_bytes: Counter = field(default_factory=Counter)   # ... inside the tensor
    # element ops (float and integer, conversions and fills included; dots excluded) by the
    # contiguous extent they run along (a whole fresh tile; the last axis of a loaded tile or
    # of a reduction's operand): what a CPU loop vectorizes over
    elementwise: Counter = field(default_factory=Counter)
    lookups: float = 0.0            # elements gathered from a table (tc.gather)
    lookup_rows: float = 0.0        # gathers times their leading (non-row) extents
    table_entries: int = 0          # the largest gathered table's extent along its axis
    edge_accesses: float = 0.0      # loads and stores whose box reaches outside the tensor
    edge_elements: float = 0.0      # the elements of those boxes
    edge_steps: float = 0.0         # (program, loop trip) pairs with such an access in the trip's
                                    # own body; a program without loop trips counts as one step
    edge_in_loops: float = 0.0      # the edge accesses made inside loops
    tensor_extents: dict = field(default_factory=dict)      # tensor name -> (shape, itemsize)
    approximate: bool = False       # a loop bound or branch could not be evaluated

    def add(self, other: "Workload", times: float = 1) -> None:
        for name in _ADD:
            setattr(self, name, getattr(self, name) + times * getattr(other, name))
        for name in _COUNTERS:
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] += times * v
        self.table_entries = max(self.table_entries, other.table_entries)
        self.approximate |= other.approximate

    @property
    def loop_ops(self) -> float:
        return float(sum(self.elementwise.values()))

    def min_bytes(self) -> float:
        """Each tensor the launch touches read or written once: the least traffic it needs."""
        return float(sum(math.prod(s) * e for name, (s, e) in self.tensor_extents.items()
                         if self.tensor_bytes.get(name)))


def count(fn: Function, grid: tuple, shapes: dict[str, tuple], scalars: dict[str, Any] | None = None,
          values: dict[str, Any] | None = None) -> Workload:
    """The workload of launching ``fn`` over ``grid``; ``shapes`` gives each tensor parameter's
    extents by its name, ``scalars`` scalar parameters' values (unknown ones leave the counts
    approximate only where a bound depends on them), ``values`` the contents of small tensors
    that the kernel reads single elements of for its bounds (e.g. sequence lengths)."""
    grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
    total = Workload(programs=math.prod(grid))
    env0: dict[int, Any] = {}
    for p in fn.params:
        if p.is_tensor:
            if p.hint not in shapes:
                raise KeyError(f"count({fn.name}): no extents for tensor parameter {p.hint!r}")
            shape = tuple(int(s) for s in shapes[p.hint])
            env0[p.id] = ("tensor", p.hint, shape, (values or {}).get(p.hint))
            total.tensor_extents[p.hint] = (shape, p.dtype.itemsize)
        else:
            env0[p.id] = (scalars or {}).get(p.hint)
    axes = _axes_with_control(fn)
    per_axis = []
    for a in range(3):
        g = grid[a]
        if a in axes or g <= 2:
            per_axis.append([(i, 1) for i in range(g)])
        else:
            per_axis.append([(0, g - 1), (g - 1, 1)])
    for i0, w0 in per_axis[0]:
        for i1, w1 in per_axis[1]:
            for i2, w2 in per_axis[2]:
                w = Workload()
                _block(fn.body, dict(env0), {}, (i0, i1, i2), grid, w)
                if w.edge_accesses > w.edge_in_loops and not w.loop_trips:
                    w.edge_steps += 1
                total.add(w, w0 * w1 * w2)
    return total


def tile_bytes(fn: Function) -> int:
    """On-chip bytes one program keeps live at a step: every tile it loads (in its type), every
    tile product it makes and every tile a loop carries (accumulators, running statistics)."""
    n = 0
    for op in fn.walk():
        if op.kind in ("load", "dot") and op.result.shape:
            n += op.result.type.nbytes
        elif op.kind == "for":
            n += sum(r.type.nbytes for r in op.results if r.shape)
    return n


def loop_tile_bytes(fn: Function) -> int:
    """Bytes of the tiles loaded inside loops: what streams through on-chip memory per step
    (a pipelined GPU program keeps one set per stage)."""
    def inside(block: Block, depth: int) -> int:
        n = 0
        for op in block.ops:
            if op.kind == "load" and op.result.shape and depth:
                n += op.result.type.nbytes
            for child in op.blocks:
                n += inside(child, depth + (op.kind == "for"))
        return n
    return inside(fn.body, 0)


def _axes_with_control(fn: Function) -> set[int]:
    """Grid axes whose program id (or count) a loop bound, branch condition or nested control
    depends on: programs along them are counted one by one."""
    out = set()
    for axis in range(3):
        roots = {op.result.id for op in fn.walk() if op.kind in ("program_id", "num_programs")
                 and op.attrs["axis"] == axis}
        if roots and _varies(fn.body, roots):
            out.add(axis)
    return out


def _value(env: dict, v: Value):
    return env.get(v.id)


def _block(block: Block, env: dict, valid: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    for op in block.ops:
        _op(op, env, valid, ids, grid, w)


def _vshape(valid: dict, v: Value) -> tuple:
    return valid.get(v.id, v.shape)


def _elementwise(shapes: list[tuple], out: tuple) -> tuple:
    """Valid extent of an elementwise result: per axis the least of the operands that span it
    (a broadcast axis of extent 1 takes the others')."""
    res = list(out)
    for s, full in shapes:
        if len(full) != len(out):
            continue
        for i, (v, f) in enumerate(zip(s, full)):
            if f == out[i]:
                res[i] = min(res[i], v)
    return tuple(res)


def _access(op: Op, env: dict, w: Workload) -> tuple:
    """Bytes of a load/store's box and its valid part; records edges. Returns the valid shape."""
    tensor = op.operands[0]
    box = op.attrs["box"]
    t = env.get(tensor.id)
    extents = t[2] if t else None
    offs = [env.get(v.id) for v in op.operands[1:1 + len(box)]]
    item = tensor.dtype.itemsize
    full = math.prod(e for e in box if e is not None)
    vdims, vals = [], []
    for axis, b in enumerate(box):
        o = offs[axis] if axis < len(offs) else None
        size = 1 if b is None else b
        if extents is None or o is None or axis >= len(extents):
            v = size
        else:
            v = max(0, min(size, extents[axis] - o)) if o >= 0 else max(0, min(size, size + o))
        vals.append(v)
        if b is not None:
            vdims.append(v)
    nvalid = math.prod(vals)
    if nvalid < full:
        w.edge_accesses += 1
        w.edge_elements += full
    w.tensor_bytes[tensor.hint] += full * item
    w.tensor_valid_bytes[tensor.hint] += nvalid * item
    w.valid_bytes += nvalid * item
    if op.kind == "load":
        w.bytes_loaded += full * item
    else:
        w.bytes_stored += full * item
    return tuple(vdims)


def _from_load(v: Value) -> bool:
    """Is ``v`` a loaded tile, or a view of one (unit axes added, broadcast)?"""
    p = v.producer
    while p is not None and p.kind in ("expand_dims", "broadcast") and p.operands:
        p = p.operands[0].producer
    return p is not None and p.kind == "load"


def _element(op: Op, env: dict):
    """A single element read from a tensor whose contents ``count`` was given, else None."""
    t = env.get(op.operands[0].id)
    offs = [env.get(v.id) for v in op.operands[1:1 + len(op.attrs["box"])]]
    if not t or t[3] is None or None in offs:
        return None
    try:
        import numpy as np
        return np.asarray(t[3])[tuple(offs)].item()
    except (IndexError, TypeError, ValueError):
        return None


def _last(shape: tuple) -> int:
    return shape[-1] if shape else 1


def _op(op: Op, env: dict, valid: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    k = op.kind
    if k == "for":
        _loop(op, env, valid, ids, grid, w)
        return
    if k == "if":
        cond = _value(env, op.operands[0])
        if cond is None:
            w.approximate = True
            branches = [Workload() for _ in op.blocks]
            for blk, bw in zip(op.blocks, branches):
                _block(blk, dict(env), dict(valid), ids, grid, bw)
            w.add(max(branches, key=lambda b: (b.flops, b.bytes_loaded)))
        else:
            _block(op.blocks[0 if cond else 1], env, valid, ids, grid, w)
        return
    if op.results and op.result.shape == ():
        env[op.result.id] = _scalar(op, env, ids, grid)
    elif op.results and not op.result.dtype.is_float and math.prod(op.result.shape) <= _TILE_VALUES:
        env[op.result.id] = _tile(op, env)
    if k == "load":
        valid[op.result.id] = _access(op, env, w)
        if not op.result.shape:
            env[op.result.id] = _element(op, env)
    elif k == "store":
        _access(op, env, w)
    elif k == "dot":
        a, b = op.operands[0], op.operands[1]
        (m, kk), n = a.shape, b.shape[1]
        (vm, vk), (vk2, vn) = _vshape(valid, a), _vshape(valid, b)
        w.dots[(m, n, kk)] += 1
        w.dot_dtypes[a.dtype.name] += 2.0 * m * n * kk
        w.dot_flops += 2.0 * m * n * kk
        w.flops += 2.0 * m * n * kk
        w.useful_flops += 2.0 * vm * vn * min(vk, vk2)
        out = (vm, vn)
        if len(op.operands) > 2:
            out = _elementwise([(_vshape(valid, op.operands[2]), op.operands[2].shape)], out)
        valid[op.result.id] = out
    elif k == "gather":
        r, src = op.result, op.operands[0]
        n = math.prod(r.shape)
        w.lookups += n
        w.lookup_rows += math.prod(r.shape[:-2]) if len(r.shape) > 2 else 1
        w.table_entries = max(w.table_entries, src.shape[op.attrs["axis"]])
        valid[r.id] = _elementwise([(_vshape(valid, v), v.shape) for v in op.operands], r.shape)
    elif k in ("unary", "binary", "where", "cast", "reduce", "full") and op.results and op.result.shape:
        r = op.result
        src = op.operands[0] if k == "reduce" else r
        n = math.prod(src.shape)
        if k == "reduce":
            vs = _vshape(valid, src)
            useful = math.prod(vs)
            axis = op.attrs["axis"]
            keep = op.attrs.get("keepdims")
            valid[r.id] = tuple(1 if (i == axis and keep) else v for i, v in enumerate(vs) if i != axis or keep)
        elif k == "full":
            useful = n
        else:
            vs = _elementwise([(_vshape(valid, v), v.shape) for v in op.operands if v.shape], r.shape)
            valid[r.id] = vs
            useful = math.prod(vs)
        # over fresh, contiguous tiles an elementwise op is one loop over all of them; a tile
        # read in place from a tensor (a load) is contiguous only along its last axis
        whole = k != "reduce" and not any(_from_load(v) for v in op.operands if v.shape)
        length = n if whole else _last(src.shape)
        w.elementwise[length] += n
        if k == "unary" and op.attrs["op"] in SPECIAL:
            w.special += n
        if k == "full" or k == "cast":
            w.int_ops += n if not r.dtype.is_float else 0
            return
        if (op.operands[0].dtype if k == "reduce" else r.dtype).is_float or \
                k == "binary" and op.operands[0].dtype.is_float:
            w.flops += n
            w.useful_flops += useful
        else:
            w.int_ops += n
    elif k in ("trans", "from_quads", "expand_dims", "broadcast", "reshape") and op.results and op.result.shape:
        r, vs = op.result, _vshape(valid, op.operands[0])
        if k == "trans":
            valid[r.id] = tuple(reversed(vs))
        elif k == "from_quads":
            valid[r.id] = (4 * vs[0], vs[1] / 4)
        elif k == "expand_dims":
            valid[r.id] = vs[:op.attrs["axis"]] + (1,) + vs[op.attrs["axis"]:]
        elif k == "broadcast":
            src = op.operands[0].shape
            if len(src) == len(r.shape):
                valid[r.id] = tuple(t if s == 1 else v for s, v, t in zip(src, vs, r.shape))
        elif k == "reshape" and r.shape:
            frac = math.prod(vs) / max(1, math.prod(op.operands[0].shape))
            valid[r.id] = (r.shape[0] * frac,) + tuple(r.shape[1:])


def _loop(op: Op, env: dict, valid: dict, ids: tuple, grid: tuple, w: Workload) -> None:
    start, stop, step = (_value(env, v) for v in op.operands[:3])
    body = op.blocks[0]
    iv, carried = body.args[0], body.args[1:]
    for arg, init in zip(carried, op.operands[3:]):
        env[arg.id] = _value(env, init)
        valid[arg.id] = _vshape(valid, init)
    if None in (start, stop, step) or step == 0:
        w.approximate = True
        trips = range(start or 0, (start or 0) + 1)
    else:
        trips = range(start, stop, step)
    if not _varies(body, {iv.id} | {a.id for a in carried}):
        n = len(trips)
        for i, times in ([(trips[0], n - 1), (trips[-1], 1)] if n > 1 else [(trips[0], 1)] if n else []):
            one = Workload()
            e = dict(env)
            e[iv.id] = i
            for a in carried:        # carried values are not evaluated: taken as full tiles
                e[a.id] = None
            _block(body, e, {**valid, **{a.id: a.shape for a in carried}}, ids, grid, one)
            _edge_trip(one)
            w.add(one, times)
        w.loop_trips += n
        for r in op.results:
            env[r.id] = None
        return
    for i in trips:
        env[iv.id] = i
        one = Workload()
        _block(body, env, valid, ids, grid, one)
        _edge_trip(one)
        w.add(one)
        for arg, y in zip(carried, body.yields):
            env[arg.id] = _value(env, y)
        w.loop_trips += 1
    for r, arg in zip(op.results, carried):
        env[r.id] = env.get(arg.id)


def _edge_trip(one: Workload) -> None:
    """One loop trip counted into ``one``: an edge step if its own body (not a nested loop)
    accessed a partial tile; all its accesses are then inside a loop."""
    if one.edge_accesses > one.edge_in_loops:
        one.edge_steps += 1
    one.edge_in_loops = one.edge_accesses


def _varies(body: Block, roots: set[int]) -> bool:
    """Does control nested in ``body`` (a loop bound, a branch condition) depend on ``roots``?
    Dependence flows through data, loop-carried values and branch results."""
    depends = set(roots)
    ops = list(_walk(body))
    while True:
        before = len(depends)
        for op in ops:
            ins = {v.id for v in op.operands}
            if op.kind == "for":
                blk = op.blocks[0]
                if any(v.id in depends for v in op.operands[:3]):
                    depends.add(blk.args[0].id)
                for arg, init, y in zip(blk.args[1:], op.operands[3:], blk.yields):
                    if init.id in depends or y.id in depends:
                        depends.add(arg.id)
                if ins & depends or any(y.id in depends for y in blk.yields):
                    depends.update(r.id for r in op.results)
            elif op.kind == "if":
                if ins & depends or any(y.id in depends for b in op.blocks for y in b.yields):
                    depends.update(r.id for r in op.results)
            elif ins & depends:
                depends.update(r.id for r in op.results)
        if len(depends) == before:
            break
    return any((o.kind == "for" and any(v.id in depends for v in o.operands[:3])) or
               (o.kind == "if" and o.operands[0].id in depends) for o in ops)


def _walk(block: Block):
    for op in block.ops:
        yield op
        for child in op.blocks:
            yield from _walk(child)


_TILE_VALUES = 4096        # integer/boolean tiles up to this size are evaluated (index math, bounds)
_NP_REDUCE = {"sum": "sum", "max": "max", "min": "min"}


def _tile(op: Op, env: dict):
    """The value of an integer or boolean tile (NumPy) where its operands are known, else None:
    loop bounds computed from index tiles (a causal mask's key range) then evaluate."""
    import numpy as np
    k = op.kind
    vals = [env.get(v.id) for v in op.operands]
    if any(v is None for v in vals):
        return None
    try:
        if k == "arange":
            return np.arange(op.attrs["n"])
        if k == "full":
            return np.full(op.attrs["shape"], vals[0])
        if k == "binary":
            f = {"max": np.maximum, "min": np.minimum, "and": np.bitwise_and, "or": np.bitwise_or,
                 "truediv": None}.get(op.attrs["op"], _PY[op.attrs["op"]])
            if f is None:
                return None
            out = f(*(np.asarray(v) for v in vals))
        elif k == "where":
            out = np.where(*vals)
        elif k == "cast":
            out = np.asarray(vals[0]).astype(np.int64 if op.result.dtype.is_int else bool)
        elif k == "unary" and op.attrs["op"] in ("neg", "not", "abs"):
            f = {"neg": np.negative, "not": np.logical_not, "abs": np.abs}[op.attrs["op"]]
            out = f(vals[0])
        elif k == "expand_dims":
            out = np.expand_dims(vals[0], op.attrs["axis"])
        elif k == "broadcast":
            out = np.broadcast_to(vals[0], op.attrs["shape"])
        elif k == "reshape":
            out = np.reshape(vals[0], op.attrs["shape"])
        elif k == "trans":
            out = np.transpose(vals[0])
        elif k == "from_quads":
            src = np.asarray(vals[0])
            rows, cols = src.shape
            out = src.reshape(rows, cols // 4, 4).transpose(0, 2, 1).reshape(4 * rows, cols // 4)
        else:
            return None
        return np.broadcast_to(out, op.result.shape) if np.shape(out) != op.result.shape else out
    except (ArithmeticError, ValueError, TypeError, KeyError):
        return None


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
        if k == "reduce":
            import numpy as np
            out = getattr(np, _NP_REDUCE[op.attrs["op"]])(vals[0])
            return out.item() if hasattr(out, "item") else out
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
