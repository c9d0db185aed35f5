"""The hub of a Ray batch: one actor on the driver's node, where the keys are.

It answers the batch's workers: model requests go to the tactic's own invokers (`InvokerHost`), CALL_APIs to
the proxies (`ProxyHost`), both with the keys of this node (handed over by the driver through a private file,
`_keys.py`, never through Ray). And it keeps the records workers stream as they make them (`Inbox`), until the
driver takes them into its log store, so that what a worker did before it died is not lost with it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lllm.errors import ExecutorError, UsageError

__all__ = ["Hub", "Inbox"]

PROXY_METHODS = frozenset({"open", "call", "api_doc", "spent", "close"})
"""The ProxyHost methods workers may call."""


class Inbox:
    """What workers streamed, per attempt: messages numbered from 0 by their sender (a threaded actor may run two
    messages of one caller out of order), handed out in that order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, dict[int, list[Any]]] = {}
        self._next: dict[str, int] = {}
        self._closed: set[str] = set()

    def put(self, attempt: str, seq: int, ops: list[Any]) -> None:
        with self._lock:
            if attempt in self._closed:
                return  # the driver is done with this attempt
            self._messages.setdefault(attempt, {})[seq] = ops

    def take_ready(self) -> dict[str, list[tuple[int, list[Any]]]]:
        """Every attempt's messages that arrived in order since the last take: `{attempt: [(seq, ops), ...]}`."""
        with self._lock:
            out: dict[str, list[tuple[int, list[Any]]]] = {}
            for attempt, messages in self._messages.items():
                n = self._next.get(attempt, 0)
                while n in messages:
                    out.setdefault(attempt, []).append((n, messages.pop(n)))
                    n += 1
                self._next[attempt] = n
            return out

    def close(self, attempt: str) -> list[tuple[int, list[Any]]]:
        """Forget an attempt (ended, or its worker lost); returns the messages still here, in order, gaps and
        all (a lost worker's last messages may never come)."""
        with self._lock:
            self._closed.add(attempt)
            self._next.pop(attempt, None)
            messages = self._messages.pop(attempt, {})
            return [(seq, messages[seq]) for seq in sorted(messages)]


class Hub:
    """The batch's actor on the driver's node (made by `RayExecutor`, one per batch, killed at its end).

    Args:
        handoff: the private file with the driver's environment, its invokers and its model-request guard.
        manifest: the shipped packages to load first (their classes may be in the hand-over), or None.
        driver_node: the Ray node id of the driver: the hub refuses to run anywhere else.
    """

    def __init__(self, handoff: str, manifest: dict[str, Any] | None, driver_node: str) -> None:
        import ray

        from lllm.executors._keys import remove_handoff

        self.inbox = Inbox()
        self.node = ray.get_runtime_context().get_node_id()
        self._error: BaseException | None = None
        try:
            self._setup(handoff, manifest, driver_node)
        except BaseException as exc:  # reported by ready(): an actor that fails to start says little
            self._error = exc
        finally:
            remove_handoff(handoff)

    def _setup(self, handoff: str, manifest: dict[str, Any] | None, driver_node: str) -> None:
        from ray import cloudpickle

        import lllm.invokers.base as invokers_base
        from lllm.core.runtime import get_runtime
        from lllm.executors._keys import read_handoff
        from lllm.executors._shipping import load_shipment
        from lllm.invokers.remote import InvokerHost
        from lllm.proxies.remote import ProxyHost

        if self.node != driver_node:
            raise ExecutorError(f"the batch's hub started on node {self.node[:12]!r}, not on the driver's node "
                                f"{driver_node[:12]!r}: the keys must not leave the driver's node", node=self.node)
        load_shipment(manifest)
        data = cloudpickle.loads(read_handoff(handoff))
        for name, value in data["env"].items():  # the driver's keys, on the driver's node only
            os.environ.setdefault(name, value)
        invokers_base.ALLOW_MODEL_REQUESTS = data["allow_model_requests"]
        self.invokers = InvokerHost(data["invokers"])
        self.proxies = ProxyHost(runtime=get_runtime(manifest["runtime"]) if manifest else None)

    def ready(self, spec: bytes) -> dict[str, Any]:
        """Where the hub runs (`pid`, `node`), once set up; raises what went wrong otherwise. It also rebuilds
        the tactic from `spec` as workers will, so that a tactic that cannot be rebuilt fails before any task."""
        if self._error is not None:
            raise self._error
        from ray import cloudpickle

        from lllm.executors._worker import rebuild_tactic

        rebuild_tactic(cloudpickle.loads(spec))
        return {"pid": os.getpid(), "node": self.node}

    def invoke(self, key: str, request: dict[str, Any]) -> Any:
        """A model request of a worker's agent (`InvokerHost.invoke`)."""
        return self.invokers.invoke(key, request)

    def proxy(self, method: str, *args: Any) -> Any:
        """A worker's call to the proxy host (`open`, `call`, `api_doc`, `spent`, `close`)."""
        if method not in PROXY_METHODS:
            raise UsageError(f"no proxy host method {method!r}; known: {sorted(PROXY_METHODS)!r}")
        return getattr(self.proxies, method)(*args)

    def put(self, attempt: str, seq: int, ops: list[Any]) -> None:
        self.inbox.put(attempt, seq, ops)

    def take_ready(self) -> dict[str, list[tuple[int, list[Any]]]]:
        return self.inbox.take_ready()

    def close_attempt(self, attempt: str) -> list[tuple[int, list[Any]]]:
        """Forget an attempt: end its proxy sessions (a lost worker's) and return its messages still here."""
        self.proxies.close_prefix(attempt + "/")
        return self.inbox.close(attempt)
