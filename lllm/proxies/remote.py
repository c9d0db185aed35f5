"""Proxies that run where the keys are: a `ProxyHost` holds sessions' ProxyManagers, and a `RemoteProxyManager`
elsewhere stands in for one of them, sending every call to it.

The CALL_API gateway and the run_python tools only talk to "the session's manager" (`call`, `resolve`,
`directory`, `api_doc`, `available`, `close`). On a machine that must not hold API keys (a Ray worker,
`lllm.executors`), `build_manager` gives them a `RemoteProxyManager`: the proxies, their keys and the session's
budgets live in the `ProxyHost` (a Ray actor on the driver's node), while the sandbox, the gateway and the
records of its calls stay where the agent runs.

```python
host = ProxyHost()                                          # where the keys are
def transport(method, *args):                               # how a worker reaches it (a Ray actor call there)
    return getattr(host, method)(*args)

with use_proxy_host(transport, prefix="batch-1/task-3/"):
    manager = build_manager(["fmp"], source="live")         # a RemoteProxyManager (outside: a ProxyManager)
    manager.call("fmp/price", {"symbol": "AAPL"})           # runs in `host`
    manager.close()                                         # the host forgets the session
```

A transport is `transport(method, *args) -> value`: it runs the `ProxyHost` method of that name where the host
is and returns its value, or raises the error it raised (the lllm error itself, not a wrapper).
"""

from __future__ import annotations

import contextvars
import secrets
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from lllm.errors import ProxyError, UsageError
from lllm.proxies.manager import ProxyManager, split_path

__all__ = ["ProxyHost", "RemoteProxyManager", "Transport", "build_manager", "current_proxy_host",
           "use_proxy_host"]

Transport = Callable[..., Any]
"""`transport(method, *args) -> value`: a `ProxyHost` method run where the host is."""


class ProxyHost:
    """The sessions' ProxyManagers of one place that holds the keys, by session key; thread-safe.

    Args:
        runtime: where proxies declared by packages (`proxies/` of an lllm.toml) are looked up.
    """

    def __init__(self, *, runtime: Any = None) -> None:
        self.runtime = runtime
        self._managers: dict[str, ProxyManager] = {}
        self._lock = threading.Lock()

    def open(self, key: str, activate_proxies: list[str] | None, options: dict[str, Any]) -> dict[str, Any]:
        """Start a session: build its ProxyManager (`ProxyManager(activate_proxies, **options)`); returns what
        the stand-in answers without asking again: `{"available": [...], "directory": str}`.

        Raises:
            ConfigError: an unknown proxy or a bad budget (as `ProxyManager` raises them).
            UsageError: the key is already open.
        """
        manager = ProxyManager(activate_proxies, runtime=self.runtime, **options)
        with self._lock:
            if key in self._managers:
                manager.close()
                raise UsageError(f"proxy session {key!r} is already open on this host", key=key)
            self._managers[key] = manager
        return {"available": manager.available(), "directory": manager.directory()}

    def _get(self, key: str) -> ProxyManager:
        manager = self._managers.get(key)
        if manager is None:
            raise ProxyError(f"proxy session {key!r} is not open on the proxy host (it was closed, or its batch "
                             "ended); this is a fault of lllm's machinery, not of the code that called it.", key=key)
        return manager

    def call(self, key: str, path: str, params: dict[str, Any] | None) -> Any:
        """`CALL_API(path, params)` for the session `key` (its allowlist and budgets apply)."""
        return self._get(key).call(path, params)

    def api_doc(self, key: str, name: str) -> str:
        return self._get(key).api_doc(name)

    def spent(self, key: str) -> dict[str, dict[str, float]]:
        """What the session spent per proxy (`SessionBudgets.spent()`)."""
        return self._get(key).budgets.spent()

    def close(self, key: str) -> None:
        """End a session (closing its proxies); an unknown key is ignored."""
        with self._lock:
            manager = self._managers.pop(key, None)
        if manager is not None:
            manager.close()

    def close_prefix(self, prefix: str) -> int:
        """End every session whose key starts with `prefix` (a batch that ended, a worker that died); returns
        how many were open."""
        with self._lock:
            keys = [k for k in self._managers if k.startswith(prefix)]
            managers = [self._managers.pop(k) for k in keys]
        for manager in managers:
            manager.close()
        return len(managers)

    def sessions(self) -> list[str]:
        """The keys of the open sessions."""
        with self._lock:
            return sorted(self._managers)


class _RemoteBudgets:
    """`manager.budgets` of a RemoteProxyManager: what the session spent, as the host counts it."""

    def __init__(self, manager: RemoteProxyManager) -> None:
        self._manager = manager

    def spent(self) -> dict[str, dict[str, float]]:
        return self._manager._ask("spent")


class RemoteProxyManager:
    """A session's ProxyManager whose proxies run in a `ProxyHost` elsewhere (see the module docstring).

    The session opens on the host when this is made, so an unknown proxy is a ConfigError at once, as with a
    ProxyManager; `resolve`, `available` and `directory` are answered here, everything else goes to the host.

    Args:
        transport: how to reach the host (`transport(method, *args)`).
        key: the session's key on the host (unique).
        activate_proxies, **options: as for `ProxyManager` (`source`, `cutoff_date`, `budgets`, ...).
    """

    def __init__(self, transport: Transport, key: str, activate_proxies: Iterable[str] | None = None,
                 **options: Any) -> None:
        if isinstance(activate_proxies, str):
            activate_proxies = [activate_proxies]
        self._transport = transport
        self.key = key
        self.source = options.get("source", "live")
        self.proxies: dict[str, Any] = {}
        """Empty: the proxy instances live on the host."""
        self.budgets = _RemoteBudgets(self)
        opened = transport("open", key, None if activate_proxies is None else list(activate_proxies), options)
        self.activate_proxies: list[str] = list(opened["available"])
        self._directory: str = opened["directory"]
        self._by_length = sorted(self.activate_proxies, key=len, reverse=True)
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteProxyManager({self.key!r}, {self.activate_proxies!r})"

    def _ask(self, method: str, *args: Any) -> Any:
        return self._transport(method, self.key, *args)

    def available(self) -> list[str]:
        """The activated proxy paths, sorted."""
        return sorted(self.activate_proxies)

    def resolve(self, path: str) -> tuple[None, str, str]:
        """(None, proxy path, endpoint) for `"<proxy>/<endpoint>"` (the proxy instance is on the host).

        Raises:
            ProxyError, ProxyNotActivated: as `ProxyManager.resolve`.
        """
        name, endpoint = split_path(path, self._by_length)
        return None, name, endpoint

    def call(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """Dispatch `CALL_API(path, params)` to the host (its allowlist and budgets apply there)."""
        split_path(path, self._by_length)  # refuse what the host would refuse without the round trip
        return self._ask("call", path, params)

    __call__ = call

    def directory(self) -> str:
        """The compact directory for a system prompt (computed on the host when the session opened)."""
        return self._directory

    def api_doc(self, name: str) -> str:
        """The full docs of one activated proxy."""
        return self._ask("api_doc", name)

    retrieve_api_docs = api_doc

    def close(self) -> None:
        """End the session on the host (its proxies are closed there); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._ask("close")


_HOST: contextvars.ContextVar[tuple[Transport, str] | None] = contextvars.ContextVar("lllm_proxy_host",
                                                                                     default=None)


@contextmanager
def use_proxy_host(transport: Transport, *, prefix: str = "") -> Iterator[None]:
    """Within this block (and threads that copy its context), `build_manager` makes RemoteProxyManagers whose
    session keys start with `prefix`."""
    token = _HOST.set((transport, prefix))
    try:
        yield
    finally:
        _HOST.reset(token)


def current_proxy_host() -> tuple[Transport, str] | None:
    """The (transport, key prefix) `use_proxy_host` set here, or None."""
    return _HOST.get()


def build_manager(activate_proxies: Iterable[str] | None = None, **options: Any) -> Any:
    """The manager of a new session: a `ProxyManager` in this process, or, inside `use_proxy_host(...)`, a
    `RemoteProxyManager` of that host. Options are `ProxyManager`'s; `runtime` is the host's own there."""
    host = _HOST.get()
    if host is None:
        return ProxyManager(activate_proxies, **options)
    transport, prefix = host
    options.pop("runtime", None)  # a runtime does not travel: the host looks proxies up in its own
    return RemoteProxyManager(transport, prefix + secrets.token_hex(8), activate_proxies, **options)
