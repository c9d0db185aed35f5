"""The OpenTelemetry trace sink (extra `[otel]`): every tactic call as a trace, in the tools people already use.

Spans: `tactic <name>` → `invoke_agent <agent>` (one `respond()`) → `chat <model>` (each model call) and
`execute_tool <tool>` (each tool call) → `sandbox.cell`, `CALL_API <proxy>/<endpoint>` and `browser <action>`
under the tool call they happened in (by time, same agent); whatever ran outside an agent call hangs from the
tactic span, and a sub-tactic's span from its parent's. Model calls carry the GenAI semantic-convention
attributes (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`; the cost, which the conventions do not name, as
`lllm.cost_usd`). Payloads (tool arguments and results, cell code and output, CALL_API params and answers) are
what the log keeps, with secrets already scrubbed by the producers, and cut at `ATTRIBUTE_CHARS` characters;
screenshots and images are not exported.

Records arrive when things end (a model call's record after the call, an agent call's after its respond()),
so the sink keeps an agent call's records until its own record comes, then emits the subtree with the real
start and end times. Configuration is OpenTelemetry's own: the OTLP/HTTP exporter reads
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, ...; the
resource reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service defaults to `lllm`).
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field
from typing import Any

from lllm.logging.sinks import SessionInfo

__all__ = ["ATTRIBUTE_CHARS", "OtelSink"]

ATTRIBUTE_CHARS = 4096
"""The most characters of one payload attribute (OpenTelemetry backends reject or cut larger ones anyway)."""

_LEAF_KINDS = ("cell", "api_call", "browser_action")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _cut(text: Any, limit: int = ATTRIBUTE_CHARS) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[:limit] + f"... [{len(s) - limit} more characters]"


def _end_of(record: Any) -> float:
    took = getattr(record, "duration_s", None)
    if took is None:
        took = getattr(record, "latency_s", None)
    return record.started_at + max(float(took or 0.0), 0.0)


@dataclass
class _Session:
    span: Any
    context: Any
    pending: list[Any] = field(default_factory=list)
    """Records of agent calls not finished yet (model calls, tool calls, and what ran inside them)."""
    tools: list[tuple[float, float, str | None, Any]] = field(default_factory=list)
    """Emitted tool spans: (start, end, agent, context), for records that arrive after their agent call."""


class OtelSink:
    """A trace sink (`lllm.logging.sinks`) that turns sessions and records into OpenTelemetry spans.

    Args:
        tracer_provider: where spans go; None builds one for the process: an SDK `TracerProvider` with a
            batch processor and the OTLP/HTTP exporter, configured by the standard `OTEL_*` variables and
            flushed at exit. Tests pass a provider with an in-memory exporter.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace as otel_trace
        except ImportError as exc:  # pragma: no cover - the message is the point
            raise ImportError('the OpenTelemetry sink needs the [otel] extra: pip install "lllm[otel]"') from exc
        self._api = otel_trace
        self._provider = tracer_provider if tracer_provider is not None else _default_provider()
        self._tracer = self._provider.get_tracer("lllm")
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # -- the sink interface ----------------------------------------------------------------------------------

    def session_started(self, info: SessionInfo) -> None:
        with self._lock:
            parent = self._sessions.get(info.parent_id) if info.parent_id else None
            context = self._api.set_span_in_context(parent.span) if parent else None
            span = self._tracer.start_span(f"tactic {info.tactic}", context=context, start_time=_ns(info.started_at),
                                           kind=self._api.SpanKind.INTERNAL, attributes=_session_attributes(info))
            self._sessions[info.session_id] = _Session(span, self._api.set_span_in_context(span))

    def record(self, record: Any) -> None:
        sid = getattr(record, "session_id", None)
        kind = getattr(record, "kind", None)
        with self._lock:
            session = self._sessions.get(sid) if sid else None
            if session is None:
                return
            if kind == "agent_call":
                self._emit_agent_call(session, record)
            elif kind in ("model_call", "tool_call") or kind in _LEAF_KINDS:
                if kind in _LEAF_KINDS and self._late_leaf(session, record):
                    return
                session.pending.append(record)

    def session_ended(self, info: SessionInfo) -> None:
        with self._lock:
            session = self._sessions.pop(info.session_id, None)
            if session is None:
                return
            self._emit_tree(session, session.context, session.pending, None)  # what ran outside agent calls
            span = session.span
            span.set_attributes(_session_attributes(info))
            if info.state == "error":
                span.set_status(self._api.Status(self._api.StatusCode.ERROR, _cut(info.error, 1000)))
            span.end(end_time=_ns(info.ended_at or info.started_at))

    # -- building the tree -----------------------------------------------------------------------------------

    def _emit_agent_call(self, session: _Session, record: Any) -> None:
        start, end = record.started_at, record.started_at + max(record.duration_s, 0.0)
        mine = [r for r in session.pending if getattr(r, "agent", None) in (record.agent, None)
                and start - 1e-3 <= r.started_at <= end + 1e-3]
        mine_ids = {id(r) for r in mine}
        session.pending = [r for r in session.pending if id(r) not in mine_ids]
        span = self._tracer.start_span(f"invoke_agent {record.agent}", context=session.context,
                                       start_time=_ns(start), attributes={
                                           "gen_ai.operation.name": "invoke_agent",
                                           "gen_ai.agent.name": record.agent,
                                           "lllm.dialog": record.dialog or "",
                                           "gen_ai.usage.input_tokens": record.prompt_tokens,
                                           "gen_ai.usage.output_tokens": record.completion_tokens,
                                           "lllm.cost_usd": record.cost,
                                           "lllm.model_calls": record.model_calls,
                                           "lllm.tool_rounds": record.interrupts,
                                           "lllm.exception_retries": record.exception_retries})
        self._error(span, record)
        self._emit_tree(session, self._api.set_span_in_context(span), mine, record.agent)
        span.end(end_time=_ns(end))

    def _emit_tree(self, session: _Session, parent: Any, records: list[Any], agent: str | None) -> None:
        tools = [r for r in records if r.kind == "tool_call"]
        leaves = [r for r in records if r.kind in _LEAF_KINDS]
        placed: dict[int, list[Any]] = {id(t): [] for t in tools}
        loose: list[Any] = []
        for leaf in leaves:
            home = next((t for t in tools if t.started_at - 1e-3 <= leaf.started_at <= _end_of(t) + 1e-3
                         and getattr(leaf, "agent", None) in (t.agent, None)), None)
            (placed[id(home)] if home is not None else loose).append(leaf)
        for r in records:
            if r.kind == "model_call":
                self._span(parent, r)
            elif r.kind == "tool_call":
                span = self._span(parent, r, end=False)
                context = self._api.set_span_in_context(span)
                for leaf in placed[id(r)]:
                    self._span(context, leaf)
                span.end(end_time=_ns(_end_of(r)))
                session.tools.append((r.started_at, _end_of(r), r.agent, context))
        for leaf in loose:
            self._span(parent, leaf)

    def _late_leaf(self, session: _Session, record: Any) -> bool:
        """A cell/CALL_API/browser record whose tool span was already emitted (the gateway reports late)."""
        agent = getattr(record, "agent", None)
        for start, end, tool_agent, context in reversed(session.tools):
            if start - 1e-3 <= record.started_at <= end + 1e-3 and agent in (tool_agent, None):
                self._span(context, record)
                return True
        return False

    def _span(self, parent: Any, record: Any, *, end: bool = True) -> Any:
        name, attributes = _describe(record)
        span = self._tracer.start_span(name, context=parent, start_time=_ns(record.started_at),
                                       attributes=attributes)
        self._error(span, record)
        if end:
            span.end(end_time=_ns(_end_of(record)))
        return span

    def _error(self, span: Any, record: Any) -> None:
        status = getattr(record, "status", "ok")
        if status not in ("ok", None):
            span.set_status(self._api.Status(self._api.StatusCode.ERROR, _cut(record.error or status, 1000)))
            span.set_attribute("error.type", str(status))


def _session_attributes(info: SessionInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {"lllm.session_id": info.session_id, "lllm.tactic": info.tactic,
                             "lllm.state": info.state, "lllm.cost_usd": info.cost,
                             "gen_ai.usage.input_tokens": info.prompt_tokens,
                             "gen_ai.usage.output_tokens": info.completion_tokens}
    if info.batch_id:
        attrs["lllm.batch_id"] = info.batch_id
    if info.task_index is not None:
        attrs["lllm.task_index"] = info.task_index
    for key, value in (info.tags or {}).items():
        attrs[f"lllm.tag.{key}"] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return attrs


def _describe(r: Any) -> tuple[str, dict[str, Any]]:
    if r.kind == "model_call":
        return f"chat {r.model}", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": r.model, "gen_ai.response.model": r.model,
            "gen_ai.usage.input_tokens": r.prompt_tokens, "gen_ai.usage.output_tokens": r.completion_tokens,
            "lllm.cost_usd": r.cost, "gen_ai.agent.name": r.agent, "lllm.dialog": r.dialog or "",
            "lllm.attempt": r.attempt, "lllm.stream": r.stream}
    if r.kind == "tool_call":
        return f"execute_tool {r.name}", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": r.name,
            "gen_ai.tool.call.id": r.call_id or "", "gen_ai.agent.name": r.agent,
            "lllm.tool.arguments": _cut(r.arguments), "lllm.tool.result": _cut(r.result), "lllm.tool.images": r.images}
    if r.kind == "cell":
        return "sandbox.cell", {
            "lllm.sandbox_id": r.sandbox_id, "lllm.cell.status": r.status, "lllm.cell.code": _cut(r.code),
            "lllm.cell.output": _cut(r.output), "lllm.cell.images": len(r.images), "lllm.cell.truncated": r.truncated}
    if r.kind == "api_call":
        return f"CALL_API {r.proxy}/{r.endpoint}", {
            "lllm.proxy": r.proxy or "", "lllm.endpoint": r.endpoint or "", "lllm.api.status": r.status,
            "lllm.api.params": _cut(r.params), "lllm.api.answer": _cut(r.answer),
            "lllm.api.request_bytes": r.request_bytes, "lllm.api.response_bytes": r.response_bytes}
    return f"browser {r.action}", {
        "lllm.browser.action": r.action, "lllm.browser.target": _cut(r.target, 500), "lllm.browser.url": r.url or "",
        "lllm.browser.status": r.status, "lllm.browser.code": _cut(r.code)}


_provider: Any = None
_provider_lock = threading.Lock()


def _default_provider() -> Any:
    """The process's provider: SDK, batch processor, OTLP/HTTP exporter, all configured by OTEL_* variables."""
    global _provider
    with _provider_lock:
        if _provider is None:
            import os

            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "lllm"})
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            atexit.register(provider.shutdown)
            _provider = provider
        return _provider
