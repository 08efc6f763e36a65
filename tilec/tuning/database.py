"""The tuning database: an Optuna storage URL.

Default: ``sqlite:///<tilec cache dir>/tuning.db`` (embedded, no server; WAL journal so a
killed tuner leaves it readable and several local processes can share it). Any Optuna RDB
URL (``postgresql://user@host/db``) lets several machines tune one study together.
``$TILEC_TUNING_DB`` overrides the default; a plain file path stands for a SQLite file there.

Beside Optuna's own tables, one small table ``tilec_best`` keeps the best config per study
(= per tuning key, see ``keys.py``) as JSON, so an op call answers "which config?" with one
indexed read and without Optuna. It is derived data: ``rebuild_best`` recomputes it from
the studies.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import unquote

from ..errors import TilecError

from .keys import TuningKey

ENV = "TILEC_TUNING_DB"
BEST_TABLE = "tilec_best"
_SCALARS = (int, float, str, bool, type(None))


def as_url(where: str) -> str:
    """A storage URL as given, or for a plain file path the SQLite file there."""
    if where == "memory" or "://" in where:
        return where
    return f"sqlite:///{Path(where).expanduser().resolve()}"


def default_url() -> str:
    """``$TILEC_TUNING_DB`` (a URL or a file path) else the SQLite file in the cache dir (the
    dir is not created here)."""
    env = os.environ.get(ENV)
    if env:
        return as_url(env)
    root = os.environ.get("TILEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tilec")
    return f"sqlite:///{os.path.join(root, 'tuning.db')}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for other URLs and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = unquote(url[len("sqlite:///"):].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path)


def open_storage(url=None):
    """An Optuna storage for ``url`` (a URL, a SQLite file's path, "memory" for a throwaway
    in-process one; None: the default database); a storage object passes through as it is."""
    import optuna
    if url is not None and not isinstance(url, str):
        return url
    chosen = bool(url or os.environ.get(ENV))
    url = as_url(url) if url else default_url()
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    path = sqlite_path(url)
    engine_kwargs = {}
    if path is not None:
        _make_room(path, chosen)
        _set_aside_if_damaged(path)
        with sqlite3.connect(path, timeout=60) as con:   # WAL persists in the file
            con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs = {"creator": lambda: _sqlite_connect(path)}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    # Several tuners may open a new database at once, and creating Optuna's schema is not
    # safe against that race: local SQLite openers take turns under a file lock, and any
    # opener retries (the loser then finds the tables made).
    for attempt in range(6):
        try:
            with _schema_lock(path):
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
                _ensure_best_table(storage)
            return storage
        except ImportError as e:
            raise TilecError(f"tuning database {url!r} needs a driver that is not installed ({e}); "
                             f"for PostgreSQL: pip install 'tilec[postgres]'") from None
        except Exception as e:
            if attempt == 5:
                raise TilecError(f"cannot open tuning database {url!r}: {type(e).__name__}: {e}") from None
            time.sleep(0.2 * (attempt + 1))


def _make_room(path: Path, chosen: bool) -> None:
    """The default database's directory (the cache dir) is created; one the user named
    (``--storage``, ``$TILEC_TUNING_DB``) must exist: a typo is an error, not a new tree."""
    if path.is_dir():
        raise TilecError(f"tuning database {path} is a directory; name a file (e.g. {path / 'tuning.db'})")
    if chosen:
        if not path.parent.is_dir():
            raise TilecError(f"tuning database {path}: the directory {path.parent} does not exist "
                             f"(--storage / ${ENV} creates no directories); create it or name another file")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TilecError(f"cannot create the tuning database's directory {path.parent} "
                         f"($TILEC_CACHE_DIR or ~/.cache/tilec): {e.strerror or e}; set TILEC_CACHE_DIR "
                         f"to a writable directory or choose a file with --storage / ${ENV}") from None


def damage(path: Path) -> str | None:
    """Why the SQLite file at ``path`` cannot serve as a database (None: it can, or is absent)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        return None if "locked" in str(e) else str(e)
    except sqlite3.DatabaseError as e:
        return str(e)
    problems = [r[0] for r in rows if r and r[0] != "ok"]
    return "; ".join(problems[:3]) or None


def set_aside(path: Path, why: str) -> Path:
    """Move the database file (and its WAL files) to ``<name>.corrupt-<UTC time>``, saying so;
    the next open starts a new one."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    path.replace(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    forget()
    return target


def reset(url: str | None = None) -> tuple[Path | None, Path | None]:
    """Move the SQLite database (the default, or ``url``) aside so the next tune starts a new
    one: (the database's path, where the old file went; None when there was none)."""
    path = sqlite_path(as_url(url) if url else default_url())
    if path is None:
        raise TilecError("--reset-db works on SQLite files; drop a server database's tables yourself")
    if not path.is_file():
        return path, None
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=10)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")      # the moved file holds every commit
    with _schema_lock(path):
        return path, set_aside(path, "reset")


def _set_aside_if_damaged(path: Path) -> None:
    why = damage(path)
    if why is not None:
        with _schema_lock(path):
            if damage(path) is None:           # another tuner moved it first
                return
            target = set_aside(path, "corrupt")
        warnings.warn(f"tilec: the tuning database {path} is damaged ({why}); it was moved to {target} "
                      f"and a new one started (its tuned configs are lost; ops use defaults until re-tuned)",
                      stacklevel=3)


@contextlib.contextmanager
def _schema_lock(path: Path | None):
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:                  # not POSIX: rely on the retries
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    """WAL with synchronous=NORMAL: a commit is atomic and survives the process being killed
    (only a power cut may drop the newest commits), and it skips an fsync per write, which
    Optuna does a dozen times per trial."""
    con = sqlite3.connect(path, timeout=120, check_same_thread=False)
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _engine(storage):
    return getattr(storage, "engine", None)


def _ensure_best_table(storage) -> None:
    from sqlalchemy import text
    with _engine(storage).begin() as con:
        con.execute(text(f"CREATE TABLE IF NOT EXISTS {BEST_TABLE} (study_name VARCHAR(512) PRIMARY KEY, "
                         f"config TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, key_json TEXT NOT NULL)"))


def record_best(storage, key_name: str, config: dict, value: float, key_fields: dict,
                replace: bool = False) -> bool:
    """Keep ``config`` as the study's best if it beats the stored one (or, with ``replace``,
    in any case: a confirmed pick, see confirm.py); True if it was written."""
    if _engine(storage) is None or not math.isfinite(value):
        return False
    from sqlalchemy import exc, text
    payload = {"s": key_name, "c": json.dumps(config, sort_keys=True), "v": float(value),
               "k": json.dumps(key_fields, sort_keys=True)}
    for _ in range(3):
        try:
            with _engine(storage).begin() as con:
                row = con.execute(text(f"SELECT value FROM {BEST_TABLE} WHERE study_name = :s"), payload).first()
                if row is None:
                    con.execute(text(f"INSERT INTO {BEST_TABLE} (study_name, config, value, key_json) "
                                     f"VALUES (:s, :c, :v, :k)"), payload)
                    return True
                if replace or value < row[0]:
                    guard = "" if replace else " AND value > :v"
                    con.execute(text(f"UPDATE {BEST_TABLE} SET config = :c, value = :v, key_json = :k "
                                     f"WHERE study_name = :s{guard}"), payload)
                    return True
                return False
        except exc.IntegrityError:       # another tuner inserted first: compare again
            continue
    return False


def _parse_config(text: str) -> dict | None:
    """A stored config, accepted only as a flat JSON object of scalars."""
    try:
        cfg = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(cfg, dict) or not all(isinstance(k, str) and isinstance(v, _SCALARS) for k, v in cfg.items()):
        return None
    return cfg


def read_best(url: str, study_name: str) -> tuple[dict, float] | None:
    """(config, value) stored for one study, or None. Never creates a file."""
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            return None
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                row = con.execute(f"SELECT config, value FROM {BEST_TABLE} WHERE study_name = ?",
                                  (study_name,)).fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            if "no such table" not in str(e):
                _warn_unreadable(path, e)
            return None
    else:
        try:
            import sqlalchemy
            from sqlalchemy import text
            engine = sqlalchemy.create_engine(url)
            try:
                with engine.connect() as con:
                    row = con.execute(text(f"SELECT config, value FROM {BEST_TABLE} WHERE study_name = :s"),
                                      {"s": study_name}).first()
            finally:
                engine.dispose()
        except Exception:
            return None
    if row is None:
        return None
    cfg = _parse_config(row[0])
    return None if cfg is None else (cfg, float(row[1]))


_warned: set[str] = set()


def _warn_unreadable(path: Path, error: Exception) -> None:
    """Once per file and process: ops fall back to their default configs."""
    if str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(f"tilec: cannot read the tuning database {path} ({error}); ops use their default configs. "
                  f"`tilec tune --reset-db` moves it aside and starts a new one", stacklevel=5)


_memo: dict[tuple, dict | None] = {}
_memo_lock = threading.Lock()
_generation = 0          # bumped by forget(): whoever remembers a lookup's answer compares it


def lookup(op: str, shape: dict, dtype: str, backend: str, device: str) -> dict | None:
    """The tuned config for this call, or None (then the op uses its default).

    One database read per key and process; later calls are a dict lookup (the memo is keyed
    by the raw arguments, so a repeated call does not even rebuild the key). Creates no file
    and imports no Optuna."""
    url = default_url()
    try:
        fast = (url, op, tuple(sorted(shape.items())), dtype, backend, device)
        hash(fast)
    except (TypeError, AttributeError):
        fast = None                      # unhashable input: TuningKey.make says what is wrong
    if fast is not None and fast in _memo:
        cfg = _memo[fast]
        return dict(cfg) if cfg is not None else None
    name = TuningKey.make(op, shape, dtype, backend, device).study_name
    with _memo_lock:
        if (url, name) in _memo:
            cfg = _memo[(url, name)]
        else:
            found = read_best(url, name)
            cfg = _memo[(url, name)] = found[0] if found else None
        if fast is not None:
            _memo[fast] = cfg
    return dict(cfg) if cfg is not None else None


def forget() -> None:
    """Drop the per-process lookup memo (after a tune in this process, or in tests)."""
    global _generation
    with _memo_lock:
        _memo.clear()
        _generation += 1


def generation() -> int:
    """How many times the lookup memo was dropped: answers remembered under another one are stale."""
    return _generation


def rebuild_best(url: str | None = None) -> int:
    """Recompute ``tilec_best`` from the studies: the confirmed pick where a tune confirmed one
    (confirm.py), else the fastest complete trial; returns studies written."""
    import optuna
    storage = open_storage(url)
    n = 0
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if "config" in t.user_attrs and t.user_attrs.get("status") == "measured"]
        confirmed = study.user_attrs.get("confirmed")
        if confirmed:
            written = record_best(storage, summary.study_name, confirmed["config"], confirmed["value"],
                                  study.user_attrs.get("key", {}), replace=True)
        elif trials:
            best = min(trials, key=lambda t: t.value)
            written = record_best(storage, summary.study_name, best.user_attrs["config"], best.value,
                                  study.user_attrs.get("key", {}))
        else:
            written = False
        n += written
    return n
