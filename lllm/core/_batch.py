"""The one batch engine behind `Tactic.bcall` and `Tactic.ccall`: workers, fail-fast, cost cap, resume, progress.

`BatchRun` runs tasks on `max_workers` threads and yields `(index, result_or_exception)` as they finish.
Workers take the next task from a shared cursor and check, before starting each one, that the batch was not
stopped (a failure under `fail_fast`, the cost cap, or the consumer walking away), so "no new task starts"
is exact. `bcall` collects the stream in input order; `ccall` hands it out as it comes (sync or async).

Where a task runs is the executor's business (`lllm.core.executor`): in the worker thread itself (threads, the
default), or on a Ray cluster, the worker thread then waiting for it. The rules above are the same for every
executor, because they are kept here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Iterator, Protocol, Sequence

from lllm.core.executor import Executor, ExecuteFn, resolve_executor
from lllm.errors import BudgetExceeded, UsageError
from lllm.records import task_fingerprint


class Tactic(Protocol):
    """What a batch needs of a `lllm.core.tactic.Tactic` (that module sits above this one)."""

    @property
    def name(self) -> Any: ...

    @property
    def log_store(self) -> Any: ...

    def _execute(self, task: Any, *, call_kwargs: dict[str, Any], tags: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, batch_id: str | None = None,
                 task_index: int | None = None, task_hash: str | None = None,
                 session_out: list[Any] | None = None) -> Any: ...

__all__ = ["BatchResult", "BatchRun", "BatchStream"]

_DONE = object()


class BatchResult(list[Any]):
    """The results of a `bcall`, in input order (a plain list), with the batch's facts as attributes."""

    batch_id: str
    """Pass it as `bcall(..., resume=batch_id)` to run again only what did not succeed."""
    spent: float
    """USD spent by this batch (including earlier runs when resumed)."""
    skipped: int
    """Tasks not run because they had already succeeded under this batch id."""

    @property
    def errors(self) -> dict[int, BaseException]:
        """The failed tasks: `{index: exception}`."""
        return {i: r for i, r in enumerate(self) if isinstance(r, BaseException)}


class _Progress:
    """A one-line progress bar on stderr (only on a terminal): done, failed, cost so far, rate."""

    def __init__(self, total: int, *, enabled: bool | None, label: str) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.label = total, label
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, failed: int, cost: float, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        width = 24
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total} done, {failed} failed, ${cost:.4f}, "
                         f"{rate:.1f} tasks/s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class BatchRun:
    """One batch of tasks on one tactic; iterate it for `(index, result_or_exception)` as tasks finish.

    Args:
        tactic: the tactic whose calls run the tasks.
        tasks: the tasks, in order (indices refer to this order).
        max_workers: threads running tasks at once.
        fail_fast: on the first failure start no new task, let running ones finish, then raise it;
            otherwise a failed task's exception is yielded in place of its result.
        tags: stored on every task's session.
        resume: an earlier batch id: tasks that succeeded under it are not run again (their stored results
            are yielded) and this run records under the same id.
        max_cost: USD; once the batch (with its earlier runs) has spent this much, no new task starts. The
            tasks left get a `BudgetExceeded` (raised under `fail_fast`, yielded otherwise).
        progress: show a progress bar; None: only when stderr is a terminal.
        call_kwargs: passed to `tactic.call` for every task.
        return_sessions: yield each task's `TacticCallSession` instead of its result (lllm-core 0.1 option).
        executor: where tasks run: None or "threads" (here), "ray", or an executor object (`lllm.core.executor`);
            `max_workers` is then the number of tasks in flight at once.
    """

    def __init__(self, tactic: Tactic, tasks: Sequence[Any], *, max_workers: int, fail_fast: bool,
                 tags: dict[str, Any] | None, resume: str | None, max_cost: float | None,
                 progress: bool | None, metadata: dict[str, Any] | None = None,
                 call_kwargs: dict[str, Any] | None = None, return_sessions: bool = False,
                 executor: str | Executor | None = None) -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise UsageError(f"max_workers must be an int >= 1, got {max_workers!r}", value=max_workers)
        if max_cost is not None and (not isinstance(max_cost, (int, float)) or max_cost < 0):
            raise UsageError(f"max_cost must be a number of USD >= 0, got {max_cost!r}", value=max_cost)
        if resume is not None and tactic.log_store is None:
            raise UsageError(f"bcall(resume={resume!r}) needs a log store to know what already succeeded; build "
                             "the tactic with log_store=sqlite_store(path)", batch_id=resume)
        self.tactic = tactic
        self.executor: Executor = resolve_executor(executor)
        self.tasks = list(tasks)
        self.max_workers, self.fail_fast, self.max_cost = max_workers, fail_fast, max_cost
        if return_sessions and resume is not None:
            raise UsageError("bcall(return_sessions=True) cannot resume: the tasks skipped have no session in this "
                             "process; read them from the log store (list_sessions(batch_id=...))", batch_id=resume)
        self.tags, self.metadata, self.call_kwargs = dict(tags or {}), metadata, dict(call_kwargs or {})
        self.return_sessions = return_sessions
        self.stream = False
        """True for `ccall`: every result is handed out as it comes, so its session is committed first
        (`bcall` hands out nothing before the end, and flushes once then)."""
        self.batch_id = resume or uuid.uuid4().hex[:16]
        self.resume = resume
        self.progress = _Progress(len(self.tasks), enabled=progress, label=f"{tactic.name} {self.batch_id[:8]}")
        self.spent = 0.0
        self.skipped = 0
        self.done = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget_hit = False
        self._started: set[int] = set()
        self._context = contextvars.copy_context()  # the caller's: a batch inside a tactic call folds into it

    # -- the stream ----------------------------------------------------------------------------------

    def _previous(self) -> dict[int, Any]:
        """Results of tasks that already succeeded under the resumed batch id (checked against the tasks)."""
        if self.resume is None:
            return {}
        store = self.tactic.log_store
        if not store.batch_exists(self.resume):
            raise UsageError(f"resume={self.resume!r}: the log store {store.path!r} has no batch with that id; "
                             "use the batch_id of an earlier bcall (BatchResult.batch_id)", batch_id=self.resume)
        done = store.completed_tasks(self.resume)
        rows = store.query("SELECT COALESCE(SUM(cost), 0) AS c FROM sessions WHERE batch_id = ? AND parent_id IS NULL",
                           [self.resume])
        self.spent = float(rows[0]["c"])
        out: dict[int, Any] = {}
        for index, (fingerprint, value) in done.items():
            if index >= len(self.tasks) or task_fingerprint(self.tasks[index]) != fingerprint:
                raise UsageError(f"resume={self.resume!r}: task {index} recorded under that batch differs from task "
                                 f"{index} of this call; resume with the same task list, in the same order",
                                 batch_id=self.resume, index=index)
            out[index] = value
        return out

    def _worker(self, execute: ExecuteFn, cursor: Iterator[int], out: queue.Queue[Any]) -> None:
        try:
            while True:
                with self._lock:
                    if self._stop.is_set():
                        break
                    if self.max_cost is not None and self.spent >= self.max_cost:
                        self._budget_hit = True
                        self._stop.set()
                        break
                    index = next(cursor, None)
                    if index is None:
                        break
                    self._started.add(index)
                task = self.tasks[index]
                holder: list[Any] = []
                try:
                    result = execute(
                        task, call_kwargs=self.call_kwargs, tags=self.tags, metadata=self.metadata,
                        batch_id=self.batch_id, task_index=index,
                        task_hash=task_fingerprint(task) if self.tactic.log_store is not None else None,
                        session_out=holder)
                    error = None
                except Exception as exc:  # noqa: BLE001 - every task error is reported, none is lost
                    result, error = None, exc
                    if self.fail_fast:
                        self._stop.set()  # before anyone takes the next task
                # every attempt's session: an executor that retried a task spent on each attempt
                cost = sum(session.total_cost.cost for session in holder)
                with self._lock:
                    self.spent += cost
                if self.return_sessions and holder:
                    result = holder[-1]  # the session stands for the task, failed or not
                    if not self.fail_fast:
                        error = None
                out.put((index, result, error))
        finally:
            out.put(_DONE)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        previous = self._previous()
        self.skipped = len(previous)
        for index in sorted(previous):
            self.done += 1
            yield index, previous[index]
        pending = [i for i in range(len(self.tasks)) if i not in previous]
        cursor = iter(pending)
        out: queue.Queue[Any] = queue.Queue()
        workers: list[threading.Thread] = []
        first_error: tuple[int, BaseException] | None = None
        started = False
        try:
            if pending:
                use_writer_process = getattr(self.tactic.log_store, "use_writer_process", None)
                if use_writer_process is not None and self.max_workers > 1 and len(pending) > 1:
                    use_writer_process()  # the tasks' log writes are committed on another core than the tasks
                # before any task: what cannot work (no cluster, a package that cannot ship) fails here
                execute = self.executor.start(self)
                started = True
                workers = [threading.Thread(target=self._context.copy().run,
                                            args=(self._worker, execute, cursor, out),
                                            name=f"lllm-batch-{self.batch_id[:8]}-{n}", daemon=True)
                           for n in range(min(self.max_workers, len(pending)))]
            for w in workers:
                w.start()
            running = len(workers)
            store = self.tactic.log_store
            ready: list[Any] = []
            while running or ready:
                if not ready:
                    ready.append(out.get())
                    while True:  # take what else finished, so one flush covers them all
                        try:
                            ready.append(out.get_nowait())
                        except queue.Empty:
                            break
                    if store is not None and self.stream:
                        store.flush()  # the sessions of these results are committed before they are handed out
                item = ready.pop(0)
                if item is _DONE:
                    running -= 1
                    continue
                index, result, error = item
                if error is not None:
                    self.failed += 1
                    if self.fail_fast:
                        self._stop.set()
                        if first_error is None:
                            first_error = (index, error)
                        self.progress.update(self.done, self.failed, self.spent)
                        continue
                    self.done += 1
                    self.progress.update(self.done, self.failed, self.spent)
                    yield index, error
                else:
                    self.done += 1
                    self.progress.update(self.done, self.failed, self.spent)
                    yield index, result
        finally:
            self._stop.set()
            for w in workers:
                w.join()
            if started:
                self.executor.finish(self)
            if self.tactic.log_store is not None:
                self.tactic.log_store.flush()
            self.progress.update(self.done, self.failed, self.spent, final=True)
        if first_error is not None:
            index, error = first_error
            error.add_note(f"raised by task {index} of batch {self.batch_id!r} (fail_fast=True: no new task was "
                           f"started after it; bcall(..., resume={self.batch_id!r}) runs what did not succeed)")
            raise error
        if self._budget_hit:
            not_started = [i for i in pending if i not in self._started]
            if not_started:
                exc = BudgetExceeded(
                    f"batch {self.batch_id!r} spent ${self.spent:.4f} of max_cost=${self.max_cost}; "
                    f"{len(not_started)} task(s) were not started (first: {not_started[0]}). Raise max_cost and "
                    f"call bcall(..., resume={self.batch_id!r}) to run them.",
                    batch_id=self.batch_id, spent=self.spent, max_cost=self.max_cost, not_started=not_started)
                if self.fail_fast:
                    raise exc
                for index in not_started:
                    yield index, exc


class BatchStream:
    """What `ccall` returns: iterate it (`for` or `async for`) for `(index, result)` as tasks finish."""

    def __init__(self, run: BatchRun) -> None:
        self._run = run
        run.stream = True

    @property
    def batch_id(self) -> str:
        return self._run.batch_id

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return iter(self._run)

    async def _agen(self) -> AsyncIterator[tuple[int, Any]]:
        it = iter(self._run)
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await loop.run_in_executor(None, next, it, _DONE)
                if item is _DONE:
                    return
                yield item  # type: ignore[misc]  # not _DONE, so an (index, result) pair
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)

    def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        return self._agen()
