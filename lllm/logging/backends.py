"""Log backends as lllm-core names them: `LogBackend` (a key-value store of bytes), `SQLiteBackend`,
`LocalFileBackend` and `NoOpBackend`, and what each means to a `LogStore`.

Our log is one SQLite file with a table per kind of trace record (see `lllm.logging.store`), not one value per
session in a key-value store, so a backend given to `LogStore(backend, partition=..., runtime=...)` says where
the log lives:

- `SQLiteBackend(db_path)`: the log file at `db_path`;
- `LocalFileBackend(root_dir)`: the log file `<root_dir>/lllm.db` (lllm-core writes one JSON file per session
  there instead; ours keeps sessions queryable with SQL and by `lllm logs`);
- `NoOpBackend()`: a store that records nothing (`noop_store()`);
- any other `LogBackend` subclass (Redis, Firestore, ...): each finished session is written to it as JSON
  under `<partition>/sessions/<id>`, with a summary under `<partition>/index/<id>`, the way lllm-core lays
  them out (`lllm.logging._kv_store`).

Every backend is also a working key-value store (`put`, `get`, `list_keys`, `delete`), as in lllm-core.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from lllm.errors import UsageError

__all__ = ["LOCAL_DB_NAME", "LocalFileBackend", "LogBackend", "NoOpBackend", "SQLiteBackend", "log_path_of"]

LOCAL_DB_NAME = "lllm.db"
"""The log file a `LocalFileBackend(root_dir)` (and `local_store(root_dir)`) keeps in its folder."""


class LogBackend(ABC):
    """A key-value store: string keys ("partition/sessions/<id>"), bytes values.

    Subclass it to keep the log somewhere else (`LogStore(MyBackend(), partition="prod")`); each finished
    session arrives as one JSON value, and `list_sessions` reads the index values back.
    """

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`, replacing what was there."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix` (all keys for "")."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` (no error when it is not there)."""


class SQLiteBackend(LogBackend):
    """The log in one SQLite file: `LogStore(SQLiteBackend("runs.db"))` is `sqlite_store("runs.db")`.

    As a key-value store it keeps its keys in a `kv` table of the same file, created on first use.

    Args:
        db_path: the file (its folder is created); `":memory:"` for a throwaway log.
        path: the same, under the name lllm-core's Lesson 7 writes (`SQLiteBackend(path=...)`).
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None, *,
                 path: str | os.PathLike[str] | None = None) -> None:
        self.db_path = _one_path("SQLiteBackend", "db_path", db_path, path)
        self._kv: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.db_path!r})"

    def _conn(self) -> sqlite3.Connection:
        if self._kv is None:
            if self.db_path != ":memory:":
                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
            self._kv = conn
        return self._kv

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO kv (key, data) VALUES (?, ?)", (key, bytes(data)))

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._conn().execute("SELECT data FROM kv WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def list_keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            rows = self._conn().execute("SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
                                        (len(prefix), prefix)).fetchall()
        return [r[0] for r in rows]

    def delete(self, key: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM kv WHERE key = ?", (key,))


class LocalFileBackend(LogBackend):
    """The log in a folder: `LogStore(LocalFileBackend("logs"))` keeps it in `logs/lllm.db`.

    As a key-value store it writes one file per key under the folder (key "a/b/c" -> `root_dir/a/b/c`);
    keys that would leave the folder (`..`, absolute paths) are refused.

    Args:
        root_dir: the folder (created on first write); `~` is expanded.
        path: the same, under the name lllm-core's Lesson 7 writes (`LocalFileBackend(path=...)`).
    """

    def __init__(self, root_dir: str | os.PathLike[str] | None = None, *,
                 path: str | os.PathLike[str] | None = None) -> None:
        self.root_dir = str(Path(_one_path("LocalFileBackend", "root_dir", root_dir, path)).expanduser())

    def __repr__(self) -> str:
        return f"LocalFileBackend({self.root_dir!r})"

    @property
    def db_path(self) -> str:
        """The log file a `LogStore` on this backend uses."""
        return str(Path(self.root_dir) / LOCAL_DB_NAME)

    def _file(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            raise UsageError(f"LocalFileBackend: {key!r} is not a valid key (slash-separated names, no '..')",
                             key=key)
        return Path(self.root_dir).joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, file)  # readers never see half a value

    def get(self, key: str) -> bytes | None:
        file = self._file(key)
        return file.read_bytes() if file.is_file() else None

    def list_keys(self, prefix: str = "") -> list[str]:
        root = Path(self.root_dir)
        if not root.is_dir():
            return []
        keys = []
        for file in root.rglob("*"):
            if file.is_file() and not file.name.startswith("."):
                key = file.relative_to(root).as_posix()
                if key.startswith(prefix) and key != LOCAL_DB_NAME and not key.startswith(LOCAL_DB_NAME + "-"):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)


class NoOpBackend(LogBackend):
    """Keeps nothing: `LogStore(NoOpBackend())` (`noop_store()`) records no session and lists none."""

    def __repr__(self) -> str:
        return "NoOpBackend()"

    def put(self, key: str, data: bytes) -> None:
        return None

    def get(self, key: str) -> bytes | None:
        return None

    def list_keys(self, prefix: str = "") -> list[str]:
        return []

    def delete(self, key: str) -> None:
        return None


def log_path_of(backend: LogBackend) -> str | None:
    """The SQLite log file a backend stands for (None: a `NoOpBackend` or a key-value backend of the user's)."""
    if isinstance(backend, (SQLiteBackend, LocalFileBackend)):
        return backend.db_path
    return None


def _one_path(cls: str, name: str, value: str | os.PathLike[str] | None,
              path: str | os.PathLike[str] | None) -> str:
    if value is not None and path is not None:
        raise UsageError(f"{cls}: give {name} or path, not both", key=name)
    chosen = value if value is not None else path
    if chosen is None:
        raise UsageError(f"{cls} needs the place of the log: {cls}({name}='...')", key=name)
    if not isinstance(chosen, (str, os.PathLike)):
        raise UsageError(f"{cls}: {name} must be a path, got {type(chosen).__name__}: {chosen!r:.80}", key=name)
    return os.fspath(chosen)
