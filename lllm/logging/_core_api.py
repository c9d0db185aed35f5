"""The LogStore API of lllm-core 0.1, on our log: partitions, `runtime=` for stable tactic paths, a backend given
in place of a path, and the query methods lllm-core's docs use (`load_session_record`, `export_cost_summary`,
`export_session`, `delete_session`, `list_sessions(tactic_path=, after=, before=)`).

`LogStore` (`lllm.logging.store`) takes these from the `CoreLogApi` mixin. What differs from lllm-core, and why:

- **Partitions** are a mark in each session's `metadata["partition"]`, not a key prefix: a store opened with
  `partition="x"` marks the sessions it writes and lists, sums, loads and deletes only sessions marked "x";
  `partition="default"` (the factories' default) means the unmarked ones; `partition=None` (what `LogStore(path)`
  and `lllm logs` use) sees every session of the file.
- **Tactic paths**: the log keeps each session's tactic name. `list_sessions(tactic_path=...)` accepts any form
  the store's runtime resolves (`"pkg::name"`, `"pkg:name"`, `"pkg.tactics:name"`, an alias, the bare name) and
  filters on the tactic's name; `SessionRow.tactic_path` is `"pkg::name"` when the runtime knows which package
  declared the tactic, else the bare name (lllm-core's rule for tactics built without a package).
- **Backends**: `SQLiteBackend`/`LocalFileBackend` say where the SQLite log is; `NoOpBackend` makes a store that
  records nothing; any other `LogBackend` gets each finished top-level session as JSON (`_KeyValueWrites`).
- `load_session` returns our `SessionDetail` (the trace records, dialogs, sub-sessions), which also answers the
  attribute names of lllm-core's `TacticCallSession` (`tactic_name`, `state`, `total_cost`, `agent_sessions`,
  `delivery`, `error_traceback`...); `load_session_record(id).session` is that same object.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from lllm.errors import UsageError
from lllm.logging.backends import LogBackend, NoOpBackend, log_path_of
from lllm.logging.models import SessionDetail, SessionRecord, SessionRow
from lllm.records import RECORD_TYPES, TraceRecordAdapter

if TYPE_CHECKING:
    from lllm.logging.store import LogStore

__all__ = ["DEFAULT_PARTITION", "CoreLogApi", "SessionSummary", "parse_since"]

DEFAULT_PARTITION = "default"
"""The partition of sessions written with no mark (lllm-core's default partition name)."""
PARTITION_KEY = "partition"
"""The key of a session's metadata that holds its partition (only for partitions other than the default)."""

SessionSummary = SessionRow
"""lllm-core's name for a row of `list_sessions`: our `SessionRow` answers its fields (`session_id`,
`tactic_name`, `tactic_path`, `state`, `total_cost`, `agent_call_count`, `timestamp`, `tags`)."""

_STATES = {"success": "ok", "failure": "error"}
"""lllm-core's session states -> the log's (`state="success"` filters like `state="ok"`)."""


def parse_since(since: float | dt.datetime | dt.timedelta | str | None) -> float | None:
    """A point in time as unix seconds: a unix time, a datetime, a timedelta or "30m"/"2h"/"7d" ago, or ISO."""
    if since is None:
        return None
    if isinstance(since, (int, float)):
        return float(since)
    if isinstance(since, dt.datetime):
        return since.timestamp()
    if isinstance(since, dt.timedelta):
        return time.time() - since.total_seconds()
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", since)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return time.time() - float(match.group(1)) * unit
    try:
        return dt.datetime.fromisoformat(since).timestamp()
    except ValueError:
        raise UsageError(f"`since` must be a unix time, a datetime, a timedelta, '30m'/'2h'/'7d' or an ISO "
                         f"date; got {since!r}", value=since) from None


def _when(value: Any, name: str) -> float | None:
    """`after=`/`before=` of lllm-core (a datetime) as unix seconds; a date, unix time or ISO text works too."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value is None or isinstance(value, (int, float, dt.datetime)) and not isinstance(value, bool):
        return parse_since(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise UsageError(f"`{name}` must be a datetime, a date, a unix time or an ISO date string; got {value!r}",
                     value=value)


class CoreLogApi:
    """lllm-core's LogStore API, mixed into `LogStore` (see the module docstring for what differs)."""

    partition: str | None
    runtime: Any

    def __new__(cls, path: Any = ":memory:", *args: Any, backend: LogBackend | None = None, **kwargs: Any) -> Any:
        target = backend if backend is not None else path
        if isinstance(target, LogBackend) and log_path_of(target) is None and not getattr(cls, "_variant", None):
            cls = _variant(cls, "noop" if isinstance(target, NoOpBackend) else "kv")
        return super().__new__(cls)

    def _init_core(self, path: Any, backend: LogBackend | None, partition: str | None, runtime: Any) -> str:
        """Set `partition` and `runtime`; the SQLite path the store opens (":memory:" for a non-file backend)."""
        if backend is not None:
            if path not in (None, ":memory:"):
                raise UsageError(f"LogStore: give a path or backend=, not both (got {path!r} and {backend!r})")
            path = backend
        if partition is not None and (not isinstance(partition, str) or not partition.strip("/")):
            raise UsageError(f"LogStore: partition must be a non-empty string, got {partition!r}", value=partition)
        self.partition = partition.strip("/") if isinstance(partition, str) else None
        """Which sessions this store sees (None: all of the file; "default": the unmarked ones)."""
        self.runtime = runtime
        """The `Runtime` that resolves `tactic_path` forms (None: paths are tactic names)."""
        self.backend: LogBackend | None = path if isinstance(path, LogBackend) else None
        """The backend this store was given, if any."""
        if isinstance(path, LogBackend):
            return log_path_of(path) or ":memory:"
        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"LogStore takes a file path (or ':memory:') or a LogBackend, got "
                             f"{type(path).__name__}: {path!r:.80}")
        return os.fspath(path)

    # -- partitions -------------------------------------------------------------------------------------

    def _mark(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """The metadata a session of this store is written with (its partition added, when it has one)."""
        if self.partition is None or self.partition == DEFAULT_PARTITION:
            return metadata
        return {**(metadata or {}), PARTITION_KEY: self.partition}

    def _partition_clause(self) -> tuple[str | None, list[Any]]:
        if self.partition is None:
            return None, []
        if self.partition == DEFAULT_PARTITION:
            return f"json_extract(metadata, '$.{PARTITION_KEY}') IS NULL", []
        return f"json_extract(metadata, '$.{PARTITION_KEY}') = ?", [self.partition]

    # -- tactic paths -----------------------------------------------------------------------------------

    def _node(self, path: str) -> tuple[str | None, str | None]:
        """(package, tactic name) of a tactic path the runtime knows, else (None, None)."""
        getter = getattr(self.runtime, "get_node", None)
        if getter is None:
            return None, None
        try:
            node = getter(path, resource_type="tactic")
        except (KeyError, LookupError, AttributeError, ValueError, Exception):  # noqa: BLE001 - not resolvable
            return None, None
        name = getattr(node.value, "name", None)
        namespace = getattr(node, "namespace", None) or None
        return (namespace.split(".")[0] if namespace else None), (name if isinstance(name, str) else None)

    def tactic_name_of(self, tactic_path: str) -> str:
        """The tactic name a `tactic_path` (any form the runtime resolves, or "pkg::name") stands for."""
        _, name = self._node(tactic_path)
        if name is not None:
            return name
        for sep in ("::", ":"):
            if sep in tactic_path:
                return tactic_path.rsplit(sep, 1)[1].rsplit("/", 1)[-1]
        return tactic_path

    def stable_tactic_path(self, tactic_name: str) -> str:
        """`"pkg::name"` for a tactic the runtime's packages declared, else the name itself."""
        package, _ = self._node(tactic_name)
        return f"{package}::{tactic_name}" if package else tactic_name

    def _with_paths(self, rows: list[SessionRow]) -> list[SessionRow]:
        if self.runtime is None:
            return rows
        paths: dict[str, str] = {}
        for row in rows:
            path = paths.get(row.tactic)
            if path is None:
                path = paths[row.tactic] = self.stable_tactic_path(row.tactic)
            row.set_tactic_path(path)
        return rows

    def _core_filters(self, *, state: str | None, tactic_path: str | None, after: Any, before: Any
                      ) -> tuple[str | None, str | None, float | None, float | None]:
        """(state, tactic name, after, before) in the log's terms."""
        state = _STATES.get(state, state) if state is not None else None
        tactic = self.tactic_name_of(tactic_path) if tactic_path else None
        return state, tactic, _when(after, "after"), _when(before, "before")

    def _check_partition(self, row: SessionRow) -> SessionRow:
        """`row`, or a UsageError when the session belongs to another partition than this store's."""
        if self.partition is None:
            return row
        mark = row.metadata.get(PARTITION_KEY)
        if (mark or DEFAULT_PARTITION) != self.partition:
            raise UsageError(f"session {row.id!r} is in partition {mark or DEFAULT_PARTITION!r}, not in this store's "
                             f"({self.partition!r}); open the store with partition={mark or DEFAULT_PARTITION!r}",
                             session_id=row.id)
        return row

    def _tree_ids(self: LogStore, session_id: str) -> list[str]:  # type: ignore[misc]
        """The session and every sub-tactic session under it."""
        return [r["id"] for r in self._rows(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT s.id FROM sessions s JOIN tree t "
            "ON s.parent_id = t.id) SELECT id FROM tree", [session_id])]

    def _delete_ids(self: LogStore, ids: list[str]) -> None:  # type: ignore[misc]
        if self._writer is None:
            raise UsageError(f"the LogStore {self.path!r} was opened read-only; open sqlite_store(path) to delete")
        self.flush()
        marks = ", ".join("?" for _ in ids)
        tables = [t for t in self.db.table_names() if t != "sessions"]
        with self._lock, self._transaction():
            for table in tables:
                if "session_id" in self.db[table].columns_dict:
                    self._conn.execute(f"DELETE FROM [{table}] WHERE session_id IN ({marks})", ids)
            self._conn.execute(f"DELETE FROM sessions WHERE id IN ({marks})", ids)

    # -- lllm-core's queries ----------------------------------------------------------------------------

    def load_session_record(self: LogStore, session_id: str) -> SessionRecord:  # type: ignore[misc]
        """The session and what was stored with it: tags, metadata, when it started, the traceback if it failed.

        Raises:
            UsageError: no such session (in this store's partition).
        """
        detail = self.load_session(session_id)
        row = self._check_partition(detail.session)
        return SessionRecord(session_id=row.id, session=detail, tags=dict(row.tags), metadata=dict(row.metadata),
                             timestamp=row.timestamp, traceback=row.traceback)

    def export_session(self: LogStore, session_id: str, format: str = "json") -> str:  # type: ignore[misc]
        """The whole session (row, trace records, dialogs, sub-sessions) as indented JSON text.

        Raises:
            UsageError: no such session, or a format other than "json".
        """
        if format != "json":
            raise UsageError(f"export_session: format must be 'json', got {format!r}", value=format)
        detail = self.load_session(session_id)
        self._check_partition(detail.session)
        return detail.model_dump_json(indent=2)

    def export_cost_summary(self: LogStore, tags: dict[str, Any] | None = None,  # type: ignore[misc]
                            after: Any = None, before: Any = None, tactic_path: str | None = None) -> dict[str, Any]:
        """Cost of the top-level sessions that match, as lllm-core reports it.

        Returns:
            `{"session_count", "total_cost_usd", "sessions": [{"session_id", "tactic_name", "state", "cost_usd",
            "timestamp"}]}`, newest first.
        """
        rows = self.list_sessions(tags=tags, after=after, before=before, tactic_path=tactic_path, limit=None)
        return {
            "session_count": len(rows),
            "total_cost_usd": round(sum(r.cost for r in rows), 6),
            "sessions": [{"session_id": r.id, "tactic_name": r.tactic, "state": r.state, "cost_usd": r.cost,
                          "timestamp": r.timestamp} for r in rows],
        }

    def delete_session(self: LogStore, session_id: str) -> None:  # type: ignore[misc]
        """Remove a session, its sub-tactic sessions, their trace records and dialogs.

        Raises:
            UsageError: no such session (in this store's partition), or the store is read-only.
        """
        row = self._check_partition(self.get_session(session_id))
        self._delete_ids(self._tree_ids(row.id))


# -- stores that keep nothing, or keep sessions in a key-value backend -----------------------------------------


class _NoOpWrites:
    """Writes go nowhere: the store's tables stay empty (a `noop_store()` runs any number of calls in constant
    memory), reads answer as for an empty log."""

    _variant = "noop"

    def start_session(self, session_id: str, **kwargs: Any) -> None:
        return None

    def end_session(self, session_id: str, **kwargs: Any) -> None:
        return None

    def record(self, record: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "LogStore(NoOpBackend())"


class _KeyValueWrites:
    """Sessions kept in a user's `LogBackend`: each top-level session, once it ended, is written as the JSON of
    `export_session` under `<partition>/sessions/<id>` with its row under `<partition>/index/<id>`, and taken out
    of the in-memory SQLite that recorded it while it ran. Reads come from the backend."""

    _variant = "kv"
    backend: LogBackend
    partition: str | None

    def _kv_prefix(self) -> str:
        return f"{self.partition or DEFAULT_PARTITION}/"

    def end_session(self, session_id: str, **kwargs: Any) -> None:
        kwargs["wait"] = True
        super().end_session(session_id, **kwargs)  # type: ignore[misc]
        store: Any = self
        row = super().get_session(session_id)  # type: ignore[misc]
        if row.parent_id is not None:
            return  # a sub-tactic session goes out with its top-level one
        prefix = self._kv_prefix()
        ids = store._tree_ids(row.id)
        for sid in ids:
            detail = super().load_session(sid)  # type: ignore[misc]
            self.backend.put(f"{prefix}sessions/{sid}", detail.model_dump_json().encode())
            self.backend.put(f"{prefix}index/{sid}", detail.session.model_dump_json().encode())
        store._delete_ids(ids)

    def _index(self) -> list[SessionRow]:
        rows = []
        for key in self.backend.list_keys(f"{self._kv_prefix()}index/"):
            data = self.backend.get(key)
            if data is not None:
                try:
                    rows.append(SessionRow.model_validate_json(data))
                except ValueError:
                    continue  # a value some other writer put there: not ours to read
        return rows

    def list_sessions(self, *, tags: dict[str, Any] | None = None, state: str | None = None, since: Any = None,
                      tactic: str | None = None, batch_id: str | None = None, include_children: bool = False,
                      limit: int | None = 100, after: Any = None, before: Any = None,
                      tactic_path: str | None = None) -> list[SessionRow]:
        store: Any = self
        state, by_path, start, end = store._core_filters(state=state, tactic_path=tactic_path, after=after,
                                                         before=before)
        if state is not None and state not in ("running", "ok", "error"):
            raise UsageError(f"`state` must be 'running', 'ok' or 'error' (or 'success', 'failure'); got {state!r}",
                             value=state)
        since_t = parse_since(since)
        out = []
        for row in self._index():
            if (row.parent_id is not None and not include_children) or (state and row.state != state) or (tactic and row.tactic != tactic) or (
                    by_path and row.tactic != by_path) or (batch_id and row.batch_id != batch_id):
                continue
            if any(row.tags.get(k) != v for k, v in (tags or {}).items()):
                continue
            if (start is not None and row.started_at < start) or (end is not None and row.started_at > end) or (
                    since_t is not None and row.started_at < since_t):
                continue
            out.append(row)
        out.sort(key=lambda r: r.started_at, reverse=True)
        return store._with_paths(out[:limit] if limit is not None else out)

    def get_session(self, session_id: str) -> SessionRow:
        data = self.backend.get(f"{self._kv_prefix()}index/{session_id}")
        if data is None:  # still running (or being written out): in the local log
            return super().get_session(session_id)  # type: ignore[misc]
        return SessionRow.model_validate_json(data)

    def load_session(self, session_id: str) -> SessionDetail:
        data = self.backend.get(f"{self._kv_prefix()}sessions/{session_id}")
        if data is None:
            return super().load_session(session_id)  # type: ignore[misc]
        detail = SessionDetail.model_validate_json(data)
        known = {c.model_fields["kind"].default for c in RECORD_TYPES}
        detail.records = [TraceRecordAdapter.validate_python(r) if isinstance(r, dict) and r.get("kind") in known
                          else r for r in detail.records]
        return detail

    def delete_session(self, session_id: str) -> None:
        prefix = self._kv_prefix()
        self.get_session(session_id)
        children = [r.id for r in self._index() if r.parent_id == session_id]
        for child in children:
            self.delete_session(child)
        self.backend.delete(f"{prefix}sessions/{session_id}")
        self.backend.delete(f"{prefix}index/{session_id}")

    def __repr__(self) -> str:
        return f"LogStore({self.backend!r}, partition={self.partition!r})"


_VARIANTS: dict[tuple[type, str], type] = {}
_VARIANTS_LOCK = threading.Lock()


def _variant(base: type, kind: str) -> type:
    """`base` (LogStore or a subclass) with the writes of a no-op or a key-value store."""
    with _VARIANTS_LOCK:
        cls = _VARIANTS.get((base, kind))
        if cls is None:
            mixin = _NoOpWrites if kind == "noop" else _KeyValueWrites
            name = ("NoOp" if kind == "noop" else "KeyValue") + base.__name__
            cls = _VARIANTS[(base, kind)] = type(name, (mixin, base), {"__module__": base.__module__})
        return cls

