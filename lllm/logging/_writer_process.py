"""The LogStore's writer process: a batch's log writes committed on another core.

Under a `bcall` the group commit (`_writer.py`) runs in the threads that write, so committing competes with
the tasks for the GIL: the leader gives the GIL up for every statement and waits to get it back, and the
SQL (about 40 microseconds a task) is time the tasks do not get. A `ProcessWriter` has the same interface, but
the writes go, pickled in batches, down a pipe to a child process (`python -I -S _commit.py`: the standard
library only, ready in about 20 ms) that commits everything that has arrived in one transaction and answers
with the last write it committed and the writes that failed.

- `submit(data, wait=False)` queues and returns; a sender thread ships what is queued whenever it gets the
  GIL, so a batch's writes travel in a few large frames, not one by one.
- `submit(data)` (and `flush()`) returns once the writer process has committed it, re-raising its error.
- The queue is bounded (`max_pending`) as in the group commit: records past it are dropped and counted.
- Crashes: writes the child has received are committed even if this process is killed (it commits, then sees
  its stdin close, and exits); what was still queued here is lost. If the child dies, every waiting and later
  write raises `LogWriterError` with its exit status and the end of its stderr: an infrastructure failure
  that ends the run, never a silent gap in the log.
- `close()` (also run at interpreter exit) commits what is queued and ends the child.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any

from lllm.errors import LogWriterError, UsageError
from lllm.logging import _commit
from lllm.logging._commit import FrameReader, write_frame
from lllm.logging._writer import FlushingWriter, _Op

__all__ = ["ProcessWriter"]

_LIVE: weakref.WeakSet[ProcessWriter] = weakref.WeakSet()
_STDERR_TAIL = 2000
_SHIP_EVERY_S = 0.010  # under load, the longest a write not waited for stays here before it is shipped
_SHIP_AT = 1000  # ... unless this many are queued
_IDLE_POLL_S = 0.25  # an idle sender looks anyway this often
_PIPE_BYTES = 1 << 20


class ProcessWriter(FlushingWriter):
    """Commits writes in a child process; the interface of `GroupWriter` (`submit`, `flush`, `close`, the
    counters).

    Args:
        path: the database file (its schema is already in place).
        busy_timeout: seconds a commit waits while another process holds the database.
        name: a name for error messages and threads.
        max_pending: the most writes that may wait here to be shipped; records past it are dropped and counted.
    """

    def __init__(self, path: str, *, busy_timeout: float, name: str, max_pending: int = 100_000) -> None:
        super().__init__(name, max_pending)
        self.path = path
        self._wake = threading.Event()
        self._urgent = False  # a write somebody waits for is queued
        self._queue: deque[Any] = deque()  # writes not shipped yet; a write somebody waits for is its _Op
        self._last_ship = time.monotonic()  # every write in the queue was submitted after this
        self._next_seq = 1  # the sequence number the next write shipped gets
        self._waiting: deque[_Op] = deque()  # waited writes, in sequence order
        self._in_flight: deque[tuple[int, float]] = deque()  # (last write of a frame, its oldest write's time at most)
        self._error: LogWriterError | None = None
        self._closed = False
        self._stopping = False
        self._owner_pid = os.getpid()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _commit.__file__, path, str(int(busy_timeout * 1000))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            process_group=0)  # a terminal's Ctrl-C goes to our process group: the writer outlives it and commits
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to_child = self._proc.stdin.fileno()
        self._from_child = self._proc.stdout.fileno()
        _widen_pipe(self._to_child)
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, name=f"{name}-acks", daemon=True)
        self._sender.start()
        self._receiver.start()
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        """The writer process's pid."""
        return self._proc.pid

    def submit(self, data: Any, *, wait: bool = True, key: Any = None, droppable: bool = True) -> bool:
        """Write `data`; returns False when a record was dropped (queue full). See `GroupWriter.submit`."""
        if self._closed:
            raise UsageError("the LogStore is closed; open a new one with sqlite_store(path)")
        if self._error is not None:
            raise LogWriterError(self._error.message, **self._error.facts)
        queue = self._queue
        if not wait:
            if len(queue) >= self.max_pending:
                if droppable:
                    with self._mutex:
                        self.dropped += 1
                        self.dropped_by[key] += 1
                    return False
            else:
                # no lock: deque.append is atomic, and the sender takes what is there every _SHIP_EVERY_S
                queue.append(data)
                if len(queue) == 1:
                    self._wake.set()  # it was idle
                return True
        op = _Op(data, True)
        queue.append(op)  # the sender numbers it as it ships it
        self._urgent = True
        self._wake.set()
        assert op.wake is not None
        while not op.wake.acquire(timeout=0.5):  # until the writer process has committed it, or is gone
            if op.seq == 0 and (self._error is not None or not self._sender.is_alive()):
                # never shipped: the writer failed or was closed as this write came in
                if self._error is not None:
                    raise LogWriterError(self._error.message, **self._error.facts)
                raise UsageError("the LogStore was closed while this write was being made")
        if op.error is not None:
            raise op.error
        return True

    def _idle(self) -> bool:
        return not self._queue and not self._in_flight and self._error is None

    def close(self) -> None:
        """Commit what is queued, end the writer process, refuse further writes (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            failed = self._error is not None  # already raised to the writes it lost
        try:
            if not failed:
                self.flush()
        finally:
            self._closed = self._stopping = True
            self._wake.set()
            self._sender.join()
            self._stop_child()
            self._receiver.join(5)
            _LIVE.discard(self)

    # -- threads --------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        queue = self._queue
        try:
            while True:
                # idle: until a write comes (or, should its wake-up be missed, _IDLE_POLL_S); busy: every
                # _SHIP_EVERY_S, or at once for a write somebody waits for
                self._wake.wait(_IDLE_POLL_S)
                self._wake.clear()
                if not queue:
                    if self._stopping:
                        break
                    continue
                urgent, self._urgent = self._urgent, False
                if len(queue) < _SHIP_AT and not self._stopping and not urgent:
                    self._wake.wait(_SHIP_EVERY_S)  # gather more (a waited write cuts this short)
                    self._wake.clear()
                    self._urgent = False
                self._ship(queue)
            write_frame(self._to_child, pickle.dumps(None))  # the end: commit what came and exit
        except BaseException as exc:  # noqa: BLE001 - a write that does not pickle, or the child is gone
            self._fail(f"could not send writes to the log writer process ({type(exc).__name__}: {exc})")

    def _ship(self, queue: deque[Any]) -> None:
        """Send what is queued as one frame, numbering the writes (and the waited ones' `_Op`s)."""
        batch: list[Any] = []
        waited: list[_Op] = []
        first = self._next_seq
        taken = len(queue)  # what is there now; later writes go in the next frame
        for _ in range(taken):
            item = queue.popleft()
            if type(item) is _Op:
                item.seq = first + len(batch)
                waited.append(item)
                item = item.data
            batch.append(item)
        self._next_seq = first + len(batch)
        with self._mutex:
            self._waiting.extend(waited)
            self._in_flight.append((self._next_seq - 1, self._last_ship))
        self._last_ship = time.monotonic()
        write_frame(self._to_child, pickle.dumps((first, batch), protocol=pickle.HIGHEST_PROTOCOL))

    def _receive_loop(self) -> None:
        reader = FrameReader(self._from_child)
        try:
            while True:
                frames = reader.read()
                if not frames:
                    break
                for last, failures in frames:
                    self._acknowledge(last, failures)
        except BaseException as exc:  # noqa: BLE001 - a broken answer: the writer cannot be trusted any more
            self._fail(f"the log writer process sent a broken answer ({type(exc).__name__}: {exc})")
            return
        with self._mutex:
            clean = self._stopping and not self._queue and not self._waiting
        if not clean:
            self._fail("the log writer process exited")

    def _acknowledge(self, last: int, failures: list[tuple[int, BaseException]]) -> None:
        now = time.monotonic()
        errors = dict(failures)
        woken: list[_Op] = []
        with self._mutex:
            while self._in_flight and self._in_flight[0][0] <= last:
                _, queued_at = self._in_flight.popleft()
                self.max_wait_s = max(self.max_wait_s, now - queued_at)
            while self._waiting and self._waiting[0].seq <= last:
                op = self._waiting.popleft()
                op.error = errors.pop(op.seq, None)
                op.done = True
                woken.append(op)
            self.failed += len(failures)
            self._unclaimed += errors.values()
        for op in woken:
            op.wake.release()  # type: ignore[union-attr]

    def _fail(self, why: str) -> None:
        """The writer process is gone or unusable: every waiting and later write raises `LogWriterError`."""
        with self._mutex:
            if self._error is not None:
                return
            lost = len(self._queue) + len(self._in_flight)
        code, tail = self._child_exit()
        message = (f"{why}; log {self.path!r}: the writes not yet committed are lost (about {lost} batch(es) and "
                   f"queued writes). Exit status: {code}. {tail}Check the disk and the file, then open the store "
                   f"again with sqlite_store(path).")
        error = LogWriterError(message, path=self.path, exit_status=code)
        with self._mutex:
            self._error = error
            waiting, self._waiting = list(self._waiting), deque()
            self._in_flight.clear()
        while self._queue:  # writes never shipped: their waiters get the error too
            item = self._queue.popleft()
            if type(item) is _Op:
                waiting.append(item)
        for op in waiting:
            op.error = LogWriterError(message, path=self.path, exit_status=code)
            op.wake.release()  # type: ignore[union-attr]

    def _child_exit(self) -> tuple[int | None, str]:
        """The child's exit status (waiting a moment for it) and the end of its stderr, as a sentence."""
        try:
            code = self._proc.wait(2)
        except subprocess.TimeoutExpired:
            return None, ""
        err = b""
        if self._proc.stderr is not None:
            try:
                err = self._proc.stderr.read() or b""
            except (OSError, ValueError):
                err = b""
        text = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
        return code, (f"Its stderr ended with: {text!r}. " if text else "")

    def _stop_child(self) -> None:
        for stream in (self._proc.stdin,):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:  # another process forked from ours still holds the pipe: end it
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def _widen_pipe(fd: int) -> None:
    """Give the pipe to the child room for a few frames (1 MiB, not 64 KiB), so that shipping a frame does not
    wait for the child to read while it commits the last one."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default size works, only slower
        pass


@atexit.register
def _close_all() -> None:
    """At interpreter exit: commit what every open writer still has queued, and end the writer processes."""
    if not _LIVE:
        return
    for writer in list(_LIVE):
        if os.getpid() != writer._owner_pid:
            continue  # a forked child: the writer is its parent's
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - exit goes on; the error was the writes' to report
            pass

