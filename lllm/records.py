"""Shared records, at the bottom of lllm beside `errors.py`: trace records, `InvokeCost`, task fingerprints.

Every room may import this module and it imports no other room, so whoever reports (an agent, a sandbox, the
gateway, a browser session) and whoever keeps (the LogStore) share these shapes without depending on each other.

Trace records: what agents, sandboxes, the gateway and the browser report, and the LogStore keeps.
Every room reports through one callable, a `Tracer` (`Callable[[TraceRecord], None]`), in the style of
sqlite-utils' `tracer=`: an agent, a run_python tool, the gateway or a browser session is given one and calls
it once per event. The tactic call session passes a tracer that fills in `session_id` and writes to the
LogStore; a test passes `list.append`. Records are pydantic models with a literal `kind`, read and written
through the single adapter `TraceRecordAdapter`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any, Callable, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "IMAGE_BYTES",
    "MAX_IMAGES",
    "PAYLOAD_CHARS",
    "RECORD_TYPES",
    "REPORT_CHARS",
    "AgentCallRecord",
    "ApiCallRecord",
    "BrowserActionRecord",
    "CellRecord",
    "InvokeCost",
    "ModelCallRecord",
    "PackageRecord",
    "TestRunRecord",
    "ToolCallRecord",
    "TraceRecord",
    "TraceRecordAdapter",
    "Tracer",
    "cap",
    "null_tracer",
    "task_fingerprint",
    "task_text",
]


PAYLOAD_CHARS = 20_000
"""The most characters of one payload (tool arguments and results, cell output, CALL_API params and answers)
a record keeps; `cap()` cuts longer ones and says how much was left out."""
IMAGE_BYTES = 2_000_000
"""The most base64 bytes of one image (a cell's display, a browser screenshot) a record keeps."""
MAX_IMAGES = 8
"""The most images one cell record keeps."""


def _now() -> float:
    return time.time()


def cap(text: str | None, limit: int = PAYLOAD_CHARS) -> str | None:
    """`text` cut to `limit` characters, with a note of how many were left out (None stays None)."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n... [{len(text) - limit} more characters not kept in the log]"


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


class ToolCallRecord(_Record):
    """One tool call an agent ran for the model (run_python, query_api_doc, a browser action, any function)."""

    kind: Literal["tool_call"] = "tool_call"
    agent: str
    dialog: str | None = None
    call_id: str | None = None
    """The model's id for the call (the tool message's `tool_call_id`)."""
    name: str
    """The tool's name."""
    arguments: str | None = None
    """The arguments as the model wrote them (JSON text, possibly malformed), capped at `PAYLOAD_CHARS`."""
    result: str | None = None
    """The text the model got back (capped at `PAYLOAD_CHARS`)."""
    images: int = 0
    """How many images the tool returned to the model."""
    status: Literal["ok", "error"] = "ok"
    duration_s: float = 0.0
    error: str | None = None
    """Why the call failed (unknown tool, bad arguments, the tool raised), as the model read it."""


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
    output: str | None = None
    """The cell's output as the model read it (stdout, stderr, result, error; capped at `PAYLOAD_CHARS`)."""
    images: list[dict[str, str]] = Field(default_factory=list)
    """Images the cell displayed: `{"mime": "image/png", "data": <base64>}`, at most `MAX_IMAGES`, each at
    most `IMAGE_BYTES` bytes of base64 (larger ones are left out and said so in `notices`)."""
    notices: list[str] = Field(default_factory=list)
    """What the sandbox said about the cell (output cut, kernel restarted, timeout action, ...)."""


class ApiCallRecord(_Record):
    """One CALL_API request that reached the gateway."""

    kind: Literal["api_call"] = "api_call"
    proxy: str | None = None
    endpoint: str | None = None
    status: Literal["ok", "error", "denied", "rate_limited", "timeout", "too_large", "not_found", "bad_request",
                    "over_budget", "dropped"]
    request_bytes: int = 0
    response_bytes: int = 0
    latency_s: float = 0.0
    error: str | None = None
    agent: str | None = None
    params: str | None = None
    """The request's parameters as JSON text, secrets scrubbed, capped at `PAYLOAD_CHARS`."""
    answer: str | None = None
    """The proxy's answer as JSON text, secrets scrubbed, capped at `PAYLOAD_CHARS`."""
    count: int = 1
    """Requests this record stands for: refusals are tallied per session and reason, one record per interval."""


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
    url: str | None = None
    """The page the action ended on."""
    screenshot: str | None = None
    """A screenshot after the action, base64 (at most `IMAGE_BYTES`), when one was taken."""
    screenshot_mime: str | None = None
    """`image/png` or `image/jpeg`."""


class PackageRecord(_Record):
    """A package file a sandbox's pip fetched through the host's package relay (`DockerSandbox(packages=
    "index")`, `lllm.sandbox.package_relay`), or a request of it the relay refused or could not serve."""

    kind: Literal["package"] = "package"
    agent: str | None = None
    sandbox_id: str = ""
    package: str | None = None
    """The project, normalised (`scikit-learn`); from the file name, or the page pip asked for."""
    version: str | None = None
    filename: str | None = None
    """The wheel or sdist fetched."""
    index_url: str = ""
    """The package index, without credentials."""
    url: str | None = None
    """Where the file came from (without credentials)."""
    status: Literal["ok", "not_found", "error", "refused"]
    """`ok` (the whole file went to pip), `not_found` (the index has no such project), `error` (the index or its
    file host failed, or the download was cut), `refused` (not something the relay forwards)."""
    bytes: int = 0
    duration_s: float = 0.0
    error: str | None = None
    count: int = 1
    """Requests this record stands for (refusals past the first 50 of a sandbox are summed into one)."""


class TestRunRecord(_Record):
    """One run of a project's tests (the `run_tests` tool, `lllm.ci`)."""

    __test__ = False  # a record, not a test class

    kind: Literal["test_run"] = "test_run"
    agent: str | None = None
    path: str
    """The project's folder (in the sandbox's workspace)."""
    selection: str | None = None
    """The node-id filter the run was given, if any."""
    exit_code: int
    passed: int = 0
    failed: int = 0
    errors: int = 0
    total: int = 0
    duration_s: float = 0.0
    summary: str | None = None
    """What the agent read (capped at `PAYLOAD_CHARS`)."""
    report: str | None = None
    """The whole report (`lllm.ci.TestReport` as JSON, capped at `REPORT_CHARS`)."""


REPORT_CHARS = 1_000_000
"""The most characters of a test report a `TestRunRecord` keeps."""


RECORD_TYPES: tuple[type[BaseModel], ...] = (ModelCallRecord, AgentCallRecord, ToolCallRecord, CellRecord,
                                             ApiCallRecord, BrowserActionRecord, PackageRecord, TestRunRecord)
"""Every record class, in the order the LogStore creates their tables."""
TraceRecord = Annotated[
    Union[ModelCallRecord, AgentCallRecord, ToolCallRecord, CellRecord, ApiCallRecord, BrowserActionRecord,
          PackageRecord, TestRunRecord],
    Field(discriminator="kind"),
]
TraceRecordAdapter: TypeAdapter[Any] = TypeAdapter(TraceRecord)
Tracer = Callable[[Any], None]
"""A callable that receives each `TraceRecord` as it happens."""


def null_tracer(record: Any) -> None:
    """A tracer that drops everything (the default when nobody listens)."""


# -- usage and cost ---------------------------------------------------------------------------------------


class InvokeCost(BaseModel):
    """Token usage and USD cost of one model call, or of several added together with `+`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    prompt_tokens: int = 0
    """Tokens sent to the model (the prompt, including the dialog so far)."""
    completion_tokens: int = 0
    """Tokens the model produced."""
    total_tokens: int = 0
    """prompt_tokens + completion_tokens (as the provider reports it)."""
    cost: float = 0.0
    """USD, as litellm prices it (0.0 when the price is unknown or the model is scripted)."""

    def __add__(self, other: Any) -> InvokeCost:
        if other == 0:  # lets sum() start from 0
            return self
        if not isinstance(other, InvokeCost):
            return NotImplemented
        return InvokeCost.model_construct(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost=self.cost + other.cost,
        )

    __radd__ = __add__

    @classmethod
    def total(cls, costs: Iterable[InvokeCost]) -> InvokeCost:
        """Add up an iterable of `InvokeCost` (an empty one gives zeros)."""
        out = cls.model_construct(prompt_tokens=0, completion_tokens=0, total_tokens=0, cost=0.0)
        for c in costs:
            out = out + c
        return out


# -- tasks ---------------------------------------------------------------------------------------------------

_TASK_TEXT_LIMIT = 10_000


def _render_task(task: Any) -> str:
    if isinstance(task, str):
        return task
    if isinstance(task, BaseModel):
        return task.model_dump_json()
    try:
        return json.dumps(task, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(task)


def task_text(task: Any) -> str:
    """A text rendering of a task (what the log's `sessions.task` column shows), at most 10,000 characters."""
    return _render_task(task)[:_TASK_TEXT_LIMIT]


def task_fingerprint(task: Any) -> str:
    """A stable fingerprint of a task (sha256 of its type and full text rendering): how a resumed batch knows
    that task `i` is the one it ran before."""
    text = _render_task(task)
    return hashlib.sha256(f"{type(task).__name__}\0{text}".encode()).hexdigest()[:32]
