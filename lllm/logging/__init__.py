"""The log store: a SQLite record of tactic call sessions, their traces, dialogs and costs; trace sinks; terminal
logging.

>>> from lllm.logging import sqlite_store
>>> store = sqlite_store(":memory:")
>>> store.cost_summary(group_by="tactic")
[]

The names of lllm-core 0.1's `lllm.logging` work too: `local_store`, `sqlite_store(path, partition=, runtime=)`,
`noop_store`, `LogStore(backend, partition=, runtime=)` with `SQLiteBackend`, `LocalFileBackend`, `NoOpBackend`
or a `LogBackend` of your own, `SessionRecord`, `SessionSummary`, `setup_logging`, `ColoredFormatter`
(what differs is said in `lllm.logging._core_api` and `lllm.logging.backends`).

Names load on first use, so that `lllm.logging.sinks` (which every tactic call session consults) stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from lllm._lazy import lazy_getattr

if TYPE_CHECKING:
    from lllm.logging._core_api import SessionSummary
    from lllm.logging.backends import LocalFileBackend, LogBackend, NoOpBackend, SQLiteBackend
    from lllm.logging.models import CostRow, DialogRow, SessionDetail, SessionRecord, SessionRow
    from lllm.logging.store import KIND_TABLES, LogStore
    from lllm.logging.terminal import ColoredFormatter, setup_logging

__all__ = ["KIND_TABLES", "ColoredFormatter", "CostRow", "DialogRow", "LocalFileBackend", "LogBackend", "LogStore",
           "NoOpBackend", "SQLiteBackend", "SessionDetail", "SessionRecord", "SessionRow", "SessionSummary",
           "local_store", "noop_store", "setup_logging", "sqlite_store"]

__getattr__ = lazy_getattr(__name__, {
    "KIND_TABLES": "lllm.logging.store", "LogStore": "lllm.logging.store", "CostRow": "lllm.logging.models",
    "DialogRow": "lllm.logging.models", "SessionDetail": "lllm.logging.models", "SessionRow": "lllm.logging.models",
    "SessionRecord": "lllm.logging.models", "SessionSummary": "lllm.logging._core_api",
    "LogBackend": "lllm.logging.backends", "SQLiteBackend": "lllm.logging.backends",
    "LocalFileBackend": "lllm.logging.backends", "NoOpBackend": "lllm.logging.backends",
    "ColoredFormatter": "lllm.logging.terminal", "setup_logging": "lllm.logging.terminal",
}, globals())


def sqlite_store(path: str | os.PathLike[str] = ":memory:", partition: str = "default", runtime: Any = None, *,
                 busy_timeout: float = 30.0, readonly: bool = False,
                 writer: Literal["auto", "thread", "process"] = "auto") -> LogStore:
    """Open (or create) a SQLite log store.

    Args:
        path: the database file (its folder is created; `~` is expanded); `":memory:"` for a throwaway store.
        partition: which sessions this store writes and sees: two stores on one file with different partitions
            do not see each other's sessions. The default partition holds the sessions written without one.
        runtime: the `Runtime` that resolves `list_sessions(tactic_path=...)` ("pkg::name", "pkg:name", ...).
        busy_timeout: seconds a write waits while another process holds the database.
        readonly: open an existing log read-only (for readers; nothing can be written, nothing is migrated).
        writer: who commits: "auto" (the threads that write, and a writer process while a batch runs, so
            that committing does not take the GIL from its tasks), "thread" (always this process) or
            "process" (always a writer process).

    Returns:
        The `LogStore`; pass it to a tactic: `MyTactic(config, log_store=store)`.
    """
    from lllm.logging.store import LogStore

    return LogStore(_expand(path), partition, runtime, busy_timeout=busy_timeout, readonly=readonly, writer=writer)


def local_store(path: str | os.PathLike[str], partition: str = "default", runtime: Any = None) -> LogStore:
    """A log store in the folder `path`: the SQLite log `<path>/lllm.db` (created with the folder).

    lllm-core writes one JSON file per session in that folder; ours keeps the same sessions in one SQLite file
    there, so they can be queried (`lllm logs ls --db <path>/lllm.db`, `lllm logs serve`).

    Args:
        path: the folder (`~` is expanded).
        partition, runtime: as for `sqlite_store`.
    """
    from lllm.logging.backends import LocalFileBackend
    from lllm.logging.store import LogStore

    return LogStore(LocalFileBackend(_expand(path)), partition, runtime)


def noop_store(partition: str = "default", runtime: Any = None) -> LogStore:
    """A log store that keeps nothing: tactics run as with a store, nothing is written, every query is empty.

    For dry runs and tests that need a `log_store` but no log.
    """
    from lllm.logging.backends import NoOpBackend
    from lllm.logging.store import LogStore

    return LogStore(NoOpBackend(), partition, runtime)


def _expand(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return text if text == ":memory:" else os.path.expanduser(text)
