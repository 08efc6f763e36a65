"""Where compiled kernels live, and how a damaged entry is noticed.

Every artefact is written atomically (temp file + rename). A manifest beside it records the
SHA-256 of each file; a file whose hash no longer matches is deleted and rebuilt rather than
loaded. Generated source is only ever imported after it was compared with the source we
would render now, so nothing read from the cache runs unless we just produced it ourselves.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

from ..errors import TilecError


ENV = "TILEC_CACHE_DIR"
_chosen: dict[str, Path] = {}        # configured root -> the directory this process writes to
_read_only: dict[str, Path] = {}     # configured root -> that root, when it could not be written
_chosen_lock = threading.Lock()


def configured_dir() -> Path:
    """``$TILEC_CACHE_DIR``, else ``~/.cache/tilec`` (not created here)."""
    return Path(os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tilec"))


def cache_dir() -> Path:
    """The directory compiled kernels are written to: the configured one (created if needed),
    or, when that cannot be written (a read-only mount, another user's directory), a private
    temporary directory for this process, said once in a warning. Kernels the read-only cache
    holds are still used: see ``read_only_twin``. A ``TILEC_CACHE_DIR`` naming a file is an error."""
    root = configured_dir()
    chosen = _chosen.get(str(root))
    if chosen is not None:
        return chosen
    with _chosen_lock:
        if str(root) not in _chosen:
            _chosen[str(root)] = _choose(root)
        return _chosen[str(root)]


def _choose(root: Path) -> Path:
    if root.exists() and not root.is_dir() or any(p.exists() and not p.is_dir() for p in root.parents):
        raise TilecError(f"the kernel cache {root} (${ENV} or ~/.cache/tilec) is a file, not a directory; "
                         f"set {ENV} to a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
        return root
    except OSError as e:
        private = Path(tempfile.mkdtemp(prefix="tilec-cache-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        if root.is_dir():
            _read_only[str(root)] = root
        warnings.warn(f"tilec: cannot write the kernel cache {root} ({e.strerror or e}); kernels already "
                      f"there are used read-only and new ones compile into {private} for this process only. "
                      f"Set {ENV} to a writable directory to keep them.", stacklevel=4)
        return private


def read_only_twin(path: Path) -> Path | None:
    """Where ``path`` (under ``cache_dir()``) lies in the configured cache when this process
    could not write that one and writes to a private directory instead; None otherwise."""
    root = configured_dir()
    origin = _read_only.get(str(root))
    if origin is None:
        return None
    try:
        return origin / Path(path).relative_to(cache_dir())
    except ValueError:
        return None


def readable(relative: str | Path) -> Path:
    """A file of the cache to read: the copy written by this process, else the read-only
    cache's (when the cache is read-only and that has one)."""
    path = cache_dir() / relative
    if not path.exists():
        twin = read_only_twin(path)
        if twin is not None and twin.exists():
            return twin
    return path


def seed_from_read_only(files: list[Path]) -> None:
    """Copy these cache files (paths under ``cache_dir()``) from the read-only cache, if it is
    read-only and holds them, keeping their modification times (Numba's index checks the
    source's). Callers check what they copied exactly as they check their own files."""
    for path in files:
        twin = read_only_twin(path)
        if twin is None or path.exists() or not twin.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(twin, path)
        except OSError:
            path.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Manifest:
    """``name.manifest.json``: {file name: sha256} for the artefacts of one cache entry."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, str] | None:
        try:
            data = json.loads(self.path.read_text())
            files = data["files"]
            if not isinstance(files, dict):
                raise ValueError("files is not a mapping")
            return {str(k): str(v) for k, v in files.items()}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            warnings.warn(f"tilec: corrupt cache manifest {self.path}; rebuilding that entry", stacklevel=3)
            return None

    def write(self, files: list[Path]) -> None:
        atomic_write(self.path, json.dumps({"files": {p.name: sha256_file(p) for p in files if p.exists()}},
                                           indent=1, sort_keys=True))

    def damaged(self, files: list[Path], recorded: dict[str, str] | None = None) -> list[Path]:
        """Files whose content differs from what the manifest recorded (``recorded``: its
        content, when the caller has read it already)."""
        recorded = self.read() if recorded is None else recorded
        if recorded is None:
            return []
        bad = []
        for p in files:
            want = recorded.get(p.name)
            if want is not None and p.exists() and sha256_file(p) != want:
                bad.append(p)
        return bad
