"""``tilec show OP``: the IR, the generated source and (with ``--arch``) the offline compile
report of one op under one config; with ``--passes`` the IR after each pass of the backend's
pipeline."""
from __future__ import annotations

import argparse
import textwrap

from tilec import backends
from tilec.errors import TilecError
from tilec.passes import print_after_all
from tilec.printer import format_function


def parse_assignments(text: str | None) -> dict:
    """``"BM=64,BN=64,dot=blas"`` -> {"BM": 64, "BN": 64, "dot": "blas"}."""
    out: dict = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise TilecError(f"expected KEY=VALUE, got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        out[key] = _value(value)
    return out


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def show(op_name: str, backend: str = "numba", config: dict | None = None, shape: dict | None = None,
         dtype: str = "float32", arch: str | None = None, what: str = "all") -> str:
    be = backends.get(backend)
    try:
        return _show(op_name, be, backend, config, shape, dtype, arch, what)
    except ModuleNotFoundError:
        reason = be.missing()         # the install hint the ops give (pip install 'tilec[triton]')
        if reason:
            raise TilecError(reason) from None
        raise


def _show(op_name, be, backend, config, shape, dtype, arch, what) -> str:
    import ops
    spec = ops.REGISTRY.get(op_name)
    if spec is None:
        raise TilecError(f"unknown op {op_name!r}; known: {', '.join(sorted(ops.REGISTRY))}")
    shape = {**spec.typical_shape(), **(shape or {})}
    space = spec.space(backend)
    cfg = {**spec.default_config(shape, backend), **(config or {})}
    reasons = space.reasons(cfg)
    if reasons:
        raise TilecError(f"config {cfg} does not fit {op_name}: {'; '.join(reasons)}")
    if spec.launch_ir is None:
        raise TilecError(f"{op_name} does not expose its kernel's IR to tilec show yet")
    kernel, fn, grid = spec.launch_ir(shape, dtype, cfg)
    # host-side keys (e.g. decode's split count NS) are the launcher's, not the kernel's
    _, given = kernel.split_config({k: v for k, v in cfg.items() if k in kernel.constexpr_names or k in be.options})
    options = be.resolve_options(given, kernel.name, kernel.constexpr_names)
    parts = [f"# {op_name} {shape} {dtype} on {backend}: config {cfg}, grid {grid}"]
    if what == "passes":
        arg_types = {name: p.type for name, p in zip(kernel.runtime_names, fn.params)}
        built = kernel.build(arg_types, fn.constexprs)
        return "\n".join(parts + ["", print_after_all(built, backend, options)])
    if what in ("all", "ir"):
        parts += ["", "## tile IR", format_function(fn)]
    if what in ("all", "source"):
        parts += ["", f"## {backend} source", be.render(fn, options)]
    if what in ("ptx", "log") and not arch:
        raise TilecError(f"--only {what} needs --arch (the {what} comes from the offline compile)")
    if arch:
        if not hasattr(be, "compile_offline"):
            raise TilecError(f"the {backend} backend has no offline compile (--arch is for triton and cuda)")
        report = be.compile_offline(fn, options, arch)
        if what in ("ptx", "log"):
            return _report_part(report, what, backend)
        parts += ["", f"## compile report for {arch}", report_summary(report)]
    return "\n".join(parts)


def report_summary(report, width: int = 100) -> str:
    """A compile report's figures, wrapped; its PTX and log only with ``--only ptx|log``
    (printed whole, they made the report one line of ~20 KB)."""
    if hasattr(report, "summary"):
        text = report.summary()
    else:
        fields = getattr(report, "__dataclass_fields__", {})
        text = " | ".join(f"{name} {getattr(report, name)}" for name in fields if name not in ("ptx", "log"))
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False))


def _report_part(report, what: str, backend: str) -> str:
    text = getattr(report, what, None)
    if text is None and what == "log":
        text = getattr(report, "ptxas_log", None)
    if text is None:
        raise TilecError(f"the {backend} compile report keeps no {what}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="print an op's IR, generated source and compile report")
    p.add_argument("op")
    p.add_argument("--backend", default="numba", choices=backends.names())
    p.add_argument("--config", help="e.g. BM=64,BN=64,BK=32 (missing keys take the default)")
    p.add_argument("--shape", help="e.g. M=1024,N=1024,K=1024")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--arch", help="sm_80, sm_86, sm_89 or sm_90: compile offline and report resources")
    p.add_argument("--only", choices=("ir", "source", "ptx", "log"),
                   help="print just the IR, the source, or (with --arch) the PTX or the compiler's log")
    p.add_argument("--passes", action="store_true",
                   help="print the IR after each pass of the backend's pipeline (like MLIR's print-after-all)")
    p.set_defaults(run=lambda a: print(show(a.op, a.backend, parse_assignments(a.config), parse_assignments(a.shape),
                                            a.dtype, a.arch, "passes" if a.passes else a.only or "all")))


def default_sources(backend_names=("numba", "triton", "cuda"), dtypes=None):
    """``(file name, generated source)`` for every op's default config on every backend and
    dtype (and the Numba loop-nest dots too): the set a change to the compiler is checked
    against, byte for byte."""
    import ops
    for op_name in sorted(ops.REGISTRY):
        spec = ops.REGISTRY[op_name]
        for backend in backend_names:
            variants = [{}, {"dot": "loops"}] if backend == "numba" else [{}]
            for dtype in dtypes or spec.dtypes:
                for extra in variants:
                    tag = "".join(f"_{k}-{v}" for k, v in extra.items())
                    yield (f"{op_name}_{backend}_{dtype}{tag}.txt",
                           show(op_name, backend, extra, dtype=dtype, what="source"))


def dump_sources(out_dir: str) -> int:
    """Write ``default_sources()`` into ``out_dir``; the number of files."""
    from pathlib import Path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, text in default_sources():
        (out / name).write_text(text)
        n += 1
    return n
