"""Where compiled kernels live, and how a damaged entry is noticed.

Every artefact is written atomically (temp file + rename). A manifest beside it records the
SHA-256 of each file; a file whose hash no longer matches is deleted and rebuilt rather than
loaded. Generated source is only ever imported after it was compared with the source we
would render now, so nothing read from the cache runs unless we just produced it ourselves.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path


def cache_dir() -> Path:
    """``$TILEC_CACHE_DIR``, else ``~/.cache/tilec``."""
    root = os.environ.get("TILEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tilec")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


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

    def damaged(self, files: list[Path]) -> list[Path]:
        """Files whose content differs from what the manifest recorded."""
        recorded = self.read()
        if recorded is None:
            return []
        bad = []
        for p in files:
            want = recorded.get(p.name)
            if want is not None and p.exists() and sha256_file(p) != want:
                bad.append(p)
        return bad
