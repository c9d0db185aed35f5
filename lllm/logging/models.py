"""The rows the LogStore gives back: sessions, the full trace of one session, its dialogs, cost summaries.

These are pydantic models so that whatever reads the log (the `lllm logs` CLI, a notebook, a dashboard)
gets validated, typed objects; the SQLite tables themselves stay plain enough to query by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from lllm.records import InvokeCost
from lllm.registry import Registry

SessionState = Literal["running", "ok", "error"]

DIALOG_LOADERS: Registry[Callable[[dict[str, Any]], Any]] = Registry("dialog loader", group="lllm.dialog_loaders")
"""How `DialogRow.to_dialog()` rebuilds a stored dialog: `"dialog"` -> a function of `Dialog.to_dict()` data.
The core declares `lllm.core.dialog:Dialog.from_dict` there (an entry point); the log store does not import it."""


class SessionRow(BaseModel):
    """One tactic call session, as the `sessions` table holds it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    """The session id (also the `session_id` of every trace record of this call)."""
    tactic: str
    """The tactic's registered name."""
    state: SessionState
    """`running` while the call runs (or forever, if the process died), then `ok` or `error`."""
    started_at: float
    """Unix time the call started."""
    updated_at: float | None = None
    """Unix time of the last event written for this session."""
    ended_at: float | None = None
    """Unix time the call ended (None while running or after a crash)."""
    duration_s: float | None = None
    cost: float = 0.0
    """USD spent by every model call of this session, sub-tactic calls included."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    agent_calls: int = 0
    tags: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    task: str | None = None
    """A text rendering of the task (cut at 10,000 characters)."""
    task_hash: str | None = None
    """A fingerprint of the task, used by `bcall(resume=...)` to check it resumes the same tasks."""
    result: Any = None
    """The result, stored as JSON where it can be (`{"type": ..., "value": ...}`)."""
    error: str | None = None
    """`ExceptionType: message` when the call failed."""
    traceback: str | None = None
    last_event: str | None = None
    """What the session did last: where a crashed call stopped."""
    batch_id: str | None = None
    task_index: int | None = None
    parent_id: str | None = None
    """The session of the tactic call this one ran inside (sub-tactic calls)."""
    pid: int | None = None
    """The process that ran the call."""

    @property
    def started(self) -> datetime:
        """`started_at` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.started_at, tz=timezone.utc)

    # lllm-core 0.1 names this row `SessionSummary`; these are its fields.
    _tactic_path: str | None = PrivateAttr(default=None)

    @property
    def session_id(self) -> str:
        """`id` (lllm-core's name)."""
        return self.id

    @property
    def tactic_name(self) -> str:
        """`tactic` (lllm-core's name)."""
        return self.tactic

    @property
    def tactic_path(self) -> str:
        """`"package::tactic"` when the store's runtime knows the tactic's package, else the tactic's name."""
        return self._tactic_path or self.tactic

    def set_tactic_path(self, path: str) -> None:
        """Set `tactic_path` (the store does, from its runtime)."""
        self._tactic_path = path

    @property
    def total_cost(self) -> float:
        """`cost` (lllm-core's name): USD."""
        return self.cost

    @property
    def agent_call_count(self) -> int:
        """`agent_calls` (lllm-core's name)."""
        return self.agent_calls

    @property
    def timestamp(self) -> str:
        """When the call started, ISO 8601 in local time (lllm-core's form)."""
        return datetime.fromtimestamp(self.started_at).isoformat()


class DialogRow(BaseModel):
    """One dialog of one agent at the end of a session, as `Dialog.to_dict()` gave it."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    agent: str
    alias: str
    """The name the agent gave the dialog (`agent.open(alias)`)."""
    parent: str | None = None
    """The alias of the dialog it was forked from, when the dialog dict says so."""
    messages: int = 0
    """How many messages the dialog holds."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The full `Dialog.to_dict()`; `to_dialog()` rebuilds the Dialog."""

    def to_dialog(self) -> Any:
        """Rebuild the `lllm.core.dialog.Dialog` (with `Dialog.from_dict`, found in `DIALOG_LOADERS`)."""
        return DIALOG_LOADERS.lookup("dialog")(self.data)


class SessionDetail(BaseModel):
    """A session with its whole trace (every record, in order), its dialogs and its sub-tactic sessions."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: SessionRow
    records: list[Any] = Field(default_factory=list)
    """Every trace record (`lllm.records` models) of this session, in the order they happened."""
    dialogs: list[DialogRow] = Field(default_factory=list)
    children: list[SessionRow] = Field(default_factory=list)
    """Sessions of sub-tactic calls made inside this one."""

    def of_kind(self, kind: str) -> list[Any]:
        """The records of one kind: `"model_call"`, `"agent_call"`, `"cell"`, `"api_call"`, ..."""
        return [r for r in self.records if getattr(r, "kind", None) == kind]

    @property
    def model_calls(self) -> list[Any]:
        return self.of_kind("model_call")

    @property
    def agent_calls(self) -> list[Any]:
        return self.of_kind("agent_call")

    # The names of lllm-core 0.1's `TacticCallSession`, which its `load_session` returns.

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def tactic_name(self) -> str:
        return self.session.tactic

    @property
    def tactic_path(self) -> str:
        return self.session.tactic_path

    @property
    def state(self) -> str:
        """`running`, `ok` or `error` (lllm-core says `running`, `success`, `failure`)."""
        return self.session.state

    @property
    def total_cost(self) -> InvokeCost:
        """Tokens and USD of the call, sub-tactic calls included."""
        s = self.session
        return InvokeCost(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
                          total_tokens=s.prompt_tokens + s.completion_tokens, cost=s.cost)

    @property
    def agent_call_count(self) -> int:
        return self.session.agent_calls

    @property
    def agent_sessions(self) -> dict[str, list[Any]]:
        """Agent name -> its `AgentCallRecord`s (one per `respond()`), in order."""
        out: dict[str, list[Any]] = {}
        for record in self.agent_calls:
            out.setdefault(record.agent, []).append(record)
        return out

    @property
    def delivery(self) -> Any:
        """What the call returned (as the log could store it)."""
        return self.session.result

    @property
    def error(self) -> str | None:
        return self.session.error

    @property
    def error_traceback(self) -> str | None:
        return self.session.traceback

    @property
    def tags(self) -> dict[str, Any]:
        return self.session.tags

    @property
    def metadata(self) -> dict[str, Any]:
        return self.session.metadata

    def dialog_tree(self) -> dict[str, dict[str, DialogRow]]:
        """`{agent: {alias: DialogRow}}`."""
        tree: dict[str, dict[str, DialogRow]] = {}
        for row in self.dialogs:
            tree.setdefault(row.agent, {})[row.alias] = row
        return tree


class CostRow(BaseModel):
    """One line of `LogStore.cost_summary()`."""

    group: str | None
    """The value grouped on (a tag's value, a tactic name, a model); None where it is unset."""
    sessions: int = 0
    errors: int = 0
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    notes: list[str] = Field(default_factory=list)
    """Why some of the cost may be off: each distinct `cost_note` of the group's model calls, with their count
    and model ("2 call(s) of 'my-model': litellm has no price for model ...; cost reported as 0")."""


@dataclass
class SessionRecord:
    """A session with what was stored beside it, as `load_session_record(id)` returns it (lllm-core's shape)."""

    session_id: str
    session: SessionDetail
    """The whole session: trace records, dialogs, sub-sessions (and lllm-core's `TacticCallSession` names)."""
    tags: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: str = ""
    """When the call started, ISO 8601 in local time."""
    traceback: str | None = None
    """The full traceback of a failed call, else None."""
