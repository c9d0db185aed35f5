"""Trace records: what agents, sandboxes, the gateway and the browser report, and the LogStore keeps.

Every room reports through one callable, a `Tracer` (`Callable[[TraceRecord], None]`), in the style of
sqlite-utils' `tracer=`: an agent, a run_python tool, the gateway or a browser session is given one and calls
it once per event. The tactic call session passes a tracer that fills in `session_id` and writes to the
LogStore; a test passes `list.append`. Records are pydantic models with a literal `kind`, read and written
through the single adapter `TraceRecordAdapter`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def _now() -> float:
    return time.time()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str | None = None
    """The tactic call session this happened in (filled in by the session's tracer)."""
    started_at: float = Field(default_factory=_now)
    """Unix time when it started."""


class ModelCallRecord(_Record):
    """One request to a model (one attempt; a retried rate limit is two records)."""

    kind: Literal["model_call"] = "model_call"
    agent: str
    dialog: str | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """USD."""
    cost_note: str | None = None
    """Why `cost` may not be what a provider billed (no price known for the model; a simulated price), else None."""
    latency_s: float = 0.0
    attempt: int = 1
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    stream: bool = False


class AgentCallRecord(_Record):
    """One `Agent.respond()`: every model call, retry and tool step it took."""

    kind: Literal["agent_call"] = "agent_call"
    agent: str
    dialog: str | None = None
    status: Literal["ok", "error"] = "ok"
    model_calls: int = 0
    exception_retries: int = 0
    interrupts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    duration_s: float = 0.0
    error: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    """The retries with their errors, tool calls and results, for the log."""


class CellRecord(_Record):
    """One cell executed in a sandbox."""

    kind: Literal["cell"] = "cell"
    agent: str | None = None
    sandbox_id: str
    code: str
    status: Literal["ok", "error", "timeout", "oom", "died"]
    duration_s: float
    output_chars: int = 0
    truncated: bool = False
    error: str | None = None


class ApiCallRecord(_Record):
    """One CALL_API request that reached the gateway."""

    kind: Literal["api_call"] = "api_call"
    proxy: str | None = None
    endpoint: str | None = None
    status: Literal["ok", "error", "denied", "rate_limited", "timeout", "too_large", "not_found", "bad_request"]
    request_bytes: int = 0
    response_bytes: int = 0
    latency_s: float = 0.0
    error: str | None = None


class BrowserActionRecord(_Record):
    """One computer-use browser action."""

    kind: Literal["browser_action"] = "browser_action"
    agent: str | None = None
    action: str
    target: str | None = None
    status: Literal["ok", "error", "blocked", "timeout"] = "ok"
    duration_s: float = 0.0
    code: str | None = None
    """The Playwright code the action ran (for the replay script)."""
    result: str | None = None
    """What the action reported (the one-line outcome the model read, secrets redacted)."""
    error: str | None = None


TraceRecord = Annotated[
    Union[ModelCallRecord, AgentCallRecord, CellRecord, ApiCallRecord, BrowserActionRecord],
    Field(discriminator="kind"),
]
TraceRecordAdapter: TypeAdapter[Any] = TypeAdapter(TraceRecord)
Tracer = Callable[[Any], None]
"""A callable that receives each `TraceRecord` as it happens."""


def null_tracer(record: Any) -> None:
    """A tracer that drops everything (the default when nobody listens)."""
