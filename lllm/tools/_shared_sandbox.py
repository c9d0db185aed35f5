"""A sandbox that several agents use: every agent of one tactic call (`scope: tactic`), or every call that names
the same `sandbox_session` (`scope: session`). See `lllm/tools/code.py` for the `proxy:` block around it.

One `SharedSandbox` holds the sandbox and its CALL_API gateway session. Agents take turns on it (one cell at
a time: `lock`), each with its own notebook and its own per-use options (tracer, agent name, timeout, output
cap), so one agent's variables are the next one's. The gateway serves every proxy any of them activated; a
call goes to the manager of the (first) agent that activated its proxy, with that agent's budget
(`SharedManager`). Branch kernels forked from it (dialog forks, `fork_with_dialog`) get gateway sessions of
their own from the holder, on that same manager: a fork does not multiply the budgets.

`scope: tactic`: the tactic call keeps the holder (`TacticCallSession.shared`) and closes it when the call ends.
`scope: session`: the holder lives in this process under its name (`session_holder`); a call that ends only
lets go of it (its gateway session closes once no call uses it), and the sandbox stays, named, for later calls
of this process or `DockerSandbox.attach(name)` from another one, until its `idle_timeout`, its
`max_lifetime` or `lllm sandbox rm NAME`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from lllm.errors import GatewayStartError, InfrastructureError, SandboxError, SandboxStartError
from lllm.proxies.manager import ProxyManager


class SharedManager(ProxyManager):
    """The CALL_API allowlist of a shared sandbox: the union of its agents' managers (each keeps its budget)."""

    def __init__(self) -> None:
        super().__init__([], source="offline")
        self._owners: dict[str, ProxyManager] = {}

    def join(self, manager: ProxyManager) -> None:
        """Serve `manager`'s proxies too (a proxy already served keeps its first manager)."""
        for name, proxy in manager.proxies.items():
            if name not in self.proxies:
                self.proxies[name] = proxy
                self._owners[name] = manager
                self.activate_proxies.append(name)
        self._by_length = sorted(self.proxies, key=len, reverse=True)

    def call(self, path: str, params: dict[str, Any] | None = None) -> Any:
        _, name, _ = self.resolve(path)
        return self._owners[name].call(path, params)

    __call__ = call


class SharedSandbox:
    """One sandbox and its gateway session, for every agent that shares it (see the module docstring)."""

    def __init__(self, scope: str, *, name: str | None = None) -> None:
        self.scope = scope
        self.name = name
        self.lock = threading.RLock()
        self.sandbox: Any = None
        self.gateway_session: Any = None
        self.manager = SharedManager()
        self.replaced = ""
        """Why the sandbox was replaced by a new one (its time was up), until an agent reports it."""
        self._calls = 0
        self._hooked: Any = None

    def ensure(self, tools: Any, start: Callable[[], Any]) -> Any:
        """The running sandbox (started by `start()` when there is none, or when the last one ended), with a
        gateway session serving `tools.manager` too."""
        with self.lock:
            self.manager.join(tools.manager)
            sandbox = self.sandbox
            if sandbox is not None and getattr(getattr(sandbox, "state", None), "value", "running") == "closed":
                self.replaced = getattr(sandbox, "_closed_reason", "") or "it was closed"
                self._close_gateway()
                self.sandbox = sandbox = None
            if sandbox is None:
                sandbox = self._find_or_start(start, tools.config.sandbox)
                self.sandbox = sandbox
            if self.gateway_session is None:
                self.gateway_session = open_gateway(sandbox, self.manager, tools,
                                                    replace_stale=self.scope == "session")
            if self._hooked is not sandbox and callable(getattr(sandbox, "add_fork_hook", None)):
                # once per sandbox object, whichever agent forks: its branches call the APIs through the
                # gateway session the holder has when they are forked (the calls' one, on the same budgets)
                self._hooked = sandbox
                sandbox.add_fork_hook(self._open_branch_gateway)
            return sandbox

    def _open_branch_gateway(self, parent: Any, branch: Any) -> None:
        main = self.gateway_session
        if main is not None:
            open_branch_gateway(main, branch)

    def _find_or_start(self, start: Callable[[], Any], block: Any) -> Any:
        """Attach to the sandbox named `self.name` on the engine of `block` (the `proxy.sandbox` block: a kept
        sandbox on a remote engine is looked for there, not on the local one), else start one."""
        if self.name is None:
            return start()
        from lllm.sandbox.docker import DockerSandbox

        try:  # kept by an earlier process
            return DockerSandbox.attach(self.name, docker_host=block.docker_host, tls=block.tls)
        except SandboxError as exc:
            if getattr(exc, "reason", None) not in ("missing", "dead"):
                raise SandboxStartError(f"sandbox session {self.name!r}: {exc}", sandbox=self.name) from exc
        except InfrastructureError:
            raise
        return start()

    def enter_call(self) -> None:
        with self.lock:
            self._calls += 1

    def leave_call(self) -> None:
        """A tactic call that used the session sandbox ended: its gateway session closes once no call uses it
        (the next call opens one with its own tracer); the sandbox stays."""
        with self.lock:
            self._calls = max(0, self._calls - 1)
            if self._calls == 0:
                self._close_gateway()
                self.manager = SharedManager()

    def _close_gateway(self) -> None:
        if self.gateway_session is not None:
            try:
                self.gateway_session.close()
            finally:
                self.gateway_session = None

    def close(self) -> None:
        """Remove the gateway session and the sandbox (a `scope: tactic` sandbox, when its call ends)."""
        with self.lock:
            try:
                self._close_gateway()
            finally:
                sandbox, self.sandbox = self.sandbox, None
                if sandbox is not None:
                    sandbox.close()


_sessions: dict[tuple[str, str], SharedSandbox] = {}
_sessions_lock = threading.Lock()


def session_holder(backend: str, name: str) -> SharedSandbox:
    """This process's holder of the session sandbox `name` (made on first use)."""
    with _sessions_lock:
        holder = _sessions.get((backend, name))
        if holder is None:
            holder = _sessions[(backend, name)] = SharedSandbox("session", name=name if backend == "docker" else None)
        return holder


def close_session_sandboxes() -> None:
    """Remove every session sandbox this process holds (they are otherwise kept for later calls)."""
    with _sessions_lock:
        holders = list(_sessions.values())
        _sessions.clear()
    for holder in holders:
        holder.close()


def open_gateway(sandbox: Any, manager: ProxyManager, tools: Any, *, replace_stale: bool = False) -> Any:
    """Open the CALL_API gateway session of `sandbox` for `manager` (the `proxy:` block's settings of `tools`).

    Raises:
        ConfigError: `proxy.gateway` is invalid.
        GatewayStartError: the host could not open the session (infrastructure).
    """
    from pydantic import ValidationError

    from lllm.errors import ConfigError
    from lllm.proxies.gateway import GatewayLimits, get_gateway

    if replace_stale:
        _remove_stale_token(sandbox.session_dir)
    options = {"call_timeout": min(30.0, tools.config.timeout), **tools.config.gateway}
    try:
        limits = GatewayLimits(**options)
    except ValidationError as exc:
        raise ConfigError(f"agent {tools.agent_name!r}: proxy.gateway is invalid: {exc}", key="proxy.gateway") from None
    try:
        return get_gateway().open_session(sandbox.session_dir, manager, session_id=tools.session_id,
                                          tracer=tools.tracer, limits=limits, token_owner=sandbox.guest_uid,
                                          agent=tools.agent_name)
    except InfrastructureError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: the host could not serve CALL_API
        raise GatewayStartError(
            f"agent {tools.agent_name!r}: the CALL_API gateway could not open a session for sandbox "
            f"{getattr(sandbox, 'sandbox_id', '?')!r}: {type(exc).__name__}: {exc}. This is a fault of the host, "
            "not of the model's code: check that the run directory is writable and not full.",
            agent=tools.agent_name) from exc


def open_branch_gateway(main: Any, branch: Any) -> Any:
    """Open the gateway session of a branch kernel (`sb.fork()`) like `main`, its root's: the same manager (so
    the same budgets: a fork does not multiply them), limits, tracer and agent; closed with the branch."""
    from lllm.proxies.gateway import get_gateway

    session = get_gateway().open_session(branch.session_dir, main.manager, session_id=main.session_id,
                                         tracer=main.tracer, limits=main.limits, token_owner=branch.guest_uid,
                                         agent=main.agent, name=branch.gateway_name)
    branch.add_close_hook(session.close)
    return session


def _remove_stale_token(session_dir: Path) -> None:
    """A kept sandbox's directory may hold the token of a gateway session of a process that is gone; the new
    session writes its own (exclusively)."""
    try:
        os.unlink(session_dir / "gateway.token")
    except OSError:
        pass
