"""The log store: a SQLite record of tactic call sessions, their traces, dialogs and costs; trace sinks.

>>> from lllm.logging import sqlite_store
>>> store = sqlite_store(":memory:")
>>> store.cost_summary(group_by="tactic")
[]

Names load on first use, so that `lllm.logging.sinks` (which every tactic call session consults) stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lllm._lazy import lazy_getattr

if TYPE_CHECKING:
    from lllm.logging.models import CostRow, DialogRow, SessionDetail, SessionRow
    from lllm.logging.store import KIND_TABLES, LogStore

__all__ = ["KIND_TABLES", "CostRow", "DialogRow", "LogStore", "SessionDetail", "SessionRow", "sqlite_store"]

__getattr__ = lazy_getattr(__name__, {
    "KIND_TABLES": "lllm.logging.store", "LogStore": "lllm.logging.store", "CostRow": "lllm.logging.models",
    "DialogRow": "lllm.logging.models", "SessionDetail": "lllm.logging.models", "SessionRow": "lllm.logging.models",
}, globals())


def sqlite_store(path: str | os.PathLike[str] = ":memory:", *, busy_timeout: float = 30.0,
                 readonly: bool = False) -> LogStore:
    """Open (or create) a SQLite log store.

    Args:
        path: the database file (its folder is created); `":memory:"` for a throwaway in-memory store.
        busy_timeout: seconds a write waits while another process holds the database.
        readonly: open an existing log read-only (for readers; nothing can be written, nothing is migrated).

    Returns:
        The `LogStore`; pass it to a tactic: `MyTactic(config, log_store=store)`.
    """
    from lllm.logging.store import LogStore

    return LogStore(path, busy_timeout=busy_timeout, readonly=readonly)
