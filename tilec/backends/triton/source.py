"""Generated Triton source lives in a file named by its content hash (Triton reads a kernel's
source text with ``inspect``, so exec'd strings cannot be jitted). The file is imported only
after its content was compared with the source just rendered."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from ...runtime.cache import atomic_write, cache_dir, seed_from_read_only

_lock = threading.Lock()


def triton_dir() -> Path:
    return cache_dir() / "triton"


def use_tilec_cache_for_triton() -> None:
    """Triton's own artefacts go under the tilec cache unless ``TRITON_CACHE_DIR`` says otherwise."""
    if not os.environ.get("TRITON_CACHE_DIR"):
        import triton
        triton.knobs.cache.dir = str(triton_dir() / "artefacts")


def load(symbol: str, source: str) -> tuple[ModuleType, Path]:
    """Write ``source`` (unless an identical file exists) and import it as a module."""
    import triton
    digest = hashlib.sha256(f"{source}|triton {triton.__version__}".encode()).hexdigest()[:16]
    module_name = f"tilec_triton_{symbol}_{digest}"
    path = triton_dir() / f"{module_name}.py"
    with _lock:
        if module_name in sys.modules:
            return sys.modules[module_name], path
        seed_from_read_only([path])
        if not path.exists() or path.read_text() != source:
            atomic_write(path, source)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
        return module, path


def python_function(module: ModuleType, symbol: str):
    """The undecorated kernel function (``@triton.jit`` gives a JITFunction, or an
    InterpretedFunction under ``TRITON_INTERPRET=1``; both keep it as ``.fn``)."""
    obj = getattr(module, symbol)
    return getattr(obj, "fn", obj)
