"""The repository's import graph: no circles among modules, and the core (``tilec``) never
imports the packages built on it (``ops``, ``autotune``, ``hw_profiles``, ``bench``).

Imports are read with ``ast`` from every module, including imports inside functions and
``importlib.import_module("...")`` calls with a string literal, so a deferred import cannot
hide an upward arrow or a circle."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tilec", "ops", "autotune", "hw_profiles", "bench")
ABOVE_CORE = ("ops", "autotune", "hw_profiles", "bench")


@functools.cache
def modules() -> dict[str, Path]:
    """Module name -> file, for every .py file in the repository's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a relative ``from ... import``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name ``module`` may import, wherever in the file the import is."""
    tree = _tree(path)
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return names


@functools.cache
def graph() -> dict[str, set[str]]:
    """Module -> the repository modules it imports (a ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module, else of ``pkg``)."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imported in imported_names(name, path):
            if imported in mods:
                targets.add(imported)
        # ``from pkg import sub`` names both pkg and pkg.sub: keep pkg only when it is not
        # just the parent of a submodule also named
        for t in list(targets):
            if any(o.startswith(t + ".") for o in targets) and not _imports_package_itself(name, mods[name], t):
                targets.discard(t)
        targets.discard(name)
        edges[name] = targets
    return edges


def _imports_package_itself(module: str, path: Path, pkg: str) -> bool:
    """Whether ``module`` uses names of ``pkg``'s own ``__init__`` (``import pkg`` or
    ``from pkg import x`` where x is not a submodule)."""
    mods = modules()
    is_package = path.name == "__init__.py"
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import) and any(a.name == pkg for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and _absolute(module, is_package, node.level, node.module) == pkg:
            if any(f"{pkg}.{a.name}" not in mods for a in node.names):
                return True
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_core_imports_nothing_above_it():
    upward = sorted(f"{m} -> {t}" for m, ts in graph().items() if m.split(".")[0] == "tilec"
                    for t in ts if t.split(".")[0] in ABOVE_CORE)
    assert upward == [], "tilec imports packages built on it:\n" + "\n".join(upward)


def test_no_import_circles():
    found = cycles(graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_ops_never_import_the_tuner():
    """The tuner reads the registry of ops, never the reverse."""
    up = sorted(f"{m} -> {t}" for m, ts in graph().items() if m.split(".")[0] == "ops"
                for t in ts if t.split(".")[0] in ("autotune", "bench"))
    assert up == [], "\n".join(up)


def test_the_walk_sees_deferred_and_dynamic_imports(tmp_path):
    """The reader finds imports inside functions and importlib string literals (so the
    checks above could fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import ops.gemm\n    import importlib\n"
                   "    importlib.import_module('autotune.cli')\n    from .x import y\n")
    names = imported_names("tilec.sub.m", src)
    assert {"ops.gemm", "autotune.cli", "tilec.sub.x", "tilec.sub.x.y"} <= names
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
