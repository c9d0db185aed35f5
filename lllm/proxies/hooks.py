"""Hooks around every CALL_API a `ProxyManager` dispatches (from the gateway, or called in-process).

A hook is `hook(path, params, proceed) -> answer`: `proceed()` runs the call (the next hook, then the proxy)
and returns its answer or raises its error; a hook may return that, or answer without calling `proceed` at
all. A cassette (`lllm.testing.cassette`) records the answers this way, and replays them with no proxy and no
API reached.

Hooks are on inside `hook_api_calls(hook)` blocks (in every thread), and by name from `API_CALL_HOOKS`
(entry point group `lllm.api_call_hooks`) when the environment says so: `cassette` while `$LLLM_CASSETTE` is
set when the `ProxyManager` is made. With no hook on, a call pays one list check.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from lllm.errors import ConfigError
from lllm.registry import Registry

__all__ = ["API_CALL_HOOKS", "ApiCallHook", "active_api_call_hooks", "call_through_hooks", "environment_hooks",
           "hook_api_calls"]

ApiCallHook = Callable[[str, "dict[str, Any] | None", Callable[[], Any]], Any]


def _check_hook(name: str, obj: Any) -> None:
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(f"CALL_API hook {name!r}: {obj!r} is not a function hook(path, params, proceed)",
                          key=name)


API_CALL_HOOKS: Registry[ApiCallHook] = Registry(
    "CALL_API hook", group="lllm.api_call_hooks", check=_check_hook,
    hint="A hook is hook(path, params, proceed) -> answer; lllm.testing declares `cassette` as an entry point.")
"""Hooks the environment turns on, by name (see `_ENV_HOOKS`)."""
_ENV_HOOKS = (("LLLM_CASSETTE", "cassette"),)
"""(environment variable, hook name): the hook is on while the variable is set and not empty."""
_hooks: list[ApiCallHook] = []
_lock = threading.Lock()


def environment_hooks() -> tuple[ApiCallHook, ...]:
    """The hooks the environment turns on now. A `ProxyManager` reads them once, when it is made (one session),
    so that a call pays no environment lookup."""
    return tuple(API_CALL_HOOKS.lookup(name, where=f"${var} is set") for var, name in _ENV_HOOKS if os.environ.get(var))


def active_api_call_hooks(environment: tuple[ApiCallHook, ...] = ()) -> list[ApiCallHook]:
    """The hooks that are on, outermost first: those of `hook_api_calls` blocks (innermost block first), then
    `environment` (what `environment_hooks()` gave the manager)."""
    if not _hooks and not environment:
        return []
    return [*reversed(_hooks), *environment]


def call_through_hooks(hooks: list[ApiCallHook], path: str, params: dict[str, Any] | None,
                       dispatch: Callable[[], Any]) -> Any:
    """Run `dispatch` (the call itself) inside `hooks`, the first outermost."""
    def step(i: int) -> Any:
        if i == len(hooks):
            return dispatch()
        return hooks[i](path, params, lambda: step(i + 1))

    return step(0)


@contextmanager
def hook_api_calls(hook: ApiCallHook) -> Iterator[ApiCallHook]:
    """Put `hook` around every CALL_API of every `ProxyManager` inside the block (in every thread); nests, the
    innermost block's hook outermost."""
    if not callable(hook):
        raise ConfigError(f"hook_api_calls() takes a function hook(path, params, proceed), got {hook!r}",
                          key="hook")
    with _lock:
        _hooks.append(hook)
    try:
        yield hook
    finally:
        with _lock:
            for i in range(len(_hooks) - 1, -1, -1):
                if _hooks[i] is hook:
                    del _hooks[i]
                    break
