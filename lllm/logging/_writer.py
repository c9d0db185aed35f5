"""The LogStore's writer thread: every write runs on one thread, many writes per transaction (group commit).

A caller hands over a write (an operation, as data) and waits until the transaction holding it is committed,
so a write that returned is on disk for other processes to read, and a crash right after it loses nothing.
Under load the writer takes every write queued since its last commit into the next transaction and hands
them to `apply(ops)` together, which groups them into a few `executemany` calls: 50 threads cost a few
statements and one commit instead of hundreds (each statement gives up the GIL and waits to get it back).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from typing import Any, Callable

from lllm.errors import UsageError

__all__ = ["GroupWriter"]

_STOP = object()
_MAX_BATCH = 1000


class _Op:
    __slots__ = ("data", "done", "error")

    def __init__(self, data: Any) -> None:
        self.data = data
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupWriter:
    """Runs writes on its own thread inside `BEGIN IMMEDIATE` ... `COMMIT`, holding `lock` meanwhile.

    Args:
        conn: the connection (opened with `check_same_thread=False`, `isolation_level=None`).
        lock: the lock that readers of the same connection hold.
        apply: executes a list of operations (in submission order) inside the open transaction.
        name: the thread's name.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, apply: Callable[[list[Any]], None], *,
                 name: str) -> None:
        self._conn = conn
        self._lock = lock
        self._apply_ops = apply
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, data: Any) -> None:
        """Apply operation `data` in the next transaction; return once it is committed (re-raising its error)."""
        if self._closed:
            raise UsageError("the LogStore is closed; open a new one with sqlite_store(path)")
        op = _Op(data)
        self._queue.put(op)
        while not op.done.wait(1.0):
            if not self._thread.is_alive():  # never hang on a writer that is gone
                raise UsageError("the LogStore's writer thread has stopped; nothing more can be written. Open a "
                                 "new store with sqlite_store(path)")
        if op.error is not None:
            raise op.error

    def close(self) -> None:
        """Finish the queued writes and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._apply(batch)
            finally:
                for op in batch:
                    op.done.set()
            if stop:
                return

    def _apply(self, batch: list[_Op]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._apply_ops([op.data for op in batch])
                self._conn.execute("COMMIT")
                return
            except BaseException as exc:  # noqa: BLE001 - handed back to the callers below
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if len(batch) == 1:
                    batch[0].error = exc
                    return
        for op in batch:  # one write failed: run each alone so that only its caller gets the error
            self._apply([op])
