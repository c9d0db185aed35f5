"""The LogStore: every tactic call session and its trace in SQLite (through sqlite-utils), safe under threads.

Tables (plain enough to query with `sqlite3 runs.db`):

- `sessions`: one row per tactic call, written when the call starts (`state='running'`), updated with every
  event (cost, tokens, counts, `last_event`, `updated_at`) and closed with `ok` or `error` (+ traceback).
  A process that dies mid-call leaves its row `running`, with `last_event` saying where it stopped.
- one table per trace record kind of `lllm.records`: `model_calls`, `agent_calls`, `cells`, `api_calls`,
  `browser_actions`; their columns are the record's fields (dicts and lists as JSON). A record of a kind this
  version does not know goes to `events` as JSON, so nothing is dropped.
- `dialogs`: the dialog tree of every agent at the end of its session (`Dialog.to_dict()` as JSON).

Concurrency: one connection; writes are committed in groups, in order, by one of two writers: the writing threads
themselves (leader commit, `_writer.py`: the thread that finds no commit running commits its write and every
write queued meanwhile in one `BEGIN IMMEDIATE` transaction), or, from a batch on, a writer process
(`_writer_process.py`) that commits on another core; readers share the connection under a lock; WAL journal and
a busy timeout for other processes. So 50 threads of one process (and several processes on one file) never
lose a row or see "database is locked". `start_session` and `end_session` return once committed; a trace record
is committed before `record` returns when no other thread is writing in-process, else within milliseconds, and
always before its session's end. The record queue is bounded: records past it are dropped, counted, and the
count is written into their session's metadata (`dropped_records`).

The file carries a schema version (`_schema.py`): older logs are migrated in place when opened for writing,
logs of a newer lllm are refused, and readers (`readonly=True`) never change a file.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sqlite3
import threading
import time
import warnings
import weakref
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii as _encode_ascii
from pathlib import Path
from types import UnionType
from typing import Any, Iterable, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import to_json as _pc_to_json

from lllm import records as trace
from lllm.errors import UsageError
from lllm.logging._core_api import CoreLogApi, parse_since
from lllm.logging._schema import SCHEMA_VERSION, check_log, connect_readonly, schema_version
from lllm.logging._commit import apply_ops, last_event
from lllm.logging._writer import GroupWriter
from lllm.logging._writer_process import ProcessWriter
from lllm.logging.backends import LogBackend
from lllm.logging.models import CostRow, DialogRow, SessionDetail, SessionRow
from lllm.records import TraceRecordAdapter, task_fingerprint, task_text

KIND_TABLES: dict[str, str] = {
    "model_call": "model_calls",
    "agent_call": "agent_calls",
    "tool_call": "tool_calls",
    "cell": "cells",
    "api_call": "api_calls",
    "browser_action": "browser_actions",
    "test_run": "test_runs",
}
"""Trace record kind -> the table that holds it."""

_SESSION_COLUMNS: dict[str, type] = {
    "id": str, "tactic": str, "state": str, "started_at": float, "updated_at": float, "ended_at": float,
    "duration_s": float, "cost": float, "prompt_tokens": int, "completion_tokens": int, "model_calls": int,
    "agent_calls": int, "tags": str, "metadata": str, "task": str, "task_hash": str, "result": str,
    "error": str, "traceback": str, "last_event": str, "batch_id": str, "task_index": int, "parent_id": str,
    "pid": int,
}
_SESSION_JSON = ("tags", "metadata", "result")
_END_BASE = ("state", "ended_at", "updated_at", "last_event", "error", "traceback")
_END_COST = ("cost", "prompt_tokens", "completion_tokens")
_END_RESULT = ("result",)
_END_METADATA = ("metadata",)
_TASK_TEXT_LIMIT = 10_000
_END_SQL: dict[tuple[str, ...], str] = {}


def _end_sql(columns: tuple[str, ...]) -> str:
    """The UPDATE that ends a session setting `columns` (plus the counts its last records add), built once."""
    sql = _END_SQL.get(columns)
    if sql is None:
        assignments = ", ".join(f"{k} = ?" for k in columns)
        sql = _END_SQL[columns] = (f"UPDATE sessions SET {assignments}, model_calls = model_calls + ?, "
                                   "agent_calls = agent_calls + ?, duration_s = ? - started_at WHERE id = ?")
    return sql
_NOT_RESTORABLE = object()
_REPR_LIMIT = 10_000


def _sql_type(annotation: Any) -> type:
    """The SQLite column type for a pydantic field annotation (anything structured is stored as JSON text)."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else Any
    if get_origin(annotation) is Literal:
        return str
    if annotation is bool or annotation is int:
        return int
    if annotation is float:
        return float
    return str


_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _record_fields(kind: str) -> tuple[frozenset[str], frozenset[str]]:
    """The fields of the record class of `kind`, and those stored as JSON text (dicts and lists)."""
    found = _FIELDS.get(kind)
    if found is None:
        cls = next(c for c in trace.RECORD_TYPES if c.model_fields["kind"].default == kind)
        plain = {str, int, float, bool}
        json_fields = {name for name, f in cls.model_fields.items()
                       if _sql_type(f.annotation) is str and not _is_plain(f.annotation, plain)}
        found = _FIELDS[kind] = (frozenset(cls.model_fields), frozenset(json_fields))
    return found


def _is_plain(annotation: Any, plain: set[type]) -> bool:
    if get_origin(annotation) in (Union, UnionType):
        return all(_is_plain(a, plain) for a in get_args(annotation) if a is not type(None))
    return annotation in plain or get_origin(annotation) is Literal


def _record_columns(cls: type[BaseModel]) -> dict[str, type]:
    return {name: _sql_type(field.annotation) for name, field in cls.model_fields.items()}


def to_json_text(value: Any) -> str:
    """`value` as JSON text for a column: pydantic-core's encoder (a few times faster than `json.dumps`, which
    matters on a batch's hot path), objects it does not know as their repr. Text with lone surrogates (which no
    UTF-8 column takes) is written with `\\uXXXX` escapes instead."""
    try:
        return _pc_to_json(value, fallback=repr).decode()
    except ValueError:  # PydanticSerializationError: a lone surrogate, or a value whose repr failed
        return json.dumps(value, default=repr, ensure_ascii=True)


def _to_sql(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return int(value) if isinstance(value, bool) else value
    if not value and isinstance(value, (dict, list)):  # the usual empty tags and metadata, without the encoder
        return "{}" if isinstance(value, dict) else "[]"
    return to_json_text(value)


def encode_result(value: Any) -> str:
    """Encode a tactic result as JSON: `{"type": "none"|"str"|"json"|"pydantic"|"repr", "value": ...}`."""
    if value is None:
        return '{"type": "none"}'
    if isinstance(value, str):  # the usual result: one C call instead of json.dumps' encoder set-up
        try:
            return '{"type": "str", "value": ' + _pc_to_json(value).decode() + "}"
        except ValueError:  # lone surrogates: escaped
            return '{"type": "str", "value": ' + _encode_ascii(value) + "}"
    if isinstance(value, BaseModel):
        cls = type(value)
        return json.dumps({"type": "pydantic", "class": f"{cls.__module__}:{cls.__qualname__}",
                           "value": value.model_dump(mode="json")}, ensure_ascii=False)
    try:  # json.dumps, not pydantic: "json" promises that decoding gives the value back (a set or a date is a repr)
        return json.dumps({"type": "json", "value": value}, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps({"type": "repr", "value": repr(value)[:_REPR_LIMIT]}, ensure_ascii=False)


def decode_result(text: str | None, *, strict: bool = False) -> Any:
    """Decode what `encode_result` wrote. With `strict`, a result that cannot be rebuilt exactly (a repr, a
    pydantic class that no longer imports) gives a private sentinel instead of an approximation."""
    if text is None:
        return None
    data = json.loads(text)
    kind = data.get("type")
    if kind == "none":
        return None
    if kind in ("str", "json"):
        return data["value"]
    if kind == "pydantic":
        module, _, qualname = data["class"].partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj.model_validate(data["value"])
        except Exception:  # noqa: BLE001 - the class moved or changed: fall back to its data
            return _NOT_RESTORABLE if strict else data["value"]
    return _NOT_RESTORABLE if strict else data.get("value")


_PID = os.getpid()
"""This process's pid, kept up to date in forked children (a syscall less on every write of a batch)."""


def _close_quietly(writer: ProcessWriter) -> None:
    """Close the writer process of a store that was garbage-collected without `close()`."""
    try:
        writer.close()
    except Exception as exc:  # noqa: BLE001 - nobody is left to raise to
        warnings.warn(f"a LogStore dropped without close(): its last log writes failed: {exc}", RuntimeWarning)


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class LogStore(CoreLogApi):
    """A SQLite log of tactic call sessions and their traces.

    Args:
        path: the database file, created with its folder if missing; `":memory:"` keeps it in memory. A
            `LogBackend` (lllm-core's form, also as `backend=`) says where the log is, or that it is kept
            nowhere (`NoOpBackend`) or in a key-value store of yours (see `lllm.logging.backends`).
        partition: which sessions this store writes and sees (None: all of the file); see
            `lllm.logging._core_api` for partitions and the rest of lllm-core's API (`load_session_record`,
            `export_cost_summary`, `export_session`, `delete_session`).
        runtime: the `Runtime` that resolves `list_sessions(tactic_path=...)` and `SessionRow.tactic_path`.
        busy_timeout: seconds a write waits for another process holding the database.
        readonly: open the file read-only (`mode=ro`): for readers (`lllm logs`, the explorer), which must
            never change a log; an older log is read as it is (not migrated), writes raise `UsageError`.
        writer: who commits the writes: `"auto"` (the default) commits in the threads that write, and in a
            writer process from the first batch on (`use_writer_process`); `"thread"` always in this
            process; `"process"` always in a writer process. The log is the same either way.

    Raises:
        UsageError: the file is not an lllm log, is locked, or was written by a newer lllm (nothing is written).

    Example:
        >>> store = LogStore(":memory:")
        >>> store.list_sessions(state="error")
        []
    """

    def __init__(self, path: str | os.PathLike[str] | LogBackend = ":memory:", partition: str | None = None,
                 runtime: Any = None, *, backend: LogBackend | None = None, busy_timeout: float = 30.0,
                 readonly: bool = False, writer: Literal["auto", "thread", "process"] = "auto") -> None:
        import sqlite_utils

        if writer not in ("auto", "thread", "process"):
            raise UsageError(f"writer={writer!r}: expected 'auto' (the default: in this process, and in a writer "
                             "process during a batch), 'thread' (always in this process) or 'process' (always in "
                             "a writer process)", value=writer)

        self.path = self._init_core(path, backend, partition, runtime)
        self.readonly = readonly
        self._memory = self.path == ":memory:"
        if readonly:
            if self._memory:
                raise UsageError("a read-only LogStore needs a file; ':memory:' would be empty")
            self.path = str(Path(self.path).expanduser())
            check_log(self.path)  # missing, empty, not a log, locked, newer: a clear error, nothing written
            self._conn = connect_readonly(self.path, busy_timeout=busy_timeout)
            self._conn.isolation_level = None
        else:
            if not self._memory:
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
                self.path = str(Path(self.path).expanduser())
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                         timeout=busy_timeout)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._lock = threading.RLock()
        self.db = sqlite_utils.Database(self._conn)
        """The sqlite-utils `Database` (for ad-hoc queries: `store.db.query("select ...")`)."""
        self._parents: dict[str, str] = {}  # session -> the session it runs inside (only those with one)
        self._writer_mode = writer
        self._busy_timeout = busy_timeout
        self._retired: list[GroupWriter] = []  # the in-process writer, once a writer process took over
        self._switch = threading.Lock()
        self._columns: dict[str, set[str]] = {}
        self._plans: dict[type, tuple[str, tuple[str, ...], tuple[int, ...], str | None]] = {}
        self._closed = False
        self._pid = os.getpid()
        if readonly:
            self.schema_version: int = schema_version(self._conn, self.path) or SCHEMA_VERSION
            """The log's schema (a reader sees the file's own; after a writer opened it, this lllm's)."""
            existing = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self._columns = {t: {r[1] for r in self._conn.execute(f"PRAGMA table_info({t})")}
                             for t in KIND_TABLES.values() if t in existing}
            self._writer: GroupWriter | ProcessWriter | None = None
            return
        try:
            # before anything is written: a file that is not an lllm log, or is from a newer lllm, stays as it was
            schema_version(self._conn, self.path)
            if not self._memory:
                _enable_wal(self._conn, busy_timeout)
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._ensure_schema()
        except BaseException:
            self._conn.close()
            raise
        self.schema_version = SCHEMA_VERSION
        self._writer = GroupWriter(self._conn, self._lock, apply_ops,
                                   name=f"lllm-logstore-{Path(self.path).name}")
        if writer == "process":
            self.use_writer_process()

    def use_writer_process(self) -> bool:
        """Commit from now on in a writer process (`_writer_process.py`), so that committing runs on another
        core instead of taking the GIL from the threads that work; a batch calls this as it starts (with the
        default `writer="auto"`). What was written before is committed first. Returns whether a writer process
        is in use: not for `":memory:"`, a read-only store, or `writer="thread"`."""
        self._check_open()
        if self._writer is None or self._memory or self._writer_mode == "thread":
            return False
        with self._switch:
            if isinstance(self._writer, ProcessWriter):
                return True
            old = self._writer
            old.flush()
            try:
                new = ProcessWriter(self.path, busy_timeout=self._busy_timeout,
                                    name=f"lllm-logwriter-{Path(self.path).name}")
            except OSError as exc:  # no interpreter to start (an embedded Python): commit here, as before
                warnings.warn(f"LogStore {self.path!r}: could not start a log writer process ({exc}); writes are "
                              f"committed in this process", RuntimeWarning, stacklevel=2)
                self._writer_mode = "thread"
                return False
            self._writer = new
            # a store dropped without close() must not leave its writer process and threads behind
            weakref.finalize(self, _close_quietly, new)
            self._retired.append(old)
            old.flush()  # a write that took the old writer just before the switch is committed before any new one
        return True

    # -- schema ---------------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        with self._lock, self._transaction():
            sessions = self.db["sessions"]
            sessions.create(_SESSION_COLUMNS, pk="id", if_not_exists=True)  # type: ignore[union-attr]
            for cols in (["state"], ["started_at"], ["batch_id", "task_index"], ["parent_id"], ["tactic"]):
                sessions.create_index(cols, if_not_exists=True)  # type: ignore[union-attr]
            for cls in trace.RECORD_TYPES:
                self._ensure_record_table(cls)
            self.db["events"].create({"seq": int, "session_id": str, "kind": str, "started_at": float,  # type: ignore[union-attr]
                                      "data": str}, pk="seq", if_not_exists=True)
            self.db["dialogs"].create({"session_id": str, "agent": str, "alias": str, "parent": str,  # type: ignore[union-attr]
                                       "messages": int, "data": str}, pk=("session_id", "agent", "alias"),
                                      if_not_exists=True)
            if int(self._conn.execute("PRAGMA user_version").fetchone()[0]) != SCHEMA_VERSION:
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _ensure_record_table(self, cls: type[BaseModel]) -> None:
        kind = cls.model_fields["kind"].default
        table_name = KIND_TABLES.get(kind, f"{kind}s")
        table = self.db[table_name]
        columns = _record_columns(cls)
        if not table.exists():
            table.create({"seq": int, **columns}, pk="seq")  # type: ignore[union-attr]
            table.create_index(["session_id"], if_not_exists=True)  # type: ignore[union-attr]
        existing = set(table.columns_dict)
        for name, col_type in columns.items():  # a later version of trace.py added a field
            if name not in existing:
                table.add_column(name, col_type)  # type: ignore[union-attr]
        self._columns[table_name] = set(columns)
        KIND_TABLES.setdefault(kind, table_name)

    # -- writing --------------------------------------------------------------------------------------

    def _transaction(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._check_open()
                store._conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
                store._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

        return _Tx()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the LogStore {self.path!r} is closed; open a new one with sqlite_store(path)")
        if _PID != self._pid:
            raise UsageError(f"the LogStore {self.path!r} was opened in process {self._pid} and cannot be used in "
                             f"a forked child ({os.getpid()}); open sqlite_store(path) in the child")

    def start_session(self, session_id: str, *, tactic: str, tags: dict[str, Any] | None = None,
                      metadata: dict[str, Any] | None = None, task: Any = None, task_hash: str | None = None,
                      batch_id: str | None = None, task_index: int | None = None,
                      parent_id: str | None = None, started_at: float | None = None, wait: bool = True) -> None:
        """Write a session's row in state `running`.

        Args:
            wait: return once it is committed (the default). With False it is queued like a record (never
                dropped) and committed in the next round; a batch does this and calls `flush()` before it hands
                out results.
        """
        now = started_at if started_at is not None else time.time()
        metadata = self._mark(metadata)  # the partition (the same dict back when the store has none)
        # the values in _commit.START_COLUMNS order, built directly: this runs once per task of a batch
        values = (session_id, tactic, "running", now, now, 0.0, 0, 0, 0, 0, _to_sql(tags) if tags else "{}",
                  _to_sql(metadata) if metadata else "{}", None if task is None else task_text(task), task_hash,
                  "started", batch_id, task_index, parent_id, self._pid)
        if parent_id is not None:
            self._parents[session_id] = parent_id
        self._write(("start", session_id, parent_id, values), wait=wait)

    def _write(self, op: tuple[Any, ...], *, wait: bool = True) -> None:
        self._check_open()
        if self._writer is None:
            raise UsageError(f"the LogStore {self.path!r} was opened read-only; open sqlite_store(path) to write")
        self._writer.submit(op, wait=wait, droppable=False)

    def flush(self) -> None:
        """Commit every write queued so far; raise the first error of writes nobody waited for since the last
        flush (a session start or end queued with `wait=False`, a record), if any failed."""
        self._check_open()
        if self._writer is not None:
            self._writer.flush()

    def note_metadata(self, session_id: str, values: dict[str, Any]) -> None:
        """Merge `values` into a running session's `metadata` now (JSON merge: nested objects are merged, a key
        set to None is removed), not only at its end: what a reader needs even if the process dies mid-call, like
        the notebook an agent's sandbox writes. Queued like a record, committed before the session's end."""
        self._write(("meta", session_id, to_json_text(values)), wait=False)

    def _chain(self, session_id: str | None) -> tuple[str, ...]:
        """The session and every session it runs inside, innermost first (what its records add up to)."""
        if not session_id:
            return ()
        parent = self._parents.get(session_id) if self._parents else None
        if parent is None:
            return (session_id,)
        chain = [session_id]
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = self._parents.get(parent)
        return tuple(chain)

    def record(self, record: Any) -> None:
        """Write one trace record (a `lllm.records` model, or its dict) and update its session's row.

        A model call adds its cost and tokens to its session and to every session it runs inside. The record is
        committed before this returns when no other thread is writing; otherwise it goes into the commit in
        flight's next round (see `_writer.py`), and it is always committed before its session's end is.
        """
        if isinstance(record, dict):
            record = TraceRecordAdapter.validate_python(record)
        if self._closed or _PID != self._pid:
            self._check_open()
        writer = self._writer
        if writer is None:
            raise UsageError(f"the LogStore {self.path!r} was opened read-only; open sqlite_store(path) to write")
        plan = self._plans.get(type(record))
        if plan is None:
            plan = self._plan(record)
        sql, names, json_at, kind = plan
        if names:
            data = record.__dict__
            values = list(map(data.__getitem__, names))
            for i in json_at:  # dicts and lists as JSON text; the common empty ones without the encoder
                value = values[i]
                if isinstance(value, (list, dict)) and not value:
                    values[i] = "[]" if isinstance(value, list) else "{}"
                elif value is not None:
                    values[i] = to_json_text(value)
            event = None  # what the session was doing: worked out from the columns where it is committed
        else:
            data = record.model_dump()
            values = [data.get("session_id"), kind, data.get("started_at"), _to_sql(data)]
            event = last_event(data.get)
        sid = data.get("session_id")
        writer.submit(("record", sql, values, self._chain(sid), kind, data.get("cost") or 0.0,
                             data.get("prompt_tokens") or 0, data.get("completion_tokens") or 0,
                             event, time.time()), wait=False, key=sid)

    def _plan(self, record: Any) -> tuple[str, tuple[str, ...], tuple[int, ...], str | None]:
        """How a record class is written: its INSERT, columns, JSON columns and kind (new tables and columns
        are created first, in a transaction of their own)."""
        cls = type(record)
        kind = getattr(record, "kind", None)
        table = KIND_TABLES.get(kind) if kind else None
        plan: tuple[str, tuple[str, ...], tuple[int, ...], str | None]
        if table is None or not isinstance(record, BaseModel):
            plan = ("INSERT INTO events (session_id, kind, started_at, data) VALUES (?, ?, ?, ?)", (), (), kind)
        else:
            names = tuple(cls.model_fields)
            if table not in self._columns or not self._columns[table].issuperset(names):
                with self._lock, self._transaction():
                    self._ensure_record_table(cls)
            json_at = tuple(i for i, f in enumerate(cls.model_fields.values())
                            if _sql_type(f.annotation) is str and not _is_plain(f.annotation, {str}))
            plan = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})", names,
                    json_at, kind)
        self._plans[cls] = plan
        return plan

    def end_session(self, session_id: str, *, state: Literal["ok", "error"], ended_at: float | None = None,
                    cost: float | None = None, prompt_tokens: int | None = None,
                    completion_tokens: int | None = None, result: Any = None, store_result: bool = True,
                    error: str | None = None, traceback: str | None = None,
                    dialogs: Iterable[tuple[str, str, Any]] = (),
                    metadata: dict[str, Any] | None = None, wait: bool = True) -> None:
        """Close a session: its final state, totals, result or error, and its agents' dialogs, in one commit.

        Args:
            dialogs: `(agent, alias, data)` for every dialog tree of every agent, `data` being
                `Dialog.to_json()` (or the `to_dict()` it encodes).
            wait: return once it is committed (the default); with False it is queued (see `start_session`).
        """
        now = ended_at if ended_at is not None else time.time()
        # built directly (no dict, no per-value conversion): this runs once per task of a batch
        columns: tuple[str, ...] = _END_BASE
        values: list[Any] = [state, now, now, "ended " + state, error, traceback]
        if cost is not None:
            columns += _END_COST
            values += (float(cost), int(prompt_tokens or 0), int(completion_tokens or 0))
        if store_result and state == "ok":
            columns += _END_RESULT
            values.append(encode_result(result))
        self._parents.pop(session_id, None)
        dropped = 0
        if self._writer is not None and (self._writer.dropped or any(w.dropped for w in self._retired)):
            dropped = sum(w.dropped_by.pop(session_id, 0) for w in self._writers())
        if dropped:  # the record queue was full: say how many of this session's records are missing
            metadata = {**(metadata or self.get_session(session_id).metadata), "dropped_records": dropped}
        if metadata is not None:
            columns += _END_METADATA
            metadata = self._mark(metadata)
            values.append(_to_sql(metadata) if metadata else "{}")
        rows = []
        for agent, alias, d in dialogs:
            rows.append((session_id, agent, alias, d if isinstance(d, str) else _to_sql(d)))
        values += (now, session_id)
        self._write(("end", session_id, _end_sql(columns), values, rows, cost is not None, columns), wait=wait)

    # -- reading --------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._check_open()
            return list(self.db.query(sql, list(params)))

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Run any read-only SQL on the log and get dicts back."""
        return self._rows(sql, params)

    @staticmethod
    def _session(row: dict[str, Any]) -> SessionRow:
        row = dict(row)
        for key in ("tags", "metadata"):
            row[key] = json.loads(row[key]) if row.get(key) else {}
        row["result"] = decode_result(row.get("result"))
        return SessionRow.model_validate(row)

    def list_sessions(self, *, tags: dict[str, Any] | None = None, state: str | None = None,
                      since: float | datetime | timedelta | str | None = None, tactic: str | None = None,
                      batch_id: str | None = None, include_children: bool = False,
                      limit: int | None = 100, after: Any = None, before: Any = None,
                      tactic_path: str | None = None) -> list[SessionRow]:
        """Sessions, newest first.

        Args:
            tags: only sessions carrying every one of these tag values.
            state: `running`, `ok` or `error` (lllm-core's `success`, `failure` too).
            since: only sessions started after this (unix time, datetime, timedelta, "30m"/"2h"/"7d").
            tactic: only this tactic.
            batch_id: only the sessions of this `bcall`.
            include_children: also list sub-tactic sessions (by default only top-level calls).
            limit: at most this many (None: all).
            after, before: only sessions started in this window (datetimes; lllm-core's names).
            tactic_path: only this tactic, in any form the store's runtime resolves ("pkg::name", "pkg:name").
        """
        state, by_path, start, end = self._core_filters(state=state, tactic_path=tactic_path, after=after,
                                                        before=before)
        where, params = self._filters(tags=tags, state=state, since=since, tactic=tactic, batch_id=batch_id,
                                      include_children=include_children, tactic_name=by_path, after=start,
                                      before=end)
        sql = f"SELECT * FROM sessions {where} ORDER BY started_at DESC, rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._with_paths([self._session(r) for r in self._rows(sql, params)])

    def _filters(self, *, tags: dict[str, Any] | None = None, state: str | None = None, since: Any = None,
                 tactic: str | None = None, batch_id: str | None = None,
                 include_children: bool = False, tactic_name: str | None = None, after: float | None = None,
                 before: float | None = None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            if state not in ("running", "ok", "error"):
                raise UsageError(f"`state` must be 'running', 'ok' or 'error' (or 'success', 'failure'); got "
                                 f"{state!r}", value=state)
            clauses.append("state = ?")
            params.append(state)
        for key, value in (tags or {}).items():
            clauses.append("json_extract(tags, ?) = ?")
            params += [f'$."{key}"', value if isinstance(value, (int, float, str)) else json.dumps(value)]
        start = parse_since(since)
        for bound, op in ((start, ">="), (after, ">="), (before, "<=")):
            if bound is not None:
                clauses.append(f"started_at {op} ?")
                params.append(bound)
        for name in (tactic, tactic_name):
            if name is not None:
                clauses.append("tactic = ?")
                params.append(name)
        if batch_id is not None:
            clauses.append("batch_id = ?")
            params.append(batch_id)
        if not include_children:
            clauses.append("parent_id IS NULL")
        partition, extra = self._partition_clause()
        if partition is not None:
            clauses.append(partition)
            params += extra
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def get_session(self, session_id: str) -> SessionRow:
        """One session's row; `session_id` may be a unique prefix of the id."""
        rows = self._rows("SELECT * FROM sessions WHERE id = ?", [session_id])
        if not rows:
            rows = self._rows("SELECT * FROM sessions WHERE id LIKE ? LIMIT 3", [session_id + "%"])
            if len(rows) > 1:
                raise UsageError(f"session id prefix {session_id!r} is ambiguous: it matches "
                                 f"{[r['id'] for r in rows]!r}...; give more characters", session_id=session_id)
        if not rows:
            raise UsageError(f"no session {session_id!r} in the log {self.path!r}; `lllm logs ls` lists them",
                             session_id=session_id)
        return self._session(rows[0])

    def load_session(self, session_id: str) -> SessionDetail:
        """A session with its full trace (records of every kind, in order), its dialogs and child sessions."""
        session = self.get_session(session_id)
        sid = session.id
        records: list[tuple[float, int, Any]] = []
        for kind, table in list(KIND_TABLES.items()):
            if table not in self._columns:
                continue
            fields, json_fields = _record_fields(kind)
            for row in self._rows(f"SELECT * FROM {table} WHERE session_id = ? ORDER BY seq", [sid]):
                seq = row.pop("seq")
                data: dict[str, Any] = {"kind": kind}
                for key, value in row.items():
                    if value is None or key not in fields:  # a column of a later version of the record: skip
                        continue
                    if key in json_fields and isinstance(value, str):
                        try:
                            value = json.loads(value)
                        except ValueError:
                            pass
                    data[key] = value
                records.append((data.get("started_at") or 0.0, seq, TraceRecordAdapter.validate_python(data)))
        for row in self._rows("SELECT * FROM events WHERE session_id = ? ORDER BY seq", [sid]):
            records.append((row["started_at"] or 0.0, row["seq"], json.loads(row["data"])))
        records.sort(key=lambda item: (item[0], item[1]))
        dialogs = [DialogRow.model_validate({**row, "data": json.loads(row["data"])})
                   for row in self._rows("SELECT * FROM dialogs WHERE session_id = ? ORDER BY rowid", [sid])]
        children = [self._session(r) for r in
                    self._rows("SELECT * FROM sessions WHERE parent_id = ? ORDER BY started_at", [sid])]
        return SessionDetail(session=session, records=[r for _, _, r in records], dialogs=dialogs,
                             children=children)

    def cost_summary(self, *, group_by: str = "tactic", since: Any = None,
                     tags: dict[str, Any] | None = None) -> list[CostRow]:
        """Cost and tokens of top-level sessions grouped by `"tactic"`, `"tag:<key>"`, `"batch"`, `"state"`
        or `"model"` (the last one from the model calls themselves), biggest cost first. Each row's `notes` say
        why part of its cost may be off (the model calls' `cost_note`s: no price known, a simulated price)."""
        where, params = self._filters(tags=tags, since=since)
        extra: list[Any] = []
        if group_by == "model":  # from the model calls themselves, sub-tactic sessions included
            cwhere, cparams = self._filters(tags=tags, since=since, include_children=True)
            sql = ("SELECT m.model AS grp, COUNT(DISTINCT m.session_id) AS sessions, SUM(m.status = 'error') AS errors, "
                   "SUM(m.cost) AS cost, SUM(m.prompt_tokens) AS prompt_tokens, "
                   "SUM(m.completion_tokens) AS completion_tokens FROM model_calls m "
                   f"JOIN (SELECT id, tags, state, started_at FROM sessions {cwhere}) s ON m.session_id = s.id "
                   "GROUP BY grp ORDER BY cost DESC")
            rows = self._rows(sql, cparams)
            expr = "m.model"
        else:
            if group_by == "tactic":
                expr, extra = "tactic", []
            elif group_by == "batch":
                expr, extra = "batch_id", []
            elif group_by == "state":
                expr, extra = "state", []
            elif group_by.startswith("tag:") and len(group_by) > 4:
                expr, extra = "json_extract(tags, ?)", [f'$."{group_by[4:]}"']
            else:
                raise UsageError(f"`group_by` must be 'tactic', 'tag:<key>', 'batch', 'state' or 'model'; "
                                 f"got {group_by!r}", value=group_by)
            sql = (f"SELECT {expr} AS grp, COUNT(*) AS sessions, SUM(state = 'error') AS errors, SUM(cost) AS cost, "
                   "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens "
                   f"FROM sessions {where} GROUP BY grp ORDER BY cost DESC")
            rows = self._rows(sql, [*extra, *params])
        notes = self._cost_notes(group_by, expr, extra, since=since, tags=tags)
        return [CostRow(group=None if r["grp"] is None else str(r["grp"]), sessions=r["sessions"] or 0,
                        errors=r["errors"] or 0, cost=r["cost"] or 0.0, prompt_tokens=r["prompt_tokens"] or 0,
                        completion_tokens=r["completion_tokens"] or 0, notes=notes.get(r["grp"], []))
                for r in rows]

    def _cost_notes(self, group_by: str, expr: str, extra: list[Any], *, since: Any,
                    tags: dict[str, Any] | None) -> dict[Any, list[str]]:
        """group -> the distinct cost notes of its model calls (sub-tactic calls count for their top session)."""
        if "cost_note" not in self._columns.get("model_calls", ()):
            return {}
        if group_by == "model":
            where, params = self._filters(tags=tags, since=since, include_children=True)
            sql = ("SELECT m.model AS grp, m.model AS model, m.cost_note AS note, COUNT(*) AS n FROM model_calls m "
                   f"JOIN (SELECT id FROM sessions {where}) s ON m.session_id = s.id "
                   "WHERE m.cost_note IS NOT NULL GROUP BY grp, model, note ORDER BY n DESC")
        else:
            where, params = self._filters(tags=tags, since=since)
            params = [*extra, *params]
            sql = ("WITH RECURSIVE tree(id, root) AS (SELECT id, id FROM sessions WHERE parent_id IS NULL "
                   "UNION ALL SELECT c.id, t.root FROM sessions c JOIN tree t ON c.parent_id = t.id) "
                   f"SELECT {expr} AS grp, m.model AS model, m.cost_note AS note, COUNT(*) AS n "
                   f"FROM (SELECT * FROM sessions {where}) s JOIN tree ON tree.root = s.id "
                   "JOIN model_calls m ON m.session_id = tree.id "
                   "WHERE m.cost_note IS NOT NULL GROUP BY grp, model, note ORDER BY n DESC")
        out: dict[Any, list[str]] = {}
        for r in self._rows(sql, params):
            out.setdefault(r["grp"], []).append(f"{r['n']} call(s) of {r['model']!r}: {r['note']}")
        return out

    def completed_tasks(self, batch_id: str) -> dict[int, tuple[str | None, Any]]:
        """The tasks of a batch that succeeded and whose result can be given back exactly:
        `{task_index: (task_hash, result)}` (what `bcall(resume=batch_id)` skips)."""
        out: dict[int, tuple[str | None, Any]] = {}
        rows = self._rows("SELECT task_index, task_hash, result FROM sessions WHERE batch_id = ? AND state = 'ok' "
                          "AND parent_id IS NULL AND task_index IS NOT NULL", [batch_id])
        for row in rows:
            value = decode_result(row["result"], strict=True)
            if value is not _NOT_RESTORABLE:
                out[int(row["task_index"])] = (row["task_hash"], value)
        return out

    def batch_exists(self, batch_id: str) -> bool:
        """Whether any session was written under this batch id."""
        return bool(self._rows("SELECT 1 FROM sessions WHERE batch_id = ? LIMIT 1", [batch_id]))

    def count(self, table: str = "sessions") -> int:
        """Rows in a table."""
        if not re.fullmatch(r"[a-z_]+", table):
            raise UsageError(f"not a table name: {table!r}", value=table)
        return int(self._rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])

    @property
    def writer_stats(self) -> dict[str, Any]:
        """How the writer keeps up: records `dropped` (queue full), writes that `failed`, and `max_wait_s`, the
        longest a write waited from its submission to its commit (what a crash could have lost at worst);
        `writer_process` is the pid of the writer process, if one commits (see `use_writer_process`)."""
        writers = self._writers()
        process = next((w.pid for w in writers if isinstance(w, ProcessWriter)), None)
        return {"dropped": sum(w.dropped for w in writers), "failed": sum(w.failed for w in writers),
                "max_wait_s": max((w.max_wait_s for w in writers), default=0.0), "writer_process": process}

    def _writers(self) -> list[GroupWriter | ProcessWriter]:
        return [*self._retired, *([self._writer] if self._writer is not None else [])]

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent); further use raises `UsageError`."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            for old in self._retired:
                old.close()
            with self._lock:
                self._conn.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LogStore({self.path!r})"


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting for other processes that hold it.

    Changing the journal mode needs the database to itself, and SQLite answers "database is locked" at once
    (no busy handler) while another process is using it; so retry until `busy_timeout`.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
