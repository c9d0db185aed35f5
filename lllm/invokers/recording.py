"""`RecordingInvoker`: an invoker around another one that sends every request through a tape.

The tape decides, per request, whether the exchange is *recorded* (the inner invoker answers, live, and the tape
keeps a copy of the request and the answer) or *replayed* (the tape gives back the answer it kept; the inner
invoker is never called, so no provider is reached and the guard `LLLM_ALLOW_MODEL_REQUESTS` never trips).
A cassette (`lllm.testing.cassette`) is such a tape; this module knows only the `ModelTape` protocol, so the
invoker room imports nothing above it. The cassette puts the wrapper around invokers through
`lllm.invokers.wrap_invokers` or the `INVOKER_WRAPPERS` registry (its entry point `cassette`).

What a tape sees is plain JSON: the request as `request_doc(request)` writes it (model, messages, tools, model
arguments, the structured-output schema, `api_type`, whether it streams) and the answer as `result_doc` writes
it (content, tool calls, model, finish reason, usage and cost, retried failures, and the streamed text pieces in
order). A replayed answer is rebuilt into an `InvokeResult` (structured output validated again), its text pieces
go to the caller's stream handler one by one before `on_done()`, and a recorded provider failure is raised
again as the same lllm error. Failures that are not the provider's answer (`ModelRequestsDisabled`, a scripted
model out of steps) are never recorded: they reach the caller as they are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import lllm.errors as lllm_errors
from lllm.errors import InvokerError, ModelAPIError, ModelRequestsDisabled, ScriptError, UsageError
from lllm.invokers.base import (
    API_TYPES,
    BaseInvoker,
    BaseStreamHandler,
    InvokeContext,
    InvokeRequest,
    InvokeResult,
    ToolCallRequest,
    _validate_structured,
    check_api_type,
    current_call_scope,
)
from lllm.records import InvokeCost

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["ExchangeSite", "ModelTape", "RecordingInvoker", "TapeAnswer", "error_from_doc", "request_doc",
           "result_doc", "result_from_doc"]

# Facts of a provider error that are worth keeping (JSON values only).
_ERROR_FACTS = ("status_code", "model", "retry_after", "malformed", "retryable", "attempts", "errors")


@dataclass(frozen=True, slots=True)
class ExchangeSite:
    """Where a request was made: the agent and dialog (from `InvokeContext`) and the tactic call (from
    `lllm.invokers.base.call_scope`). A tape orders a run's requests by it."""

    agent: str | None = None
    dialog: str | None = None
    call_id: str | None = None
    """The tactic call's id (unique per call, different in every run), or None outside a tactic call."""
    task: str | None = None
    """The tactic call's task as text, or None outside a tactic call."""


@dataclass(frozen=True, slots=True)
class TapeAnswer:
    """What a tape gives back for one request."""

    response: dict[str, Any]
    """The answer as `result_doc` wrote it (or `{"error": {...}}`)."""
    replayed: bool
    """True when the answer came from the tape; False when the live call just made it."""


class ModelTape(Protocol):
    """What `RecordingInvoker` needs of a tape (a cassette)."""

    def model_exchange(self, request: dict[str, Any], site: ExchangeSite,
                       live: Callable[[], dict[str, Any]]) -> TapeAnswer:
        """Answer one request: call `live()` and keep its answer (recording), or give back a kept one (replay).
        `request` is plain JSON (`request_doc`) and `live()` returns plain JSON (`result_doc`).

        Raises:
            CassetteMismatch: Replaying, and the request is not the one recorded at this place.
        """
        ...


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON data; objects that are not JSON are named by their type (an address would make two
    runs differ)."""
    def default(obj: Any) -> Any:
        dump = getattr(obj, "model_dump", None)
        if callable(dump):
            return dump(mode="json")
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        return f"<{type(obj).__qualname__}>"

    return json.loads(json.dumps(value, default=default, ensure_ascii=False))


def request_doc(request: InvokeRequest) -> dict[str, Any]:
    """One request as plain JSON: what a tape keeps and compares."""
    doc: dict[str, Any] = {"model": request.model, "messages": _jsonable(request.messages)}
    if request.tools:
        doc["tools"] = _jsonable(request.tools)
    if request.model_args:
        doc["model_args"] = _jsonable(request.model_args)
    if request.response_format is not None:
        fmt: type[BaseModel] = request.response_format
        doc["response_format"] = {"name": fmt.__name__, "schema": _jsonable(fmt.model_json_schema())}
    if request.api_type is not None:
        doc["api_type"] = request.api_type
    doc["stream"] = request.stream_handler is not None
    return doc


def result_doc(result: InvokeResult, stream: list[str] | None = None) -> dict[str, Any]:
    """One answer as plain JSON (defaults left out); `stream`: the text pieces the stream handler got."""
    doc: dict[str, Any] = {"content": result.content}
    if result.tool_calls:
        doc["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    doc["model"] = result.model
    if result.finish_reason is not None:
        doc["finish_reason"] = result.finish_reason
    usage = result.usage
    doc["usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                    "cost": usage.cost}
    if result.cost_note:
        doc["cost_note"] = result.cost_note
    if result.attempts != 1:
        doc["attempts"] = result.attempts
    if result.errors:
        doc["errors"] = list(result.errors)
    if stream is not None:
        doc["stream"] = list(stream)
    return doc


def result_from_doc(doc: dict[str, Any]) -> InvokeResult:
    """The `InvokeResult` a recorded answer stands for (`raw` is the recorded answer itself)."""
    usage = doc.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return InvokeResult(
        content=doc.get("content"),
        tool_calls=[ToolCallRequest(id=str(c.get("id") or f"call_{i}"), name=str(c.get("name") or ""),
                                    arguments=str(c.get("arguments") or ""))
                    for i, c in enumerate(doc.get("tool_calls") or ())],
        model=str(doc.get("model") or ""),
        usage=InvokeCost.model_construct(prompt_tokens=prompt, completion_tokens=completion,
                                         total_tokens=prompt + completion, cost=float(usage.get("cost") or 0.0)),
        attempts=int(doc.get("attempts") or 1),
        errors=[str(e) for e in doc.get("errors") or ()],
        raw=doc,
        cost_note=doc.get("cost_note"),
        finish_reason=doc.get("finish_reason"),
    )


def _error_doc(exc: InvokerError) -> dict[str, Any]:
    facts = {k: exc.facts[k] for k in _ERROR_FACTS if k in exc.facts}
    return {"error": {"type": type(exc).__name__, "message": exc.message, "facts": _jsonable(facts)}}


def error_from_doc(doc: dict[str, Any]) -> InvokerError:
    """The lllm error a recorded provider failure stands for (`ModelAPIError` when the class is not known)."""
    cls = getattr(lllm_errors, str(doc.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, InvokerError)):
        cls = ModelAPIError
    facts: dict[str, Any] = doc["facts"] if isinstance(doc.get("facts"), dict) else {}
    return cls(str(doc.get("message") or "recorded provider error"), **facts)


class _Tee(BaseStreamHandler):
    """Passes a live stream on to the caller's handler and keeps each text piece for the tape."""

    def __init__(self, target: BaseStreamHandler) -> None:
        self.target = target
        self.pieces: list[str] = []

    def on_token(self, token: str) -> None:
        self.pieces.append(token)
        self.target.on_token(token)

    def on_done(self) -> None:
        self.target.on_done()


class RecordingInvoker(BaseInvoker):
    """Sends each request through `tape` (see the module docstring); the inner invoker answers what is recorded.

    Args:
        inner: The invoker that answers live (litellm, the scripted model, ...); its retries stay its own.
        tape: A `ModelTape` (a cassette).

    Attributes the inner invoker has (a scripted model's `calls`, `assert_complete`) are reachable through the
    wrapper.
    """

    name = "recording"

    def __init__(self, inner: BaseInvoker, tape: ModelTape) -> None:
        super().__init__()
        if not isinstance(inner, BaseInvoker):
            raise UsageError(f"RecordingInvoker wraps an invoker (a BaseInvoker), got {inner!r}")
        self.inner = inner
        self.tape = tape

    def __repr__(self) -> str:
        return f"RecordingInvoker({self.inner!r}, tape={self.tape!r})"

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "tape") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def call(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        tools: list[dict[str, Any]] | None = None,
        response_format: type[BaseModel] | None = None,
        stream_handler: BaseStreamHandler | None = None,
        model_args: dict[str, Any] | None = None,
        context: InvokeContext | None = None,
        api_type: str | None = None,
    ) -> InvokeResult:
        """Answer from the tape, or from the inner invoker while the tape records (same arguments as
        `BaseInvoker.call`).

        Raises:
            CassetteMismatch: Replaying, and this request is not the recorded one (the message has a diff).
            RateLimitError, ModelTimeoutError, ModelAPIError: The provider failed (live, or as recorded).
        """
        if api_type is not None and api_type not in API_TYPES:
            check_api_type(api_type, agent=context.agent if context else None)  # raises, naming the choices
        request = InvokeRequest(messages, model, tools, response_format, stream_handler, model_args, context, api_type)
        scope = current_call_scope()
        site = ExchangeSite(agent=context.agent if context else None, dialog=context.dialog if context else None,
                            call_id=scope.call_id if scope else None, task=scope.task if scope else None)
        start = time.perf_counter()
        outcome: list[InvokeResult | InvokerError] = []
        tee = _Tee(stream_handler) if stream_handler is not None else None

        def live() -> dict[str, Any]:
            extra = {"api_type": api_type} if api_type is not None else {}  # a plain `call` need not take it
            try:
                result = self.inner.call(messages, model=model, tools=tools, response_format=response_format,
                                         stream_handler=tee, model_args=model_args, context=context, **extra)
            except (ModelRequestsDisabled, ScriptError):
                raise  # not the provider's answer: nothing to record
            except InvokerError as exc:
                outcome.append(exc)
                return _error_doc(exc)
            outcome.append(result)
            return result_doc(result, tee.pieces if tee is not None else None)

        answer = self.tape.model_exchange(request_doc(request), site, live)
        if not answer.replayed:
            got = outcome[-1]
            if isinstance(got, InvokerError):
                raise got
            return got
        doc = answer.response
        if "error" in doc:
            raise error_from_doc(doc["error"])
        result = result_from_doc(doc)
        if stream_handler is not None:
            for piece in doc.get("stream") or ():
                stream_handler.on_token(piece)
        if response_format is not None and result.content:
            result.parsed = _validate_structured(response_format, result.content)
        result.latency_s = time.perf_counter() - start
        if stream_handler is not None:
            stream_handler.on_done()
        return result

    def _call_once(self, request: InvokeRequest) -> InvokeResult:  # pragma: no cover - `call` is overridden
        raise UsageError("RecordingInvoker answers in call(); it has no attempts of its own")
