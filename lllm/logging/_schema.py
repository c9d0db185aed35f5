"""The log file's schema version: recognising an lllm log, refusing one from a newer lllm, migrating older ones.

The version lives in SQLite's `PRAGMA user_version`. Logs written before versions were kept have 0 there and
a `sessions` table: that is version 1. Version 2 added the `tool_calls` table and the payload columns (cell
output and images, CALL_API params and answers, browser pages and screenshots); a version-1 file gets them
in place (`ALTER TABLE ... ADD COLUMN`, nothing rewritten), the first time a LogStore opens it for writing.
A reader (`lllm logs show`, `lllm logs serve`) opens the file read-only and reads either version as it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from lllm.errors import UsageError

SCHEMA_VERSION = 2
"""The schema this lllm writes (and the newest it reads)."""

_LLLM_SESSION_COLUMNS = {"id", "tactic", "state", "started_at", "task_hash"}

__all__ = ["SCHEMA_VERSION", "check_log", "connect_readonly", "schema_version"]


def connect_readonly(path: str | Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`): nothing this connection does can change the file."""
    uri = f"file:{quote(str(Path(path).expanduser().resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=busy_timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    return conn


def schema_version(conn: sqlite3.Connection, path: str) -> int | None:
    """The log's schema version; None for an empty database (a new log); UsageError when it is not a log.

    Raises:
        UsageError: the file is not a SQLite database, not an lllm log, locked past the busy timeout, or from
            a newer lllm.
    """
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")} if "sessions" in tables else set()
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from None
    if not tables and version == 0:
        return None
    if not _LLLM_SESSION_COLUMNS <= columns:
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise UsageError(f"{path!r} is a SQLite database but not an lllm log (its tables: {shown}); give the file "
                         "a tactic's log_store=sqlite_store(...) wrote, e.g. `--db runs/demo.db`",
                         path=path, reason="not_lllm")
    version = version or 1
    if version > SCHEMA_VERSION:
        raise UsageError(f"{path!r} was written by a newer lllm (log schema {version}); this lllm reads schemas up "
                         f"to {SCHEMA_VERSION}. Upgrade lllm (`pip install -U lllm`) to read it; the file was not "
                         "changed.", path=path, reason="newer_schema", version=version)
    return version


def check_log(path: str | Path) -> int:
    """Open `path` read-only and return its schema version, or raise a UsageError that says what is wrong.

    Nothing is written: not a row, not the journal mode, not the schema.
    """
    shown = str(path)
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"no log database at {shown!r}; a tactic built with log_store=sqlite_store({shown!r}) "
                         "creates it", path=shown, reason="missing")
    try:
        conn = connect_readonly(file, busy_timeout=2.0)
    except sqlite3.Error as exc:
        raise _unreadable(shown, exc) from None
    try:
        version = schema_version(conn, shown)
    finally:
        conn.close()
    if version is None:
        raise UsageError(f"{shown!r} is an empty SQLite database, not an lllm log yet; run a tactic with "
                         f"log_store=sqlite_store({shown!r}) first", path=shown, reason="empty")
    return version


def _unreadable(path: str, exc: sqlite3.Error) -> UsageError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return UsageError(f"{path!r} is locked by another process (SQLite: {text}); wait for it to finish, or stop "
                          "the process that holds an exclusive lock on it", path=path, reason="locked")
    if "not a database" in text or "malformed" in text or "encrypted" in text:
        return UsageError(f"{path!r} is not an lllm log: it is not a SQLite database (SQLite: {text}); give the "
                          "file a tactic's log_store=sqlite_store(...) wrote", path=path, reason="not_sqlite")
    return UsageError(f"cannot read the log {path!r}: SQLite says {text!r}", path=path, reason="unreadable")
