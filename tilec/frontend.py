"""Front end: reads a kernel's Python AST and builds tile IR.

The body is interpreted, not executed: Python-valued expressions (constexprs, tuples,
arithmetic on them) are folded on the spot; anything touching a tile or a runtime scalar
becomes IR. ``for`` over ``tc.range`` becomes a loop whose carried values are the names the
body reassigns; ``if`` on a runtime scalar becomes a branch yielding the names either side
assigns. Every problem is a ``TilecError`` naming the file and line.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import math
import operator
import textwrap
from typing import Any, Callable

from . import dsl
from . import dtypes as dt
from .builder import Builder
from .dtypes import DType
from .errors import TilecError
from .ir import Block, Function, TensorType, TileType, Value


class Func:
    """A helper written in the DSL (``@tc.func``), inlined at each call."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args, **kwargs):
        raise TilecError(f"@tc.func {self.__name__} can only be called from a kernel")


def parse_function(fn: Callable) -> tuple[ast.FunctionDef, str, int]:
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<kernel>"
    except (OSError, TypeError) as e:
        raise TilecError(f"cannot read the source of {fn.__name__}: {e}") from None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise TilecError(f"{fn.__name__} is not a plain function definition")
    ast.increment_lineno(tree, first - 1)
    return node, filename, first


def _closure(fn: Callable) -> dict[str, Any]:
    names = dict(fn.__globals__)
    if fn.__closure__:
        names.update({n: c.cell_contents for n, c in zip(fn.__code__.co_freevars, fn.__closure__)})
    return names


_BINOPS = {ast.Add: ("add", operator.add), ast.Sub: ("sub", operator.sub), ast.Mult: ("mul", operator.mul),
           ast.Div: ("truediv", operator.truediv), ast.FloorDiv: ("floordiv", operator.floordiv),
           ast.Mod: ("mod", operator.mod), ast.Pow: ("pow", operator.pow), ast.BitAnd: ("and", operator.and_),
           ast.BitOr: ("or", operator.or_), ast.BitXor: ("xor", operator.xor), ast.LShift: ("shl", operator.lshift),
           ast.RShift: ("shr", operator.rshift)}
_CMPOPS = {ast.Lt: ("lt", operator.lt), ast.LtE: ("le", operator.le), ast.Gt: ("gt", operator.gt),
           ast.GtE: ("ge", operator.ge), ast.Eq: ("eq", operator.eq), ast.NotEq: ("ne", operator.ne)}
_UNARY_DSL = ["exp", "exp2", "log", "log2", "sqrt", "rsqrt", "abs", "floor", "ceil", "sigmoid", "tanh",
              "erf", "sin", "cos"]


class _TensorShape(tuple):
    """``T.shape`` of a tensor parameter: a tuple of runtime scalars."""


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class FrontEnd:
    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.node, self.filename, _ = parse_function(fn)
        self.name = name or fn.__name__
        self.b = Builder()
        self.grid_rank = 1
        self.handlers = self._handlers()

    # -- entry --------------------------------------------------------------------------------
    def build(self, arg_types: dict[str, TensorType | TileType], constexprs: dict[str, Any]) -> Function:
        env: dict[str, Any] = {}
        params: list[Value] = []
        defaults = literal_defaults(self.node)
        for a in self.node.args.args:
            self.b.loc = self._where(a)
            if is_constexpr_annotation(a.annotation):
                if a.arg in constexprs:
                    env[a.arg] = constexprs[a.arg]
                elif a.arg in defaults:
                    env[a.arg] = defaults[a.arg]
                else:
                    raise TilecError(f"constexpr parameter {a.arg!r} of {self.name} has no value; pass it in "
                                     f"the config", self.b.loc)
            else:
                if a.arg not in arg_types:
                    raise TilecError(f"no argument for parameter {a.arg!r} of {self.name}", self.b.loc)
                v = Value(arg_types[a.arg], a.arg)
                params.append(v)
                env[a.arg] = v
        unknown = set(constexprs) - {a.arg for a in self.node.args.args}
        if unknown:
            raise TilecError(f"{self.name} has no constexpr parameter(s) {sorted(unknown)}", self._where(self.node))
        self._run_body(self.node.body, env, allow_return=False)
        used = {k: env[k] for k in constexprs} | {a.arg: env[a.arg] for a in self.node.args.args
                                                   if is_constexpr_annotation(a.annotation)}
        return Function(self.name, params, self.b.blocks[0], used, self.grid_rank, self.filename)

    # -- helpers ------------------------------------------------------------------------------
    def _where(self, node: ast.AST) -> str:
        return f"{self.filename}:{getattr(node, 'lineno', '?')}"

    def error(self, node: ast.AST, msg: str) -> TilecError:
        return TilecError(msg, self._where(node))

    def as_value(self, x: Any, like: Value | None = None, node: ast.AST | None = None) -> Value:
        """Turn a Python scalar into an IR constant, taking the dtype of ``like`` where sensible."""
        if isinstance(x, Value):
            return x
        if not isinstance(like, Value):
            like = None                  # two numbers, e.g. tc.where(c, 1.0, -1.0): float32 / int32
        if isinstance(x, bool):
            return self.b.const(x, dt.bool_)
        if isinstance(x, int):
            dtype = like.dtype if like is not None and not like.is_tensor and like.dtype.kind != "bool" else dt.int32
            if not dtype.is_float and not (-2**31 <= x < 2**31) and dtype.bits <= 32:
                dtype = dt.int64
            return self.b.const(x, dtype)
        if isinstance(x, float):
            dtype = like.dtype if like is not None and not like.is_tensor and like.dtype.is_float else dt.float32
            return self.b.const(x, dtype)
        raise TilecError(f"expected a tile or a number, got {type(x).__name__} {x!r}",
                         self._where(node) if node else None)

    # -- statements ---------------------------------------------------------------------------
    def _run_body(self, body: list[ast.stmt], env: dict, allow_return: bool) -> None:
        for i, stmt in enumerate(body):
            self.b.loc = self._where(stmt)
            try:
                self._stmt(stmt, env, allow_return and i == len(body) - 1)
            except TilecError as e:
                if e.where is None:
                    raise TilecError(e.message, self._where(stmt)) from None
                raise

    def _stmt(self, s: ast.stmt, env: dict, allow_return: bool) -> None:
        if isinstance(s, ast.Expr):
            if isinstance(s.value, ast.Constant) and isinstance(s.value.value, str):
                return  # docstring
            self.expr(s.value, env)
        elif isinstance(s, ast.Assign):
            value = self.expr(s.value, env)
            for t in s.targets:
                self._assign(t, value, env)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self._assign(s.target, self.expr(s.value, env), env)
        elif isinstance(s, ast.AugAssign):
            if not isinstance(s.target, ast.Name):
                raise self.error(s, "augmented assignment needs a plain name on the left")
            cur = self._name(s.target, env)
            self._assign(s.target, self._binop(type(s.op), cur, self.expr(s.value, env), s), env)
        elif isinstance(s, ast.For):
            self._for(s, env)
        elif isinstance(s, ast.If):
            self._if(s, env)
        elif isinstance(s, ast.Pass):
            pass
        elif isinstance(s, ast.Assert):
            test = self.expr(s.test, env)
            if isinstance(test, Value):
                raise self.error(s, "assert needs a compile-time condition (runtime asserts are not supported)")
            if not test:
                msg = self.expr(s.msg, env) if s.msg else "assertion failed"
                raise self.error(s, f"static assert failed: {msg}")
        elif isinstance(s, ast.Return):
            if not allow_return:
                raise self.error(s, "return is only allowed as the last statement of a @tc.func; kernels write "
                                    "results with tc.store")
            raise _Return(self.expr(s.value, env) if s.value is not None else None)
        elif isinstance(s, (ast.While, ast.Break, ast.Continue)):
            raise self.error(s, f"'{type(s).__name__.lower()}' is not supported in kernels; use tc.range loops")
        else:
            raise self.error(s, f"unsupported statement {type(s).__name__} in a kernel")

    def _assign(self, target: ast.expr, value: Any, env: dict) -> None:
        if isinstance(target, ast.Name):
            if isinstance(value, Value) and not value.hint and not value.is_tensor:
                value.hint = target.id
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, tuple) or len(value) != len(target.elts):
                raise self.error(target, f"cannot unpack {value!r} into {len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self._assign(t, v, env)
        else:
            raise self.error(target, "only names and tuples of names can be assigned; write tiles with tc.store")

    def _for(self, s: ast.For, env: dict) -> None:
        if s.orelse:
            raise self.error(s, "for/else is not supported")
        it = s.iter
        if not (isinstance(it, ast.Call)):
            raise self.error(s, "loops must iterate over tc.range(...) or tc.static_range(...)")
        fn = self.expr(it.func, env)
        args = [self.expr(a, env) for a in it.args]
        if fn is dsl.static_range:
            if not all(isinstance(a, int) for a in args):
                raise self.error(s, "tc.static_range bounds must be compile-time ints")
            for i in builtins.range(*args):
                self._assign(s.target, i, env)
                self._run_body(s.body, env, False)
            return
        if fn not in (dsl.range, builtins.range):
            raise self.error(s, "loops must iterate over tc.range(...) or tc.static_range(...)")
        if not isinstance(s.target, ast.Name):
            raise self.error(s, "the loop variable must be a single name")
        if not 1 <= len(args) <= 3:
            raise self.error(s, "tc.range takes (stop), (start, stop) or (start, stop, step)")
        start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
        if isinstance(step, Value) or step == 0:
            raise self.error(s, "tc.range step must be a non-zero compile-time int")
        bounds = [self.as_value(x, None, s) for x in (start, stop, step)]
        ity = dt.int64 if any(v.dtype == dt.int64 for v in bounds) else dt.int32
        bounds = [self.b.cast(v, ity) for v in bounds]
        assigned = _assigned_names(s.body) - {s.target.id}
        carried = [n for n in sorted(assigned) if n in env and isinstance(env[n], (Value, int, float, bool))
                   and not (isinstance(env[n], Value) and env[n].is_tensor)]
        inits = [self.as_value(env[n], None, s) for n in carried]
        op, body = self.b.for_op(*bounds, inits, carried)
        inner = dict(env)
        inner[s.target.id] = body.args[0]
        body.args[0].hint = s.target.id
        for n, a in zip(carried, body.args[1:]):
            inner[n] = a
        with self.b.region(body):
            self._run_body(s.body, inner, False)
            for n, init in zip(carried, inits):
                new = inner[n]
                if not isinstance(new, Value):
                    new = self.as_value(new, init, s)
                if new.shape != init.shape:
                    raise self.error(s, f"loop-carried {n!r} changes shape from {init.type} to {new.type} in the loop")
                if new.dtype != init.dtype:
                    new = self.b.cast(new, init.dtype)
                body.yields.append(new)
        self.b.loc = self._where(s)
        for n, r in zip(carried, op.results):
            env[n] = r
        for n in assigned - set(carried):
            env.pop(n, None)

    def _if(self, s: ast.If, env: dict) -> None:
        cond = self.expr(s.test, env)
        if not isinstance(cond, Value):
            self._run_body(s.body if cond else s.orelse, env, False)
            return
        if cond.shape != ():
            raise self.error(s, f"if needs a scalar condition, got a {cond.type} tile; use tc.where for tiles")
        if cond.dtype != dt.bool_:
            cond = self.b.binary("ne", cond, self.as_value(0, cond))
        envs, blocks = [], []
        for body in (s.body, s.orelse):
            inner, block = dict(env), Block()
            with self.b.region(block):
                self._run_body(body, inner, False)
            envs.append(inner)
            blocks.append(block)
        assigned = _assigned_names(s.body) | _assigned_names(s.orelse)
        kept = []
        for n in sorted(assigned):
            if n not in envs[0] or n not in envs[1]:
                env.pop(n, None)  # defined on one side only: not visible after the if
                continue
            a, other = envs[0][n], envs[1][n]
            if a is other or (not isinstance(a, Value) and not isinstance(other, Value) and a == other):
                env[n] = a
                continue
            like = a if isinstance(a, Value) else other if isinstance(other, Value) else None
            with self.b.region(blocks[0]):
                va = self.as_value(a, like, s)
            with self.b.region(blocks[1]):
                vb = self.as_value(other, like, s)
                if vb.shape != va.shape:
                    raise self.error(s, f"{n!r} is {va.type} in one branch and {vb.type} in the other")
                vb = self.b.cast(vb, va.dtype)
            blocks[0].yields.append(va)
            blocks[1].yields.append(vb)
            kept.append(n)
        op = self.b.if_op(cond, blocks[0], blocks[1], kept)
        for n, r in zip(kept, op.results):
            env[n] = r

    # -- expressions --------------------------------------------------------------------------
    def expr(self, e: ast.expr, env: dict) -> Any:
        try:
            return self._expr(e, env)
        except TilecError as err:
            if err.where is None:
                raise TilecError(err.message, self._where(e)) from None
            raise

    def _name(self, e: ast.Name, env: dict) -> Any:
        if e.id in env:
            return env[e.id]
        scope = _closure(self.fn)
        if e.id in scope:
            return scope[e.id]
        if hasattr(builtins, e.id):
            return getattr(builtins, e.id)
        raise self.error(e, f"name {e.id!r} is not defined (names assigned inside a loop or one branch of an if "
                            f"are not visible after it)")

    def _expr(self, e: ast.expr, env: dict) -> Any:
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name):
            return self._name(e, env)
        if isinstance(e, (ast.Tuple, ast.List)):
            return tuple(self.expr(x, env) for x in e.elts)
        if isinstance(e, ast.Attribute):
            return self._attribute(e, self.expr(e.value, env))
        if isinstance(e, ast.Subscript):
            return self._subscript(e, self.expr(e.value, env), env)
        if isinstance(e, ast.BinOp):
            return self._binop(type(e.op), self.expr(e.left, env), self.expr(e.right, env), e)
        if isinstance(e, ast.UnaryOp):
            v = self.expr(e.operand, env)
            if not isinstance(v, Value):
                return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                        ast.Invert: operator.invert}[type(e.op)](v)
            if isinstance(e.op, ast.UAdd):
                return v
            if isinstance(e.op, ast.USub):
                return self.b.unary("neg", v)
            return self.b.unary("not", v)
        if isinstance(e, ast.Compare):
            if len(e.ops) != 1:
                raise self.error(e, "chained comparisons are not supported; combine with & or |")
            a, c = self.expr(e.left, env), self.expr(e.comparators[0], env)
            name, pyop = _CMPOPS.get(type(e.ops[0]), (None, None))
            if name is None:
                raise self.error(e, f"unsupported comparison {type(e.ops[0]).__name__}")
            if not isinstance(a, Value) and not isinstance(c, Value):
                return pyop(a, c)
            a, c = self._operands(a, c, e)
            return self.b.binary(name, a, c)
        if isinstance(e, ast.BoolOp):
            vals = [self.expr(x, env) for x in e.values]
            if not any(isinstance(v, Value) for v in vals):
                out = vals[0]
                for v in vals[1:]:
                    out = (out and v) if isinstance(e.op, ast.And) else (out or v)
                return out
            out = self.as_value(vals[0])
            for v in vals[1:]:
                out = self.b.binary("and" if isinstance(e.op, ast.And) else "or", out, self.as_value(v, out))
            return out
        if isinstance(e, ast.IfExp):
            test = self.expr(e.test, env)
            if not isinstance(test, Value):
                return self.expr(e.body if test else e.orelse, env)
            a, c = self._operands(self.expr(e.body, env), self.expr(e.orelse, env), e)
            return self.b.where(test, a, c)
        if isinstance(e, ast.Call):
            return self._call(e, env)
        raise self.error(e, f"unsupported expression {type(e).__name__} in a kernel")

    def _operands(self, a: Any, c: Any, node: ast.AST) -> tuple[Value, Value]:
        if isinstance(a, Value) and a.is_tensor or isinstance(c, Value) and c.is_tensor:
            raise self.error(node, "arithmetic on a tensor parameter; load a tile from it with tc.load first")
        if isinstance(a, Value):
            return a, self.as_value(c, a, node)
        ca = self.as_value(a, c, node)
        return ca, self.as_value(c, ca, node)

    def _binop(self, kind: type, a: Any, c: Any, node: ast.AST) -> Any:
        name, pyop = _BINOPS.get(kind, (None, None))
        if name is None:
            raise self.error(node, f"unsupported operator {kind.__name__}")
        if not isinstance(a, Value) and not isinstance(c, Value):
            try:
                return pyop(a, c)
            except Exception as ex:  # a compile-time expression that Python rejects
                raise self.error(node, f"compile-time expression failed: {ex}") from None
        if kind is ast.MatMult:
            raise self.error(node, "use tc.dot for matrix products")
        a, c = self._operands(a, c, node)
        return self.b.binary(name, a, c)

    def _attribute(self, e: ast.Attribute, obj: Any) -> Any:
        if isinstance(obj, Value):
            if obj.is_tensor:
                if e.attr == "shape":
                    return _TensorShape(self.b.dim(obj, i) for i in builtins.range(obj.type.rank))
                if e.attr == "dtype":
                    return obj.dtype
                if e.attr == "ndim":
                    return obj.type.rank
                raise self.error(e, f"tensor parameters have .shape, .dtype and .ndim, not .{e.attr}")
            if e.attr == "shape":
                return obj.shape
            if e.attr == "dtype":
                return obj.dtype
            if e.attr == "T":
                return self.b.trans(obj)
            if e.attr == "to":
                return lambda dtype: self.b.cast(obj, dt.lookup(dtype))
            raise self.error(e, f"tiles have .shape, .dtype, .T and .to(dtype), not .{e.attr}")
        try:
            return getattr(obj, e.attr)
        except AttributeError:
            raise self.error(e, f"{_describe(obj)} has no attribute {e.attr!r}") from None

    def _subscript(self, e: ast.Subscript, obj: Any, env: dict) -> Any:
        if isinstance(obj, Value):
            items = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
            out, axis = obj, 0
            for it in items:
                if isinstance(it, ast.Constant) and it.value is None:
                    out = self.b.expand_dims(out, axis)
                    axis += 1
                elif isinstance(it, ast.Slice) and it.lower is None and it.upper is None and it.step is None:
                    axis += 1
                else:
                    raise self.error(e, "tiles can only be indexed with ':' and None (to add an axis); "
                                        "use tc.load offsets or tc.gather to pick elements")
            return out
        idx = self.expr(e.slice, env)
        if isinstance(idx, Value):
            raise self.error(e, "a runtime value cannot index a Python object")
        try:
            return obj[idx]
        except Exception as ex:
            raise self.error(e, f"compile-time indexing failed: {ex}") from None

    def _call(self, e: ast.Call, env: dict) -> Any:
        fn = self.expr(e.func, env)
        args = []
        for a in e.args:
            if isinstance(a, ast.Starred):
                args.extend(self.expr(a.value, env))
            else:
                args.append(self.expr(a, env))
        kwargs = {k.arg: self.expr(k.value, env) for k in e.keywords if k.arg}
        handler = self.handlers.get(id(fn))
        if handler is not None:
            try:
                return handler(*args, **kwargs)
            except TypeError as ex:
                raise self.error(e, f"bad arguments to tc.{fn.__name__}: {ex}") from None
        if isinstance(fn, Func):
            return self._inline(fn, args, kwargs, e)
        if fn in (builtins.min, builtins.max) and any(isinstance(a, Value) for a in args):
            out = args[0]
            for a in args[1:]:
                x, y = self._operands(out, a, e)
                out = self.b.binary("min" if fn is builtins.min else "max", x, y)
            return out
        if isinstance(fn, DType):
            if len(args) == 1 and isinstance(args[0], Value):
                return self.b.cast(args[0], fn)
            return self.b.const(args[0], fn)
        if any(isinstance(a, Value) for a in list(args) + list(kwargs.values())):
            raise self.error(e, f"unknown op {_describe(fn)}: only tc.* operations, @tc.func helpers and "
                                f"min/max take tiles or runtime scalars")
        if fn in (dsl.range, dsl.static_range):
            raise self.error(e, f"tc.{fn.__name__} is only valid as a for-loop iterator")
        try:
            return fn(*args, **kwargs)  # compile-time Python, e.g. math.log2(BK)
        except TilecError:
            raise
        except Exception as ex:
            raise self.error(e, f"compile-time call to {_describe(fn)} failed: {ex}") from None

    def _inline(self, func: Func, args: list, kwargs: dict, node: ast.AST) -> Any:
        sub = FrontEnd.__new__(FrontEnd)
        sub.fn, sub.b, sub.handlers = func.fn, self.b, self.handlers
        sub.node, sub.filename, _ = parse_function(func.fn)
        sub.name, sub.grid_rank = func.__name__, self.grid_rank
        names = [a.arg for a in sub.node.args.args]
        env = dict(literal_defaults(sub.node))
        if len(args) > len(names):
            raise self.error(node, f"{func.__name__} takes {len(names)} arguments, got {len(args)}")
        env.update(zip(names, args))
        env.update(kwargs)
        missing = [n for n in names if n not in env]
        if missing:
            raise self.error(node, f"{func.__name__} is missing argument(s) {missing}")
        saved = self.b.loc
        try:
            sub._run_body(sub.node.body, env, allow_return=True)
        except _Return as r:
            return r.value
        finally:
            self.grid_rank = max(self.grid_rank, sub.grid_rank)
            self.b.loc = saved
        return None

    # -- the DSL operations -------------------------------------------------------------------
    def _handlers(self) -> dict[int, Callable]:
        b = self.b

        def tile(x, like=None):
            return self.as_value(x, like)

        def offsets(offs, tensor):
            if not isinstance(offs, tuple):
                offs = (offs,)
            out = [b.cast(tile(o), dt.int32) if not isinstance(o, Value) else o for o in offs]
            for axis, o in enumerate(out):
                if not o.hint:
                    o.hint = f"{getattr(tensor, 'hint', '') or 't'}_off{axis}"
            return out

        def shape_of(shape):
            return (shape,) if isinstance(shape, int) or shape is None else tuple(shape)

        def program_id(axis):
            if axis not in (0, 1, 2):
                raise TilecError(f"tc.program_id axis must be 0, 1 or 2, got {axis!r}")
            self.grid_rank = max(self.grid_rank, axis + 1)
            return b.program_id(axis)

        def num_programs(axis):
            if axis not in (0, 1, 2):
                raise TilecError(f"tc.num_programs axis must be 0, 1 or 2, got {axis!r}")
            return b.num_programs(axis)

        def load(tensor, offs, shape, padding=0.0):
            return b.load(tensor, offsets(offs, tensor), shape_of(shape), float(padding))

        def store(tensor, offs, value, shape=None):
            b.store(tensor, offsets(offs, tensor), tile(value), None if shape is None else shape_of(shape))

        def limit(tensor, extents):
            if not isinstance(tensor, Value) or not tensor.is_tensor:
                raise TilecError("tc.limit needs a tensor parameter as its first argument")
            return b.limit(tensor, [None if e is None else tile(e) for e in shape_of(extents)])

        def zeros(shape, dtype=dt.float32):
            return b.full(shape_of(shape), b.const(0, dt.lookup(dtype)))

        def full(shape, value, dtype=None):
            v = tile(value) if dtype is None else (b.cast(value, dt.lookup(dtype)) if isinstance(value, Value)
                                                   else b.const(value, dt.lookup(dtype)))
            if v.shape != ():
                raise TilecError(f"tc.full needs a scalar value, got {v.type}")
            return b.full(shape_of(shape), v)

        def reduce(op):
            def r(x, axis, keepdims=False):
                return b.reduce(op, tile(x), axis, keepdims)
            return r

        def unary(op):
            return lambda x: b.unary(op, tile(x))

        def binary(op):
            def f(x, y):
                x, y = self._operands(x, y, self.node)
                return b.binary(op, x, y)
            return f

        def where(cond, x, y):
            x, y = self._operands(x, y, self.node)
            return b.where(tile(cond), x, y)

        def cdiv(x, y):
            if not isinstance(x, Value) and not isinstance(y, Value):
                return -(-x // y)
            x, y = self._operands(x, y, self.node)
            return b.binary("floordiv", b.binary("sub", b.binary("add", x, y), self.as_value(1, x)), y)

        table: dict[Callable, Callable] = {
            dsl.program_id: program_id, dsl.num_programs: num_programs, dsl.load: load, dsl.store: store, dsl.limit: limit,
            dsl.zeros: zeros, dsl.full: full, dsl.arange: lambda n: b.arange(n),
            dsl.dot: lambda a, c, acc=None: b.dot(tile(a), tile(c), None if acc is None else tile(acc)),
            dsl.trans: lambda x: b.trans(tile(x)),
            dsl.from_quads: lambda x: b.from_quads(tile(x)),
            dsl.where: where, dsl.cast: lambda x, dtype: b.cast(tile(x), dt.lookup(dtype)),
            dsl.sum: reduce("sum"), dsl.max: reduce("max"), dsl.min: reduce("min"),
            dsl.maximum: binary("max"), dsl.minimum: binary("min"),
            dsl.gather: lambda src, index, axis: b.gather(tile(src), tile(index), axis),
            dsl.reshape: lambda x, shape: b.reshape(tile(x), shape_of(shape)),
            dsl.broadcast_to: lambda x, shape: b.broadcast(tile(x), shape_of(shape)),
            dsl.expand_dims: lambda x, axis: b.expand_dims(tile(x), axis),
            dsl.cdiv: cdiv,
        }
        for name in _UNARY_DSL:
            table[getattr(dsl, name)] = unary(name)
        table[math.exp] = table[dsl.exp]
        table[math.sqrt] = table[dsl.sqrt]
        return {id(k): v for k, v in table.items()}


def literal_defaults(node: ast.FunctionDef) -> dict[str, Any]:
    args = node.args.args
    out = {}
    for a, d in zip(args[len(args) - len(node.args.defaults):], node.args.defaults):
        try:
            out[a.arg] = ast.literal_eval(d)
        except ValueError:
            pass
    return out


def is_constexpr_annotation(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    text = ast.unparse(annotation)
    return text.split(".")[-1] == "constexpr"


def _assigned_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    mod = getattr(obj, "__module__", None)
    return f"{mod}.{name}" if name and mod else name or type(obj).__name__
