"""Where every tile of a kernel lives on a thread block, decided once from the IR.

Both the renderer and the resource estimate read this plan, so the shared memory the
generated source declares is, by construction, the number the estimate reports.

* Layout: a tile of shape ``(..., rows, cols)`` is seen as ``rows x cols`` (leading axes folded
  into rows) and spread over a ``TM x TN`` grid of threads: thread ``(ty, tx)`` owns rows
  ``ty + i*TM`` and columns ``tx + j*TN``: an ``RM x RN`` register block. Every tile of a given
  shape has the same layout, so elementwise ops between equal shapes stay inside a thread.
* Storage: a tile stays in registers (``reg``) when every reader reads it at the element the
  reading thread owns; any other reader (a broadcast, ``dot`` operands, reductions, ``trans``,
  ``reshape``, ``gather`` sources, WMMA accumulators) needs it in shared memory (``smem``).
* Inlining: the ``inline`` annotations of the cuda lowering (``inline-pointwise``): such a
  tile is not stored at all; its expression is evaluated inside its reader's loop.
* Shared memory is one arena (declared static up to 48 KiB, dynamic above); buffers whose live
  ranges do not overlap share bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError
from ...ir import Block, Function, Op, Value, uses
from ...passes.analysis import EXPRESSION, inlined, operand_identity

ARENA_ALIGN = 32          # bytes; WMMA fragment pointers need 256-bit alignment
WARP = 32


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    rows: int
    cols: int
    tm: int
    tn: int

    @property
    def rm(self) -> int:
        return -(-self.rows // self.tm)

    @property
    def rn(self) -> int:
        return -(-self.cols // self.tn)

    @property
    def elems(self) -> int:
        """Register slots per thread."""
        return self.rm * self.rn

    @property
    def guarded(self) -> bool:
        """Whether some owned slots fall outside the tile (a bounds test is needed)."""
        return self.rows % self.tm != 0 or self.cols % self.tn != 0


def layout_for(shape: tuple[int, ...], threads: int, blocked: bool = False) -> Layout:
    """The thread grid for a tile: fewest slots per thread; then, for ``dot`` outputs
    (``blocked``), the squarest register block (fewest shared-memory reads per FMA), and for
    every other tile the widest rows a warp can cover (coalesced global memory access)."""
    rows = 1
    for s in shape[:-1]:
        rows *= s
    cols = shape[-1] if shape else 1
    best, best_key = None, None
    tn = 1
    while tn <= threads:
        lay = Layout(tuple(shape), rows, cols, threads // tn, tn)
        wide = -min(tn, WARP, 1 << max(0, cols - 1).bit_length())
        key = (lay.elems, lay.rm + lay.rn, wide, -tn) if blocked else (lay.elems, wide, lay.rm + lay.rn, -tn)
        if best_key is None or key < best_key:
            best, best_key = lay, key
        tn *= 2
    return best


@dataclass(frozen=True)
class Buffer:
    """A region of the shared-memory arena."""
    offset: int
    nbytes: int
    start: int      # live range in op positions (closed)
    end: int


@dataclass
class Plan:
    threads: int
    mma: str
    inline: set[int] = field(default_factory=set)          # value ids rendered as expressions
    home: dict[int, int] = field(default_factory=dict)     # value id -> id of the value owning its storage
    smem: dict[int, Buffer] = field(default_factory=dict)  # home id -> arena buffer
    wmma: set[int] = field(default_factory=set)            # ids of dot results lowered to WMMA
    arena_bytes: int = 0
    registers: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # reg home -> (start, end, words)
    positions: dict[int, int] = field(default_factory=dict)   # id(op) -> position in program order
    blocked: set[tuple[int, ...]] = field(default_factory=set)  # shapes of dot results (register-blocked)

    def home_of(self, v: Value) -> int:
        return self.home.get(v.id, v.id)

    def in_smem(self, v: Value) -> bool:
        return self.home_of(v) in self.smem

    def layout(self, shape: tuple[int, ...]) -> Layout:
        return layout_for(shape, self.threads, shape in self.blocked)


def wmma_applies(op: Op, mma: str) -> bool:
    """A dot goes to tensor cores when asked and the inputs are f16/bf16 in 16x16x16 pieces."""
    if mma != "wmma" or op.kind != "dot":
        return False
    a, b = op.operands[:2]
    (m, k), n = a.shape, b.shape[1]
    return a.dtype == b.dtype and a.dtype.name in ("float16", "bfloat16") and m % 16 == 0 and n % 16 == 0 \
        and k % 16 == 0


class _Planner:
    def __init__(self, fn: Function, threads: int, mma: str):
        self.fn = fn
        self.plan = Plan(threads, mma)
        self.count = uses(fn)
        self.pos: dict[int, int] = {}            # id(op) -> position (pre-order)
        self.end: dict[int, int] = {}            # id(op) -> last position inside its blocks
        self.loops: list[tuple[int, int]] = []   # (start, end) of every for body
        self.def_pos: dict[int, int] = {}        # value id -> defining position
        self.use_pos: dict[int, list[int]] = {}  # home id -> positions reading it
        self.random: set[int] = set()            # home ids read at an element another thread owns
        self.values: dict[int, Value] = {}
        self.counter = 0

    # -- positions ------------------------------------------------------------------------------
    def number(self, block: Block) -> None:
        for op in block.ops:
            self.pos[id(op)] = self.counter
            self.values.update({r.id: r for r in op.results})
            for r in op.results:
                self.def_pos[r.id] = self.counter
            self.counter += 1
            for child in op.blocks:
                for a in child.args:
                    self.def_pos[a.id] = self.pos[id(op)]
                self.number(child)
            self.end[id(op)] = self.counter  # yields of child blocks are read here
            if op.kind == "for":
                self.loops.append((self.pos[id(op)], self.counter))
            self.counter += 1 if op.blocks else 0

    # -- storage homes ------------------------------------------------------------------------------
    def plan_homes(self, block: Block) -> None:
        for op in block.ops:
            if op.kind == "for":
                body = op.blocks[0]
                for arg, res, y in zip(body.args[1:], op.results, body.yields):
                    self.plan.home[arg.id] = res.id
                    # acc = dot(a, b, acc) on tensor cores: accumulate in place in the carried buffer
                    p = y.producer
                    if p is not None and p.kind == "dot" and len(p.operands) > 2 and p.operands[2] is arg and \
                            wmma_applies(p, self.plan.mma) and p in body.ops and \
                            self.count.get(arg.id) == 1 and self.count.get(y.id) == 1:
                        self.plan.home[y.id] = res.id
            for child in op.blocks:
                self.plan_homes(child)

    # -- reads ------------------------------------------------------------------------------------
    def read(self, v: Value, at: int, ident: bool) -> None:
        if v.is_tensor or v.shape == ():
            return
        if v.id in self.plan.inline:
            p = v.producer
            for k in range(len(p.operands)):
                self.read(p.operands[k], at, operand_identity(p, k, ident))
            return
        h = self.plan.home_of(v)
        self.use_pos.setdefault(h, []).append(at)
        if not ident:
            self.random.add(h)

    def collect(self, block: Block) -> None:
        for op in block.ops:
            at = self.pos[id(op)]
            k = op.kind
            if op.results and op.result.id in self.plan.inline:
                pass  # read where it is inlined
            elif k in EXPRESSION:
                for i, v in enumerate(op.operands):
                    self.read(v, at, operand_identity(op, i, True))
            elif k == "store":
                self.read(op.operands[-1], at, True)
            elif k == "reduce":
                self.read(op.operands[0], at, False)
            elif k == "dot":
                wmma = wmma_applies(op, self.plan.mma)
                if wmma:
                    self.plan.wmma.add(op.result.id)
                self.read(op.operands[0], at, False)
                self.read(op.operands[1], at, False)
                if len(op.operands) > 2:
                    self.read(op.operands[2], at, not wmma)
            elif k == "for":
                for v in op.operands[3:]:
                    self.read(v, at, True)
            for child in op.blocks:
                self.collect(child)
                for y in child.yields:
                    self.read(y, self.end[id(op)], True)
            if k == "if":
                for r in op.results:  # written at the end of either branch
                    self.use_pos.setdefault(r.id, []).append(self.end[id(op)])

    # -- arena --------------------------------------------------------------------------------------
    def live_range(self, h: int) -> tuple[int, int]:
        start = self.def_pos[h]
        end = start
        for p in self.use_pos.get(h, []):
            end = max(end, p)
            for lo, hi in self.loops:  # read inside a loop it was defined before: live for the loop
                if lo <= p <= hi and not lo <= start <= hi:
                    end = max(end, hi)
                if lo <= p <= hi and start == lo:  # a loop-carried home lives for its loop
                    end = max(end, hi)
        return start, end

    def allocate(self, homes: dict[int, Value]) -> None:
        placed: list[tuple[int, int, int, int]] = []  # (offset, nbytes, start, end)
        for h in sorted(homes, key=lambda h: (self.def_pos[h], h)):
            v = homes[h]
            nbytes = max(1, v.type.numel) * v.dtype.itemsize
            start, end = self.live_range(h)
            offset = 0
            moved = True  # first fit: bump past every buffer live at the same time, until none overlaps
            while moved:
                moved = False
                for off, size, s, e in placed:
                    if s <= end and start <= e and off < offset + nbytes and offset < off + size:
                        offset, moved = _align(off + size), True
            placed.append((offset, nbytes, start, end))
            self.plan.smem[h] = Buffer(offset, nbytes, start, end)
            self.plan.arena_bytes = max(self.plan.arena_bytes, _align(offset + nbytes))

    def run(self) -> Plan:
        self.plan.blocked = {op.result.shape for op in self.fn.walk() if op.kind == "dot"}
        self.number(self.fn.body)
        self.plan_homes(self.fn.body)
        self.plan.inline = inlined(self.fn)   # the inline-pointwise pass (tilec/passes/inlining.py)
        self.collect(self.fn.body)
        homes: dict[int, Value] = {}
        for op in self.fn.walk():
            for r in op.results:
                if r.is_tensor or r.id in self.plan.inline:
                    continue
                h = self.plan.home_of(r)
                forced = op.kind == "reduce" or r.id in self.plan.wmma
                if forced or (r.shape != () and h in self.random):
                    homes[h] = self.values[h]
        self.allocate(homes)
        self.plan.positions = dict(self.pos)
        for op in self.fn.walk():
            for r in op.results:
                if r.is_tensor or r.shape == () or r.id in self.plan.inline or self.plan.home_of(r) in homes:
                    continue
                lay = self.plan.layout(r.shape)
                words = lay.elems * (2 if r.dtype.bits == 64 else 1)
                self.plan.registers[r.id] = (*self.live_range(r.id), words)
        return self.plan


def _align(n: int) -> int:
    return -(-n // ARENA_ALIGN) * ARENA_ALIGN


def make_plan(fn: Function, threads: int, mma: str) -> Plan:
    if threads < WARP or threads & (threads - 1):
        raise ConfigError(f"cuda option threads={threads} must be a power of two of at least {WARP} "
                          f"(whole warps; tiles are spread over a power-of-two thread grid)")
    return _Planner(fn, threads, mma).run()
