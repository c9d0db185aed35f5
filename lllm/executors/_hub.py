"""The hub of a Ray batch: one actor on the driver's node, where the keys are.

It answers the batch's workers: model requests go to the tactic's own invokers (`InvokerHost`), CALL_APIs to
the proxies (`ProxyHost`), both with the keys of this node (handed over by the driver through a private file,
`_keys.py`, never through Ray). And it keeps the records workers stream as they make them (`Inbox`), until the
driver takes them into its log store, so that what a worker did before it died is not lost with it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from lllm.errors import ExecutorError, UsageError

__all__ = ["Hub", "Inbox"]

PROXY_METHODS = frozenset({"open", "call", "api_doc", "spent", "close"})
"""The ProxyHost methods workers may call."""


class Inbox:
    """What workers streamed, per attempt, in the order they sent it: each message has a sequence number per
    attempt (a threaded actor may run two messages of one caller out of order)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._messages: dict[str, dict[int, list[Any]]] = {}
        self._next: dict[str, int] = {}
        self._closed: set[str] = set()

    def put(self, attempt: str, seq: int, ops: list[Any]) -> None:
        with self._cond:
            if attempt in self._closed:
                return  # the driver already wrote this attempt off (its worker was lost)
            self._messages.setdefault(attempt, {})[seq] = ops
            self._cond.notify_all()

    def _pop_ready(self, attempt: str) -> list[Any]:
        messages = self._messages.get(attempt, {})
        n = self._next.get(attempt, 0)
        out: list[Any] = []
        while n in messages:
            out.extend(messages.pop(n))
            n += 1
        self._next[attempt] = n
        return out

    def take_ready(self) -> dict[str, list[Any]]:
        """Every attempt's ops that arrived in order since the last take."""
        with self._cond:
            out = {}
            for attempt in list(self._messages):
                ops = self._pop_ready(attempt)
                if ops:
                    out[attempt] = ops
            return out

    def take(self, attempt: str, upto: int | None, timeout: float = 30.0) -> tuple[list[Any], bool]:
        """The rest of an attempt's ops, and whether none is missing; then the attempt is forgotten.

        Args:
            upto: how many messages the worker sent (the attempt ended): wait until all of them arrived (at most
                `timeout` s). None: the worker was lost; take what arrived, gaps and all.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            complete = True
            if upto is not None:
                while True:
                    have = self._next.get(attempt, 0) + len(self._messages.get(attempt, {}))
                    left = deadline - time.monotonic()
                    if have >= upto or left <= 0:
                        complete = have >= upto
                        break
                    self._cond.wait(left)
            ops = self._pop_ready(attempt)
            rest = self._messages.pop(attempt, {})
            if rest:  # a gap: a message that never arrived
                complete = False
                for seq in sorted(rest):
                    ops.extend(rest[seq])
            self._next.pop(attempt, None)
            self._closed.add(attempt)
            return ops, complete


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

    def close_proxies(self, prefix: str) -> int:
        """End the proxy sessions of an attempt whose worker was lost."""
        return self.proxies.close_prefix(prefix)

    def put(self, attempt: str, seq: int, ops: list[Any]) -> None:
        self.inbox.put(attempt, seq, ops)

    def take_ready(self) -> dict[str, list[Any]]:
        return self.inbox.take_ready()

    def take(self, attempt: str, upto: int | None, timeout: float = 30.0) -> tuple[list[Any], bool]:
        return self.inbox.take(attempt, upto, timeout)
