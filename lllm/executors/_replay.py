"""The driver's side of a Ray task's records: write what a worker recorded into the driver's log store, once and
in order, and keep a `TacticCallSession` that stands for the attempt here.

A worker's `Recorder` turns what a `TacticCallSession` asks of its log store into ops: `("start", id, fields)`,
`("record", record)`, `("meta", id, values)` (`LogStore.note_metadata`), `("end", id, fields)`. `Attempt.replay`
applies them to the store (and to the driver's trace sinks), adjusted for where the batch runs here: a batch made
inside a tactic call has that call as the parent of its tasks. An attempt whose worker was lost is closed by
`Attempt.lose`: its sessions end as errors that say so, keeping every record that reached the driver (the records of a failed attempt are marked as that attempt's: the
session's `metadata["ray"]["attempt"]`, never discarded).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lllm.core.tactic import TacticCallSession
from lllm.logging.sinks import SessionInfo, notify

__all__ = ["Attempt"]


class Attempt:
    """One attempt of one task: the sessions its ops opened, and the mirror of its top session.

    Args:
        store: the driver's log store (None: the tactic records nothing).
        parent: the driver's tactic call session the batch runs in, or None.
        sinks: the driver's active trace sinks.
        task, fields: what the driver knows of the task (`tactic`, `tags`, `metadata`, `task_hash`, `batch_id`,
            `task_index`), for a stand-in session when the worker died before it recorded anything.
    """

    def __init__(self, key: str, *, store: Any, parent: TacticCallSession | None, sinks: tuple[Any, ...],
                 task: Any, number: int, fields: dict[str, Any]) -> None:
        self.key = key
        self.number = number
        self.store = store
        self.parent = parent
        self.sinks = sinks
        self.task = task
        self.fields = fields
        self.top: TacticCallSession | None = None
        """The session that stands for this attempt on the driver (made at its start)."""
        self.replayed = 0
        """Streamed messages replayed so far (messages are numbered from 0; each is replayed once, in order)."""
        self.closed = False
        """The attempt ended (or was written off): messages that come later are ignored."""
        self.open: dict[str, SessionInfo] = {}
        """Sessions started and not ended yet, by id (in start order)."""

    # -- applying ops ------------------------------------------------------------------------------------

    def replay_messages(self, messages: list[tuple[int, list[tuple[Any, ...]]]], *, gaps: bool = False) -> None:
        """Replay streamed messages `(seq, ops)`: the next ones in order, each once (others are skipped). With
        `gaps` (a lost worker's last messages) a missing message does not hold back the ones after it."""
        for seq, ops in messages:
            if self.closed or seq < self.replayed or (seq > self.replayed and not gaps):
                continue
            self.replay(ops)
            self.replayed = seq + 1

    def replay(self, ops: list[tuple[Any, ...]]) -> None:
        for op in ops:
            kind = op[0]
            if kind == "start":
                self._start(op[1], dict(op[2]))
            elif kind == "record":
                self._record(op[1])
            elif kind == "end":
                self._end(op[1], dict(op[2]))
            elif kind == "meta" and self.store is not None:
                self.store.note_metadata(op[1], dict(op[2]))

    def _start(self, session_id: str, fields: dict[str, Any]) -> None:
        fields.pop("wait", None)
        is_top = fields.get("parent_id") is None
        if is_top and self.parent is not None:
            fields["parent_id"] = self.parent.session_id  # the batch runs inside this call here, as with threads
        if self.store is not None:
            self.store.start_session(session_id, wait=False, **fields)
        info = SessionInfo(session_id=session_id, tactic=fields["tactic"], started_at=fields.get("started_at") or
                           time.time(), parent_id=fields.get("parent_id"), tags=dict(fields.get("tags") or {}),
                           batch_id=fields.get("batch_id"), task_index=fields.get("task_index"))
        self.open[session_id] = info
        if is_top:
            top = TacticCallSession(fields["tactic"], parent=self.parent, tags=fields.get("tags"),
                                    metadata=fields.get("metadata"), batch_id=fields.get("batch_id"),
                                    task_index=fields.get("task_index"), task_hash=fields.get("task_hash"))
            top.session_id = session_id
            top.state = "running"
            top.started_at = info.started_at
            top._sinks = ()  # the driver's sinks are told here, once
            if self.parent is not None:
                self.parent.record_sub_tactic_call(top.tactic_name, top)
            self.top = top
        if self.sinks:
            notify(self.sinks, "session_started", info)

    def _record(self, record: Any) -> None:
        if self.store is not None:
            self.store.record(record)
        top = self.top
        if top is not None and record.session_id == top.session_id:
            top.tracer(record)  # keeps the records, model-call totals and agent calls of the mirror
        info = self.open.get(record.session_id)
        if info is not None and record.kind == "model_call":
            info.cost += record.cost
            info.prompt_tokens += record.prompt_tokens
            info.completion_tokens += record.completion_tokens
        if self.sinks:
            notify(self.sinks, "record", record)

    def _end(self, session_id: str, fields: dict[str, Any]) -> None:
        fields.pop("wait", None)
        top = self.top
        is_top = top is not None and session_id == top.session_id
        if is_top and self.parent is not None:
            fields["store_result"] = False  # a child session's result is its parent's business, as with threads
        if self.store is not None:
            self.store.end_session(session_id, wait=False, **fields)
        info = self.open.pop(session_id, None)
        if is_top and top is not None:
            top.state = fields["state"]
            top.ended_at = fields.get("ended_at")
            top.delivery = fields.get("result")
            top.error = fields.get("error")
            top.traceback = fields.get("traceback")
            if fields.get("metadata") is not None:
                top.metadata = dict(fields["metadata"])
            if fields.get("cost") is not None:  # the worker's totals, sub-tactic calls included
                top._own = [fields.get("prompt_tokens") or 0, fields.get("completion_tokens") or 0, fields["cost"]]
        if info is not None and self.sinks:
            info.state, info.ended_at, info.error = fields["state"], fields.get("ended_at"), fields.get("error")
            if fields.get("cost") is not None:
                info.cost = fields["cost"]
                info.prompt_tokens = fields.get("prompt_tokens") or 0
                info.completion_tokens = fields.get("completion_tokens") or 0
            notify(self.sinks, "session_ended", info)

    # -- a lost worker -------------------------------------------------------------------------------------

    def lose(self, reason: str) -> TacticCallSession:
        """The worker running this attempt was lost: end its open sessions (innermost first) as errors saying
        so; when it recorded nothing, write one session for it. Returns the attempt's session here."""
        now = time.time()
        error = f"WorkerLost: {reason}"
        if self.top is None:
            ray_info = {"attempt": self.number, "lost": True}
            metadata = {**(self.fields.get("metadata") or {}), "ray": ray_info}
            self._start(uuid.uuid4().hex, {
                "tactic": self.fields["tactic"], "tags": self.fields.get("tags"), "metadata": metadata,
                "task": self.task, "task_hash": self.fields.get("task_hash"),
                "batch_id": self.fields.get("batch_id"), "task_index": self.fields.get("task_index"),
                "parent_id": None, "started_at": now})
        assert self.top is not None
        lost_top = self.top.session_id
        metadata = dict(self.top.metadata)
        metadata["ray"] = {**(metadata.get("ray") or {}), "lost": True}
        for session_id in reversed(list(self.open)):
            fields: dict[str, Any] = {"state": "error", "ended_at": now, "error": error}
            if session_id == lost_top:
                fields["metadata"] = metadata
            self._end(session_id, fields)
        return self.top
