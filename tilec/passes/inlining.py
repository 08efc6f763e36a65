"""Inlining: which tiles are never stored, their expression computed inside each reader
instead (``inline`` on the op that makes them). The rules differ for backends that lower tiles
to loop nests (Numba) and that spread them over threads (CUDA); both start from one use
analysis, ``single_use``."""
from __future__ import annotations

from typing import Iterator

from ..ir import ELEMENTWISE, Block, Function, Op, Value, uses
from .analysis import (EXPRESSION, INDEX_ONLY, SIXTEEN, by_helper, operand_identity, reads_as_expression, readers,
                       yielded)


def single_use(block: Block, count: dict[int, int]) -> Iterator[tuple[Op, Op]]:
    """(op, reader) for every op making a non-scalar tile (not a constant) that exactly one op
    reads, that reader in the same block: the use analysis every inlining rule starts from."""
    first_reader: dict[int, Op] = {}
    for op in block.ops:
        for v in op.operands:
            first_reader.setdefault(v.id, op)
        for child in op.blocks:
            yield from single_use(child, count)
    for op in block.ops:
        if op.kind == "const" or not op.results or op.result.shape == ():
            continue
        reader = first_reader.get(op.result.id)
        if count.get(op.result.id, 0) == 1 and reader is not None:
            yield op, reader


def inline_single_use(fn: Function, options: dict) -> Function:
    """Single-use elementwise tiles whose only reader is in the same block and can take an
    expression (another elementwise op, a reduction or a store): ``relu(acc + bias)`` fuses
    into the store. 16-bit roundings work on whole tiles and stay. A loop-nest dot reading
    each element of its right operand once (a one-row left operand) takes it inline too, e.g.
    codes unpacked right inside the dot's loop."""
    dot_loops = options.get("dot") == "loops"
    for op, reader in list(single_use(fn.body, uses(fn))):
        if op.kind not in ELEMENTWISE and op.kind != "gather":
            continue
        if op.kind == "cast" and op.attrs["dtype"] in SIXTEEN:
            continue
        r = op.result
        if dot_loops and _dot_reads_once(reader, r) or reads_as_expression(reader, r) and \
                not (reader.kind == "cast" and reader.attrs["dtype"] in SIXTEEN) and \
                not (reader.kind == "store" and reader.operands[0].dtype.name in SIXTEEN):
            op.attrs["inline"] = True
    return fn


def inline_pointwise(fn: Function, options: dict) -> Function:
    """For backends that spread a tile over threads (CUDA): a single-use expression tile whose
    reader reads it at the element the reading thread owns (a store, or an expression reading
    it at the same index) is computed inside that reader; tiles that only re-index or build
    constants go inline into any expression reader, as they add no reads of their own. A
    constant tile that only starts a loop-carried value stays."""
    for op, reader in list(single_use(fn.body, uses(fn))):
        if op.kind not in EXPRESSION:
            continue
        r = op.result
        if reader.kind == "for" and op.kind in INDEX_ONLY and r in reader.operands[3:]:
            pointwise = False
        elif reader.kind == "store":
            pointwise = True
        elif reader.kind in EXPRESSION:
            k = [v.id for v in reader.operands].index(r.id)
            pointwise = operand_identity(reader, k, True)
        else:
            continue
        if pointwise or op.kind in INDEX_ONLY:
            op.attrs["inline"] = True
    return fn


def _dot_reads_once(reader: Op, v: Value) -> bool:
    return reader.kind == "dot" and reader.operands[1] is v and reader.operands[0] is not v and \
        reader.operands[0].shape[0] == 1 and not by_helper(reader)   # a helper reads that one


def inline_index_tiles(fn: Function, options: dict) -> Function:
    """Tiles computed from constants and aranges only (e.g. the shift of each code in a packed
    byte, ``arange(P) * BITS``) go inline into every reader, even inside a loop: the expression
    is a few integer ops on the loop index, while a tile made outside the loop is a memory load
    a compiler must assume any store may change, which blocks vectorization."""
    reads, outlive = readers(fn), yielded(fn.body)
    index_only: set[int] = set()
    for op in fn.walk():
        if op.kind in ELEMENTWISE and op.kind != "const" and op.results and op.result.shape and \
                all(v.id in index_only or v.shape == () and v.producer is not None and
                    v.producer.kind == "const" for v in op.operands):
            r = op.result
            index_only.add(r.id)
            if r.id not in outlive and reads.get(r.id) and all(reads_as_expression(o, r) for o in reads[r.id]):
                op.attrs["inline"] = True
    return fn


# expanded expression nodes one loop body may take: GELU's erf form (x read three times, its
# rational polynomial reading t ten times) is about 200
_MAX_EXPRESSION = 1500


def inline_into_one_loop(fn: Function, options: dict) -> Function:
    """Elementwise tiles read several times, where every read ends up inside the loop nest of
    one op (x, |x| and t of GELU's 0.5 x erfc(-x / sqrt 2), all read by the store): computed in
    that loop too, so an epilogue is one pass over the tile with no tile written and read back;
    each read repeats one pure expression, which LLVM computes once. Not into a ``where``'s
    arms (lazily evaluated: a heavy arm makes a branch, not a select), nor past a bounded size."""
    _one_loop(fn.body, uses(fn))
    return fn


def _one_loop(block: Block, count: dict[int, int]) -> None:
    for op in block.ops:
        for child in op.blocks:
            _one_loop(child, count)
    reads: dict[int, list[Op]] = {}
    for op in block.ops:
        for v in op.operands:
            reads.setdefault(v.id, []).append(op)
    sink: dict[int, Op | None] = {}          # id(op) -> the op whose loop nest computes it
    marked: list[Op] = []
    for op in reversed(block.ops):
        if not op.attrs.get("inline"):
            if op.results and _candidate(op) and op.result.id in reads:
                r = op.result
                readers = reads[r.id]
                into = {id(sink.get(id(o), o)) for o in readers}
                target = sink.get(id(readers[0]), readers[0])
                if count.get(r.id, 0) == len(readers) > 1 and len(into) == 1 and target is not None and \
                        all(reads_as_expression(o, r) and not _in_arm(o, r) for o in readers) and \
                        not (target.kind in ("cast", "store") and _sixteen(target)):
                    op.attrs["inline"] = True
                    marked.append(op)
                    sink[id(op)] = target
                    continue
            sink[id(op)] = op
            continue
        readers = reads.get(op.result.id, []) if op.results else []
        targets = {id(sink.get(id(o), o)) for o in readers}
        sink[id(op)] = sink.get(id(readers[0]), readers[0]) if len(targets) == 1 else None
    if marked and max((_size(op) for op in block.ops if not op.attrs.get("inline")), default=0) > _MAX_EXPRESSION:
        for op in marked:
            del op.attrs["inline"]


def _candidate(op: Op) -> bool:
    return op.kind in ELEMENTWISE and op.kind != "const" and op.result.shape != () and \
        not (op.kind == "cast" and op.attrs["dtype"] in SIXTEEN)


def _sixteen(op: Op) -> bool:
    return op.attrs.get("dtype") in SIXTEEN if op.kind == "cast" else op.operands[0].dtype.name in SIXTEEN


def _in_arm(reader: Op, v: Value) -> bool:
    return reader.kind == "where" and any(x is v for x in reader.operands[1:])


def _size(op: Op, memo: dict[int, int] | None = None) -> int:
    """Nodes of op's expression with every inline operand written out in full."""
    memo = {} if memo is None else memo
    total = 1
    for v in op.operands:
        p = v.producer
        if p is not None and p.attrs.get("inline") and p.results:
            if id(p) not in memo:
                memo[id(p)] = _size(p, memo)
            total += memo[id(p)]
        else:
            total += 1
    return total
