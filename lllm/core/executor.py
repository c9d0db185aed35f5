"""Where a batch's tasks run: the executor seam of `BatchRun` (threads here; Ray and others plug in by name).

`BatchRun` keeps the batch's rules (results in input order, fail_fast, max_cost, resume, tags, progress) and asks
an executor only to run one task at a time, from each of its `max_workers` threads:

- `start(run)` runs once, before any task: an executor connects to its cluster or ships the tactic's package
  here, so that what cannot work fails before anything ran. It returns the function the workers call for each
  task, with the signature of `Tactic._execute`: run the task, put the task's `TacticCallSession` in
  `session_out` (one per attempt, the last being the one that stands for the task) and return its result, or
  raise its error.
- `finish(run)` runs once after the last task, whether the batch succeeded or not.

```python
tactic.bcall(tasks)                              # executor="threads": this process
tactic.bcall(tasks, executor="ray")              # a Ray cluster ($LLLM_RAY_ADDRESS, or a local one)
tactic.bcall(tasks, executor=RayExecutor(address="10.0.0.5:6379", max_retries=1))
```

Executors are found by name in `EXECUTORS`: "threads" is built in; others declare an entry point of the group
`lllm.batch_executors` (lllm's own "ray" is `RayExecutor`, in the room above the core) or are registered with
`register_executor(name, factory)`. A name gives one executor per process, made on first use and kept, so the
batches of a process share its connection.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Protocol

from lllm.errors import UsageError
from lllm.registry import Registry

__all__ = ["EXECUTORS", "Executor", "ThreadExecutor", "register_executor", "resolve_executor"]

ExecuteFn = Callable[..., Any]
"""`execute(task, *, call_kwargs, tags, metadata, batch_id, task_index, task_hash, session_out) -> result`."""


class Executor(Protocol):
    """What `BatchRun` needs of an executor (see the module docstring)."""

    name: str

    def start(self, run: Any) -> ExecuteFn: ...

    def finish(self, run: Any) -> None: ...


class ThreadExecutor:
    """Runs each task in the batch's worker thread, in this process (the default)."""

    name = "threads"

    def start(self, run: Any) -> ExecuteFn:
        return run.tactic._execute

    def finish(self, run: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "ThreadExecutor()"


EXECUTORS: Registry[Callable[[], Executor]] = Registry(
    "executor", group="lllm.batch_executors",
    hint="Register one with lllm.core.executor.register_executor(name, factory_or_dotted_path).")
"""Executor name -> a factory (usually the class) that makes it with its default options."""
EXECUTORS.register("threads", ThreadExecutor)

_SHARED: dict[str, Executor] = {}
_SHARED_LOCK = threading.Lock()


def register_executor(name: str, factory_or_path: Callable[[], Executor] | str) -> None:
    """Register an executor factory (or its dotted path `"package.module:Class"`) under `name`."""
    EXECUTORS.register(name, factory_or_path)


def resolve_executor(executor: str | Executor | None) -> Executor:
    """The executor a batch runs on: None is "threads", a name is the process's executor of that name (made on
    first use with its default options), an object with `start` and `finish` is used as it is.

    Raises:
        ConfigError: an unknown name (the message lists the registered ones).
        UsageError: something that is neither a name nor an executor.
    """
    if executor is None:
        executor = "threads"
    if isinstance(executor, str):
        with _SHARED_LOCK:
            found = _SHARED.get(executor)
            if found is None:
                factory = EXECUTORS.lookup(executor)
                found = _SHARED[executor] = factory()
            return found
    if not (callable(getattr(executor, "start", None)) and callable(getattr(executor, "finish", None))):
        raise UsageError(f"executor must be a registered name ({EXECUTORS.names()!r}) or an executor object with "
                         f"start(run) and finish(run); got {executor!r:.100}", value=executor)
    return executor
