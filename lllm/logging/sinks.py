"""Trace sinks: where a tactic call's session and trace records go besides the LogStore (OpenTelemetry, ...).

A sink receives every session's start, each of its trace records as it happens, and its end. Sinks are
registered by name (`register_trace_sink(name, factory_or_dotted_path)`, or an entry point in the group
`lllm.trace_sinks`) and turned on by `$LLLM_TRACE_SINKS` (names, comma separated; read on first use) or
`enable_trace_sink`.
The built-in `otel` sink (`lllm.logging.otel`, extra `[otel]`) is also on by itself when a standard
OpenTelemetry endpoint variable is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
and `OTEL_SDK_DISABLED` is not true. With no sink on, a session pays one tuple check.

```python
class PrintSink:
    def session_started(self, info): print("start", info.tactic)
    def record(self, record): print(record.kind)
    def session_ended(self, info): print("end", info.state, info.cost)

register_trace_sink("print", PrintSink)      # then LLLM_TRACE_SINKS=print, or enable_trace_sink("print")
```
A sink is called from the threads that run the calls (many at once in a batch) and must not raise: what it
raises is logged once and otherwise ignored, so tracing never breaks a run.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from lllm.errors import ConfigError

__all__ = ["SessionInfo", "TraceSink", "active_trace_sinks", "disable_trace_sinks", "enable_trace_sink",
           "register_trace_sink"]

_log = logging.getLogger("lllm.trace_sinks")


@dataclass
class SessionInfo:
    """One tactic call session, as sinks see it at its start and end."""

    session_id: str
    tactic: str
    started_at: float
    parent_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    batch_id: str | None = None
    task_index: int | None = None
    ended_at: float | None = None
    state: str = "running"
    """`running`, then `ok` or `error`."""
    error: str | None = None
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TraceSink(Protocol):
    """What a sink implements."""

    def session_started(self, info: SessionInfo) -> None: ...

    def record(self, record: Any) -> None: ...

    def session_ended(self, info: SessionInfo) -> None: ...


_REGISTRY: dict[str, Any] = {"otel": "lllm.logging.otel:OtelSink"}
_ENABLED: list[Any] = []
_lock = threading.Lock()
_cache: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
_failed: set[int] = set()


def register_trace_sink(name: str, factory: Callable[[], Any] | str) -> None:
    """Register a sink factory (a class or callable with no arguments, or its `module:attr` path) by name."""
    global _cache
    with _lock:
        _REGISTRY[name] = factory
        _cache = None


def enable_trace_sink(sink: Any) -> Any:
    """Turn a sink on for every session from now on: a registered name or a sink object; returns the sink."""
    global _cache
    obj = _build(sink) if isinstance(sink, str) else sink
    with _lock:
        _ENABLED.append(obj)
        _cache = None
    return obj


def disable_trace_sinks() -> None:
    """Turn off the sinks turned on with `enable_trace_sink` (those named by environment variables stay)."""
    global _cache
    with _lock:
        _ENABLED.clear()
        _cache = None


def _env_key() -> tuple[Any, ...]:
    env = os.environ
    otlp = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return env.get("LLLM_TRACE_SINKS", ""), otlp and not disabled


def active_trace_sinks(*, reload: bool = False) -> tuple[Any, ...]:
    """The sinks that are on. The environment is read on first use (every session asks, so it stays cheap);
    `reload=True` reads it again. Built sinks are kept (an OTLP exporter is one per process)."""
    global _cache
    cached = _cache
    if cached is not None and not reload:
        return cached[1]
    key = _env_key()
    with _lock:
        names = [n.strip() for n in key[0].split(",") if n.strip()]
        if key[1] and "otel" not in names:
            names.append("otel")
        sinks = [_built(name) for name in names]
        _cache = (key, tuple([*sinks, *_ENABLED]))
        return _cache[1]


_BUILT: dict[str, Any] = {}


def _built(name: str) -> Any:
    if name not in _BUILT:
        _BUILT[name] = _build(name)
    return _BUILT[name]


def _build(name: str) -> Any:
    factory = _REGISTRY.get(name)
    if factory is None:
        factory = _entry_point(name)
    if factory is None:
        raise ConfigError(f"no trace sink named {name!r} (from $LLLM_TRACE_SINKS or enable_trace_sink); the known "
                          f"ones are {sorted(_REGISTRY)!r}. Register one with register_trace_sink(name, factory).",
                          key="LLLM_TRACE_SINKS")
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            hint = ' (pip install "lllm[otel]")' if name == "otel" else ""
            raise ConfigError(f"trace sink {name!r} cannot be loaded: {exc}{hint}", key="LLLM_TRACE_SINKS") from None
    return factory()


def _entry_point(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group="lllm.trace_sinks"):
        if ep.name == name:
            return ep.load()
    return None


def notify(sinks: tuple[Any, ...], method: str, arg: Any) -> None:
    """Call `method(arg)` on each sink; a sink that raises is logged (once per sink) and skipped."""
    for sink in sinks:
        try:
            getattr(sink, method)(arg)
        except Exception as exc:  # noqa: BLE001 - tracing must never break a run
            if id(sink) not in _failed:
                _failed.add(id(sink))
                _log.warning("trace sink %r failed in %s: %s: %s (further failures of it are not logged)", sink,
                             method, type(exc).__name__, exc)
