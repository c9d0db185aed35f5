"""Model calls made where the keys are: an `InvokerHost` holds invokers by key, and a `RemoteInvoker` elsewhere
stands in for one of them, sending every request to it.

On a Ray worker (`lllm.executors`) the agents run, but the provider keys stay on the driver's node: each agent's
invoker there is a `RemoteInvoker`, and the real invoker (the tactic's own, with its retries, prices and keys;
a scripted model with its script) answers in the `InvokerHost` of an actor on that node. What a request carries
is plain data: the messages, tools, model arguments, the agent's `InvokeContext` and the tactic call's
`CallScope` (so a scripted model's per-task scripts work as in one process).

```python
host = InvokerHost({"main": build_invoker({"invoker": "litellm"})})
invoker = RemoteInvoker(lambda method, *args: getattr(host, method)(*args), "main")
invoker.call(messages, model="gpt-4o")          # litellm runs in `host`'s process
```

A stream handler gets the whole answer as one token, then `on_done()`: tokens do not travel as they come.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from pydantic import BaseModel

from lllm.errors import UsageError
from lllm.invokers.base import (
    BaseInvoker,
    BaseStreamHandler,
    InvokeContext,
    InvokeRequest,
    InvokeResult,
    call_scope,
    current_call_scope,
)

__all__ = ["InvokerHost", "RemoteInvoker"]

Transport = Callable[..., Any]
"""`transport(method, *args) -> value`: an `InvokerHost` method run where the host is."""


class InvokerHost:
    """The invokers of one place that holds the keys, by key; `invoke` is safe from many threads at once.

    Args:
        invokers: key -> invoker (its own retry policy and prices apply to every request it answers).
    """

    def __init__(self, invokers: dict[str, BaseInvoker] | None = None) -> None:
        self._invokers: dict[str, BaseInvoker] = dict(invokers or {})
        self._lock = threading.Lock()

    def add(self, key: str, invoker: BaseInvoker) -> None:
        with self._lock:
            self._invokers[key] = invoker

    def keys(self) -> list[str]:
        return sorted(self._invokers)

    def invoke(self, key: str, request: dict[str, Any]) -> InvokeResult:
        """Answer one request (the keyword arguments of `BaseInvoker.call`, plus `messages` and `scope`: the
        caller's `(call_id, task)` or None) with the invoker `key`; its errors are raised as they are."""
        invoker = self._invokers.get(key)
        if invoker is None:
            raise UsageError(f"no invoker {key!r} on this host (known: {self.keys()!r}); this is a fault of lllm's "
                             "machinery: the batch that registered it has ended", key=key)
        request = dict(request)
        scope = request.pop("scope", None)
        messages = request.pop("messages")
        if scope is None:
            result = invoker.call(messages, **request)
        else:
            with call_scope(*scope):
                result = invoker.call(messages, **request)
        # the provider's raw response stays here: it may not pickle, and nothing after the call reads it
        return dataclasses.replace(result, raw=None)


class RemoteInvoker(BaseInvoker):
    """An invoker whose requests are answered by the invoker `key` of an `InvokerHost` (module docstring).

    It does not retry: the host's invoker does, under its own policy.
    """

    name = "remote"

    def __init__(self, transport: Transport, key: str) -> None:
        super().__init__()
        self._transport = transport
        self.key = key

    def __repr__(self) -> str:
        return f"RemoteInvoker({self.key!r})"

    def call(self, messages: list[dict[str, Any]], *, model: str, tools: list[dict[str, Any]] | None = None,
             response_format: type[BaseModel] | None = None, stream_handler: BaseStreamHandler | None = None,
             model_args: dict[str, Any] | None = None, context: InvokeContext | None = None,
             api_type: str | None = None) -> InvokeResult:
        scope = current_call_scope()
        request = {"messages": messages, "model": model, "tools": tools, "response_format": response_format,
                   "model_args": model_args, "context": context, "api_type": api_type,
                   "scope": None if scope is None else (scope.call_id, scope.task)}
        start = time.perf_counter()
        result: InvokeResult = self._transport("invoke", self.key, request)
        result.latency_s = max(result.latency_s, time.perf_counter() - start)
        if stream_handler is not None:
            if result.content:
                stream_handler.on_token(result.content)
            stream_handler.on_done()
        return result

    def _call_once(self, request: InvokeRequest) -> InvokeResult:  # pragma: no cover - `call` is overridden
        raise NotImplementedError("RemoteInvoker answers in call()")
