"""The LogStore's group commit: many writes per transaction, run by the threads that write (leader commit).

(During a batch a `writer="auto"` store commits in a writer process instead: `_writer_process.py`.)

A thread that writes while nobody else is writing becomes the leader: it runs its write, and every write that
queues meanwhile, inside one `BEGIN IMMEDIATE` ... `COMMIT`, and keeps going until the queue is empty; the
others' writes ride along. No writer thread means no hand-over between threads for a write that meets no
contention (a lone writer commits its own write before `submit` returns), and under load 50 threads cost a
few statements and one commit per round instead of hundreds of commits.

Two kinds of write:
- `submit(data)` (session start and end): returns once the transaction holding it is committed, re-raising
  its error; the caller may wait for a leader.
- `submit(data, wait=False)` (trace records): committed before `submit` returns when this thread leads (no
  one else was writing); otherwise it is queued for the leader at work, which commits it in its next round
  (milliseconds), and `submit` returns at once. So a process that dies loses at most the records queued
  behind a transaction in flight, and a session's end (a waited write, after its records in the queue) is
  committed together with everything before it. Under a 50-thread batch a round takes tens to hundreds of
  milliseconds, up to about 2 s on a saturated machine (the leader gives up the GIL for every statement and
  waits to get it back), so that is what a crash there loses (`max_wait_s` says the worst so far); the log never holds a finished session without its records.
The queue is bounded (`max_pending`): a record that finds it full is dropped and counted (`dropped`, and per
key in `dropped_by`), so a flood of records from any source cannot grow memory without bound; waited writes
are never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from typing import Any, Callable

from lllm.errors import UsageError
from lllm.logging._commit import commit

__all__ = ["FlushingWriter", "GroupWriter"]

_MAX_BATCH = 1000
_HANDOVER_ROUNDS = 4  # a leader whose own write is done hands over after this many rounds if others wait


class _Op:
    __slots__ = ("data", "done", "error", "wake", "lead", "at", "seq")

    def __init__(self, data: Any, wait: bool) -> None:
        self.data = data
        self.at = time.monotonic()
        self.done = False
        self.error: BaseException | None = None
        self.lead = False
        self.seq = 0
        # a waiting writer sleeps on its own lock (the leader releases it), not on a shared condition: waking
        # 50 threads to find the one whose write is done costs more than the write
        self.wake: threading.Lock | None = None
        if wait:
            self.wake = threading.Lock()
            self.wake.acquire()


class FlushingWriter:
    """What both writers share: the counters, and `flush()`, which commits what is queued, then raises the
    first error of the writes nobody waited for since the last flush."""

    def __init__(self, name: str, max_pending: int) -> None:
        self.name = name
        self.max_pending = max_pending
        self._mutex = threading.Lock()
        self.dropped = 0
        """Records dropped because the queue was full."""
        self.dropped_by: Counter[Any] = Counter()
        """The same, by the `key` given to `submit` (the LogStore passes the session id)."""
        self.failed = 0
        """Writes that failed (a waited write re-raises its error; the others' go to the next `flush()`)."""
        self._unclaimed: list[BaseException] = []
        self.max_wait_s = 0.0
        """The longest a write has waited from `submit` to its commit, in seconds: what a crash could have
        lost at worst, so far."""

    def submit(self, data: Any, *, wait: bool = True, key: Any = None, droppable: bool = True) -> bool:
        raise NotImplementedError

    def _idle(self) -> bool:
        """Nothing queued or in flight (holding `_mutex`)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Commit every write queued so far (returns once they are committed); then raise the first error of
        the writes nobody waited for, if any failed since the last flush."""
        with self._mutex:
            idle = self._idle()
        if not idle:
            self.submit(None)
        with self._mutex:
            errors, self._unclaimed = self._unclaimed, []
        if errors:
            first = errors[0]
            if len(errors) > 1:
                first.add_note(f"{len(errors) - 1} more log write(s) failed since the last flush")
            raise first


class GroupWriter(FlushingWriter):
    """Runs writes inside `BEGIN IMMEDIATE` ... `COMMIT`, holding `lock` meanwhile.

    Args:
        conn: the connection (opened with `check_same_thread=False`, `isolation_level=None`).
        lock: the lock that readers of the same connection hold.
        apply: executes a list of operations (in submission order) inside the open transaction
            (`_commit.apply_ops`).
        name: a name for error messages.
        max_pending: the most writes that may wait in the queue; records past it are dropped and counted.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, apply: Callable[[sqlite3.Connection, list[Any]], None], *,
                 name: str, max_pending: int = 100_000) -> None:
        self._conn = conn
        self._lock = lock
        self._apply_ops = apply
        super().__init__(name, max_pending)
        self._pending: list[_Op] = []
        self._busy = False
        self._closed = False

    def submit(self, data: Any, *, wait: bool = True, key: Any = None, droppable: bool = True) -> bool:
        """Write `data` (see the module docstring); returns False when a record was dropped (queue full).

        Args:
            wait: return only once it is committed (and re-raise its error).
            key: what a dropped record is counted under in `dropped_by`.
            droppable: a write that is not waited for may be dropped when the queue is full; with False it
                is waited for instead.
        """
        with self._mutex:
            if self._closed:
                raise UsageError("the LogStore is closed; open a new one with sqlite_store(path)")
            if not wait and len(self._pending) >= self.max_pending:
                if not droppable:
                    wait = True
                else:
                    self.dropped += 1
                    self.dropped_by[key] += 1
                    return False
            op = _Op(data, wait)
            self._pending.append(op)
            lead = not self._busy
            if lead:
                self._busy = True
        if not lead:
            if not wait:
                return True  # the leader at work commits it in its next round
            assert op.wake is not None
            op.wake.acquire()  # until our write is committed, or the leader hands over to us
            lead = op.lead
        if lead:
            self._lead(op)
        if wait and op.error is not None:
            raise op.error  # (a write not waited for reports at the next flush, even when this thread ran it)
        return True

    def _lead(self, own: _Op) -> None:
        """Commit queued writes, round after round, until the queue is empty (`_busy` is ours)."""
        rounds = 0
        try:
            while True:
                with self._mutex:
                    nxt: _Op | None = None
                    if self._pending and own.done and rounds >= _HANDOVER_ROUNDS:
                        # ours is written: hand over to a thread that waits anyway, so no caller leads forever
                        nxt = next((op for op in self._pending if op.wake is not None), None)
                    if not self._pending or nxt is not None:
                        self._hand_over(nxt)
                        return
                    batch = self._pending[:_MAX_BATCH]
                    del self._pending[:_MAX_BATCH]
                try:
                    self._apply(batch)
                    waited = time.monotonic() - batch[0].at  # the oldest write of the round
                    if waited > self.max_wait_s:
                        self.max_wait_s = waited
                finally:
                    failed = []
                    for op in batch:
                        op.done = True
                        if op.error is not None:
                            failed.append(op)
                        if op.wake is not None and op is not own:
                            op.wake.release()
                    if failed:
                        with self._mutex:
                            self.failed += len(failed)
                            self._unclaimed += [op.error for op in failed if op.wake is None and op.error]
                rounds += 1
        except BaseException:  # e.g. KeyboardInterrupt mid-commit: never leave the writer marked busy
            with self._mutex:
                if self._busy:
                    self._hand_over(next((op for op in self._pending if op.wake is not None), None))
            raise

    def _hand_over(self, nxt: _Op | None) -> None:
        """End this leader's turn (holding `_mutex`): wake `nxt` to lead, or mark the writer idle."""
        if nxt is None:
            self._busy = False
        else:
            nxt.lead = True
            nxt.wake.release()  # type: ignore[union-attr]

    def _idle(self) -> bool:
        return not self._pending and not self._busy

    def close(self) -> None:
        """Commit what is queued, then refuse further writes (idempotent)."""
        with self._mutex:
            if self._closed:
                return
        try:
            self.flush()
        finally:
            with self._mutex:
                self._closed = True

    def _apply(self, batch: list[_Op]) -> None:
        with self._lock:
            failures = commit(self._conn, [op.data for op in batch], self._apply_ops)
        for i, exc in failures:
            batch[i].error = exc
