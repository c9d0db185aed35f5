"""How queued log writes become SQL, and the log's writer process.

Standard library only, on purpose: the same code commits in-process (`GroupWriter`, `_writer.py`) and runs as
the writer process's main (`ProcessWriter`), which is started as `python -I -S _commit.py DB BUSY_MS`, so it
boots in about 20 ms and loads nothing of lllm, pydantic or the user's code.

A write ("op") is a tuple of plain values made by the `LogStore`:
- `("start", session_id, parent_id, values)`: a session's row (`START_COLUMNS`);
- `("record", insert_sql, values, chain, kind, cost, prompt_tokens, completion_tokens, last_event, time)`:
  a trace record, and what it adds to every session of `chain` (its own, then the ones it runs inside);
  `last_event` None means: work it out from the INSERT's columns (`_record_event`), here, not in the caller;
- `("meta", session_id, json_patch)`: metadata merged into a running session;
- `("end", session_id, update_sql, values, dialog_rows, sets_final_totals, columns)`: a session's end;
- `None`: nothing (a flush marker).

The writer process reads frames (a 4-byte big-endian length, then a pickle) on stdin: `(first_seq, ops)`,
or `None` to end; it commits everything that has arrived in one transaction and answers on stdout with
`(last_seq, failures)`, `failures` being `(seq, exception)` for the writes that failed (each failing write
is retried alone so that only it fails). It ignores SIGINT: Ctrl-C reaches the whole process group, and what
the parent queued must still be committed; it ends at `None` or when its stdin closes (the parent died).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import select
import signal
import sqlite3
import struct
import sys
from itertools import chain
from typing import Any, Callable, Iterable

START_COLUMNS = ("id", "tactic", "state", "started_at", "updated_at", "cost", "prompt_tokens", "completion_tokens",
                 "model_calls", "agent_calls", "tags", "metadata", "task", "task_hash", "last_event", "batch_id",
                 "task_index", "parent_id", "pid")
START_SQL = (f"INSERT OR REPLACE INTO sessions ({', '.join(START_COLUMNS)}) "
             f"VALUES ({', '.join('?' for _ in START_COLUMNS)})")
TOTALS_SQL = ("UPDATE sessions SET cost = cost + ?, prompt_tokens = prompt_tokens + ?, "
              "completion_tokens = completion_tokens + ?, model_calls = model_calls + ?, agent_calls = agent_calls + ?, "
              "updated_at = ?, last_event = COALESCE(?, last_event) WHERE id = ?")
DIALOG_SQL = ("INSERT OR REPLACE INTO dialogs (session_id, agent, alias, parent, messages, data) VALUES (?1, ?2, ?3, "
              "CASE WHEN json_valid(?4) THEN json_extract(?4, '$.parent') END, "
              "CASE WHEN json_valid(?4) THEN COALESCE(json_array_length(?4, '$.messages'), 0) ELSE 0 END, ?4)")
WHOLE_COLUMNS = (*START_COLUMNS, "ended_at", "duration_s", "error", "traceback", "result")
WHOLE_SQL = (f"INSERT OR REPLACE INTO sessions ({', '.join(WHOLE_COLUMNS)}) "
             f"VALUES ({', '.join('?' for _ in WHOLE_COLUMNS)})")
META_SQL = ("UPDATE sessions SET metadata = json_patch(CASE WHEN json_valid(metadata) THEN metadata ELSE '{}' END, ?) "
            "WHERE id = ?")


def apply_ops(conn: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> None:
    """Apply writes inside an open transaction, grouped into a few multi-row statements.

    Order within a batch: session starts, trace records, the session totals they add up to, session ends (a
    session whose end is in the batch and sets its final cost gets its counts in the end's UPDATE instead, and
    one whose start is in the batch too is written as one finished row).
    """
    # A session that starts and ends (with its final totals) in this batch -- most of a bcall's, whose tasks
    # are shorter than a commit round -- is written as one row with its end, not an INSERT then an UPDATE.
    final_ends = {op[1]: op for op in ops if op[0] == "end" and op[5]}
    starts: list[tuple[Any, ...]] = []
    whole: list[tuple[Any, ...]] = []
    for op in ops:
        if op[0] == "start":
            (whole if op[1] in final_ends else starts).append(op)
    if starts:
        _insert_many(conn, START_SQL, [op[3] for op in starts])
    inserts: dict[str, list[Any]] = {}
    totals: dict[str, list[Any]] = {}
    for op in ops:
        if op[0] != "record":
            continue
        _, sql, values, sessions, kind, cost, prompt, completion, event, now = op
        inserts.setdefault(sql, []).append(values)
        for i, target in enumerate(sessions):
            t = totals.setdefault(target, [0.0, 0, 0, 0, 0, now, None])
            if kind == "model_call":
                t[0] += cost
                t[1] += prompt
                t[2] += completion
                t[3] += 1
            elif kind == "agent_call":
                t[4] += 1
            t[5] = max(t[5], now)
            if i == 0:
                t[6] = op  # the session's latest record: its last_event, worked out below
    dialogs: list[tuple[Any, ...]] = []
    if whole:
        rows = []
        for op in whole:
            end = final_ends.pop(op[1])
            rows.append(_whole_row(op[3], end[6], end[3], totals.pop(op[1], None)))
            dialogs.extend(end[4])
        _insert_many(conn, WHOLE_SQL, rows)
    for sql, values_list in inserts.items():
        _insert_many(conn, sql, values_list)
    notes = [(op[2], op[1]) for op in ops if op[0] == "meta"]
    if notes:  # after the starts, before the ends (an end writes the whole metadata, these keys included)
        conn.executemany(META_SQL, notes)
    ends: dict[str, list[tuple[Any, ...]]] = {}
    for op in ops:
        if op[0] == "end":
            _, sid, sql, values, dialog_rows, final_totals, _columns = op
            if final_totals and sid not in final_ends:
                continue  # written whole, above
            counts = (0, 0)
            own = totals.get(sid) if final_totals else None
            if own is not None:  # the end sets the final cost and tokens: fold the counts into it, one UPDATE
                del totals[sid]
                counts = (own[3], own[4])
            ends.setdefault(sql, []).append((*values[:-2], *counts, *values[-2:]))
            dialogs.extend(dialog_rows)
    if totals:  # before the ends: an end's last_event ("ended ok") must win
        for t in totals.values():
            if t[6] is not None:
                t[6] = _record_event(t[6])
        _update_many(conn, TOTALS_SQL, [(*t, sid) for sid, t in totals.items()])
    for sql, rows in ends.items():
        _update_many(conn, sql, rows)
    if dialogs:
        _insert_many(conn, DIALOG_SQL, dialogs)


def last_event(get: Callable[[str], Any]) -> str:
    """What a record says its session was doing (`sessions.last_event`): "model_call analyst/main ok", from its
    fields (`get(name)`)."""
    parts = [get("kind") or "event"]
    agent = get("agent")
    if agent:
        dialog = get("dialog")
        parts.append(f"{agent}/{dialog}" if dialog else str(agent))
    for attr in ("endpoint", "action", "sandbox_id"):
        value = get(attr)
        if value:
            parts.append(str(value))
            break
    status = get("status")
    if status:
        parts.append(str(status))
    return " ".join(parts)


_COLUMNS_AT: dict[str, dict[str, int]] = {}


def _record_event(op: tuple[Any, ...]) -> str:
    """The `last_event` of a record op: given, or worked out from its INSERT's columns and values."""
    if op[8] is not None:
        return str(op[8])
    sql, values = op[1], op[2]
    at = _COLUMNS_AT.get(sql)
    if at is None:
        names = sql[sql.index("(") + 1:sql.index(")")].split(",")
        at = _COLUMNS_AT[sql] = {name.strip(): i for i, name in enumerate(names)}
    return last_event(lambda name: values[at[name]] if name in at else None)


def commit(conn: sqlite3.Connection, ops: list[Any],
           apply: Callable[[sqlite3.Connection, list[Any]], None] = apply_ops) -> list[tuple[int, BaseException]]:
    """Run `ops` (None ones skipped) in one `BEGIN IMMEDIATE` ... `COMMIT`; if that fails, each alone, so that
    only the writes that fail fail. Returns `(index in ops, error)` for those."""
    real = [i for i, op in enumerate(ops) if op is not None]
    if not real:
        return []
    try:
        conn.execute("BEGIN IMMEDIATE")
        apply(conn, [ops[i] for i in real])
        conn.execute("COMMIT")
        return []
    except BaseException as exc:  # noqa: BLE001 - handed back to the writers' callers
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if len(real) == 1:
            return [(real[0], exc)]
    failures: list[tuple[int, BaseException]] = []
    for i in real:
        failures += [(i, exc) for _, exc in commit(conn, [ops[i]], apply)]
    return failures


_CHUNKS = (256, 64, 16, 4)
_MULTI_SQL: dict[tuple[str, int], str] = {}


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
    """`executemany(sql, rows)` for an `INSERT ... VALUES (...)`, as multi-row INSERTs of a few fixed sizes.

    SQLite runs a statement with the GIL released and the committing thread must take it back after each one;
    under a batch's 50 busy threads that wait dominates, so many rows a statement beat one row a statement.
    """
    i, n = 0, len(rows)
    width = len(rows[0]) if rows else 0
    for size in _CHUNKS:
        if size * width > 32_000:  # SQLite's limit is 32,766 parameters a statement
            continue
        while n - i >= size:
            multi = _MULTI_SQL.get((sql, size))
            if multi is None:
                head, _, one = sql.rpartition(" VALUES ")
                if "?1" in one:  # numbered parameters (a value used twice is bound once): number each row's own
                    rows_sql = [_renumber(one, k * width) for k in range(size)]
                else:
                    rows_sql = [one] * size
                multi = _MULTI_SQL[(sql, size)] = f"{head} VALUES {', '.join(rows_sql)}"
            conn.execute(multi, list(chain.from_iterable(rows[i:i + size])))
            i += size
    if i < n:
        conn.executemany(sql, rows[i:])


def _whole_row(start: tuple[Any, ...], end_columns: tuple[str, ...], end_values: list[Any],
               own: list[Any] | None) -> tuple[Any, ...]:
    """A session's row (`WHOLE_COLUMNS`) from its start's values, its end's (the end's columns win) and the
    counts of its records in the same batch (`own`: the totals entry; cost and tokens come from the end)."""
    row = dict(zip(START_COLUMNS, start))
    row.update(zip(end_columns, end_values))
    row["model_calls"], row["agent_calls"] = (own[3], own[4]) if own is not None else (0, 0)
    row["duration_s"] = end_values[-2] - row["started_at"]
    return tuple(map(row.get, WHOLE_COLUMNS))


def _renumber(sql: str, shift: int) -> str:
    """`sql` with every numbered parameter `?N` made `?N+shift` (the k-th row of a multi-row statement)."""
    return re.sub(r"\?(\d+)", lambda m: f"?{int(m.group(1)) + shift}", sql)


def _update_many(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
    """`executemany(sql, rows)` for this module's `UPDATE sessions SET ... = <expr with ?> ... WHERE id = ?`, as
    `UPDATE ... FROM (VALUES ...)` statements of a few fixed sizes (see `_insert_many`); ids are distinct."""
    i, n = 0, len(rows)
    width = len(rows[0]) if rows else 0
    for size in _CHUNKS:
        if size * width > 32_000:
            continue
        while n - i >= size:
            multi = _MULTI_SQL.get((sql, size))
            if multi is None:
                multi = _MULTI_SQL[(sql, size)] = _update_from_values(sql, width, size)
            conn.execute(multi, list(chain.from_iterable(rows[i:i + size])))
            i += size
    if i < n:
        conn.executemany(sql, rows[i:])


def _update_from_values(sql: str, width: int, size: int) -> str:
    head, _, where = sql.rpartition(" WHERE id = ?")
    assert not where, sql
    count = iter(range(1, width))
    sets = re.sub(r"\?", lambda _: f"v.column{next(count)}", head)  # the k-th ? is the k-th VALUES column
    one = "(" + ", ".join("?" * width) + ")"
    return f"{sets} FROM (VALUES {', '.join([one] * size)}) AS v WHERE sessions.id = v.column{width}"


# -- the wire between a ProcessWriter and its process ---------------------------------------------------

_HEADER = struct.Struct(">I")
_READ_SIZE = 1 << 20


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame (length, then payload) to `fd`, all of it."""
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Reads frames from a pipe's file descriptor."""

    def __init__(self, fd: int, loads: Callable[[bytes], Any] = pickle.loads) -> None:
        self.fd = fd
        self.eof = False
        self._buf = bytearray()
        self._loads = loads

    def read(self, *, limit: int = 1 << 30) -> list[Any]:
        """The frames that have arrived: blocks until there is at least one (or the pipe's end: then `[]` and
        `eof`), then takes whatever else is already there, up to about `limit` bytes."""
        frames: list[Any] = []
        while True:
            frames += self._parse()
            if self.eof or (frames and (len(self._buf) >= limit or not _readable(self.fd))):
                return frames
            chunk = os.read(self.fd, _READ_SIZE)
            if not chunk:
                self.eof = True
            self._buf += chunk

    def _parse(self) -> Iterable[Any]:
        buf, start, out = self._buf, 0, []
        while len(buf) - start >= 4:
            (size,) = _HEADER.unpack_from(buf, start)
            if len(buf) - start - 4 < size:
                break
            out.append(self._loads(bytes(buf[start + 4:start + 4 + size])))
            start += 4 + size
        del buf[:start]
        return out


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class _Lenient(pickle.Unpickler):
    """Unpickles the parent's writes without its modules: a value of a class this process cannot import (a
    `str` subclass or a str enum from the user's code, which SQLite binds as its text) becomes its plain value."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception:  # noqa: BLE001 - not importable here (-I -S: the standard library only)
            return _PlainValue


class _PlainValue:
    def __new__(cls, *args: Any) -> Any:  # noqa: D102 - pickle calls cls.__new__(cls, *args) for such a value
        return args[0] if len(args) == 1 else repr(args)


def _lenient_loads(data: bytes) -> Any:
    return _Lenient(io.BytesIO(data)).load()


def _dumps_failures(failures: list[tuple[int, BaseException]]) -> list[tuple[int, BaseException]]:
    out = []
    for seq, exc in failures:
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an error that does not pickle is sent as its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        out.append((seq, exc))
    return out


def serve(db: str, busy_timeout_ms: int, stdin: int = 0, stdout: int = 1) -> int:
    """The writer process: commit what arrives on `stdin`, answer on `stdout` (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = sqlite3.connect(db, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    conn.execute("PRAGMA synchronous = NORMAL")
    reader = FrameReader(stdin, _lenient_loads)
    ended = False
    while not ended:
        frames = reader.read(limit=32 << 20)
        if not frames:
            break  # the parent is gone: what arrived is committed
        ops: list[Any] = []
        first = last = 0
        for frame in frames:
            if frame is None:
                ended = True
                break
            seq, batch = frame
            if not ops:
                first = seq
            ops += batch
            last = seq + len(batch) - 1
        if ops:
            failures = [(first + i, exc) for i, exc in commit(conn, ops)]
            write_frame(stdout, pickle.dumps((last, _dumps_failures(failures)), protocol=pickle.HIGHEST_PROTOCOL))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], int(sys.argv[2])))
