"""Invokers: the registry that builds them from config (`build_invoker`, `register_invoker`, `override`).

```python
invoker = build_invoker({"invoker": "litellm"})                     # real providers, through litellm
invoker = build_invoker({"invoker": "scripted", "steps": ["Hi!"]})  # the scripted model (tests, offline demo)
with override(ScriptedInvoker(["Hi!"])):                             # every build_invoker(...) returns it
    ...
```

Built in: "litellm" (`lllm.invokers.litellm.LiteLLMInvoker`), "scripted" (`ScriptedInvoker`) and "function"
(`FunctionInvoker`). Importing this package does not import litellm: classes load on first use.

Wrappers: every invoker `build_invoker` returns (also the one an `override` installs) is passed through the
wrappers that are on, `f(invoker) -> invoker`: those of enclosing `wrap_invokers(f)` blocks, and those the
environment turns on, found by name in `INVOKER_WRAPPERS` (entry point group `lllm.invoker_wrappers`):
`cassette` is on while `$LLLM_CASSETTE` is set (lllm.testing's cassette wraps each invoker in a
`RecordingInvoker`). An invoker you construct yourself is not wrapped.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from lllm._lazy import lazy_getattr
from lllm.errors import ConfigError
from lllm.registry import Registry, suggest
from lllm.invokers.base import (
    BaseInvoker,
    BaseStreamHandler,
    InvokeContext,
    InvokeResult,
    RecordingStreamHandler,
    ToolCallRequest,
    resolve_dotted,
)

if TYPE_CHECKING:
    from lllm.invokers.litellm import LiteLLMInvoker
    from lllm.invokers.recording import RecordingInvoker
    from lllm.invokers.scripted import FunctionInvoker, ScriptedInvoker

__all__ = [
    "BaseInvoker",
    "BaseStreamHandler",
    "FunctionInvoker",
    "INVOKERS",
    "INVOKER_WRAPPERS",
    "InvokeContext",
    "InvokeResult",
    "LiteLLMInvoker",
    "RecordingInvoker",
    "RecordingStreamHandler",
    "ScriptedInvoker",
    "ToolCallRequest",
    "build_invoker",
    "known_invokers",
    "override",
    "register_invoker",
    "wrap_invokers",
]


def _check_invoker(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, BaseInvoker)):
        raise ConfigError(f"invoker {name!r}: {obj!r} is not a BaseInvoker subclass (subclass "
                          "lllm.invokers.base.BaseInvoker and implement _call_once)", key="invoker")


INVOKERS: Registry[type[BaseInvoker]] = Registry(
    "invoker", group="lllm.invokers", check=_check_invoker,
    hint="Register your own with lllm.invokers.register_invoker(name, cls_or_dotted_path).")
"""The invoker registry: config name -> `BaseInvoker` subclass (or its dotted path until first use)."""
INVOKERS.register("litellm", "lllm.invokers.litellm:LiteLLMInvoker")
INVOKERS.register("scripted", "lllm.invokers.scripted:ScriptedInvoker")
INVOKERS.register("function", "lllm.invokers.scripted:FunctionInvoker")
_registry = INVOKERS._entries  # the raw entries (tests save and restore them)
_overrides: list[BaseInvoker] = []
_lock = threading.Lock()

InvokerWrapper = Callable[[BaseInvoker], BaseInvoker]


def _check_wrapper(name: str, obj: Any) -> None:
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(f"invoker wrapper {name!r}: {obj!r} is not a function f(invoker) -> invoker",
                          key="invoker")


INVOKER_WRAPPERS: Registry[InvokerWrapper] = Registry(
    "invoker wrapper", group="lllm.invoker_wrappers", check=_check_wrapper,
    hint="A wrapper is f(invoker) -> invoker; lllm.testing declares `cassette` as an entry point.")
"""Wrappers the environment turns on, by name (see `_ENV_WRAPPERS`); entry points of `lllm.invoker_wrappers`."""
_ENV_WRAPPERS = (("LLLM_CASSETTE", "cassette"),)
"""(environment variable, wrapper name): the wrapper is on while the variable is set and not empty."""
_wrappers: list[InvokerWrapper] = []

_LAZY = {
    "LiteLLMInvoker": "lllm.invokers.litellm",
    "ScriptedInvoker": "lllm.invokers.scripted",
    "FunctionInvoker": "lllm.invokers.scripted",
    "RecordingInvoker": "lllm.invokers.recording",
}


__getattr__ = lazy_getattr('lllm.invokers', _LAZY, globals())


def register_invoker(name: str, cls_or_path: type[BaseInvoker] | str, *, replace: bool = False) -> None:
    """Register an invoker class under `name`, for `build_invoker({"invoker": name, ...})`.

    Args:
        name: The config name.
        cls_or_path: A `BaseInvoker` subclass, or its dotted path 'pkg.module:Class' (imported on first use).
        replace: Allow replacing a name that is already registered to something else.

    Raises:
        ConfigError: Not a BaseInvoker subclass or a dotted path, or the name is taken and `replace` is False.
    """
    try:
        INVOKERS.register(name, cls_or_path, replace=replace)
    except ConfigError as exc:
        raise ConfigError(exc.message, key="invoker") from None


def known_invokers() -> list[str]:
    """The registered invoker names, sorted."""
    return INVOKERS.names()


def _resolve(name: str) -> type[BaseInvoker]:
    if name not in INVOKERS:
        known = known_invokers()
        raise ConfigError(
            f"unknown invoker {name!r}; known invokers: {known!r}.{suggest(name, known)} Register your own with "
            "lllm.invokers.register_invoker(name, cls_or_dotted_path).",
            key="invoker",
        )
    try:
        return INVOKERS[name]
    except ConfigError as exc:
        raise ConfigError(exc.message, key="invoker") from exc


def build_invoker(config: dict[str, Any] | str | None = None) -> BaseInvoker:
    """Build the invoker a config names.

    Args:
        config: `{"invoker": name, **options}` (a YAML block), or just the name; `"invoker"` defaults to
            "litellm". The options are the class's constructor keywords plus `max_retries`, `backoff`,
            `backoff_max` and `jitter`.

    Returns:
        The invoker, or the one installed by an enclosing `override(...)`.

    Raises:
        ConfigError: Unknown invoker name (the message lists the known ones) or a bad option.
    """
    if _overrides:
        return _wrapped(_overrides[-1])
    if config is None:
        config = {}
    elif isinstance(config, str):
        config = {"invoker": config}
    elif not isinstance(config, dict):
        raise ConfigError(f"an invoker config is a dict like {{'invoker': 'litellm'}}, got {config!r}", key="invoker")
    options = dict(config)
    name = options.pop("invoker", "litellm")
    if not isinstance(name, str):
        raise ConfigError(f"`invoker` must be a name, got {name!r}; known invokers: {known_invokers()!r}", key="invoker")
    return _wrapped(_resolve(name).from_config(options))


def _wrapped(invoker: BaseInvoker) -> BaseInvoker:
    """`invoker` inside the wrappers that are on: the environment's first (innermost), then `wrap_invokers`."""
    for var, name in _ENV_WRAPPERS:
        if os.environ.get(var):
            invoker = INVOKER_WRAPPERS.lookup(name, where=f"${var} is set")(invoker)
    for wrapper in list(_wrappers):
        invoker = wrapper(invoker)
    return invoker


@contextmanager
def wrap_invokers(wrapper: InvokerWrapper) -> Iterator[InvokerWrapper]:
    """Pass every invoker `build_invoker(...)` returns inside the block (in every thread) through `wrapper`.

    Invokers are built when a tactic is built, so enter the block before building the tactic. Blocks nest: the
    outer block's wrapper is applied first (it ends up inside the inner one's).
    """
    if not callable(wrapper):
        raise ConfigError(f"wrap_invokers() takes a function f(invoker) -> invoker, got {wrapper!r}", key="invoker")
    with _lock:
        _wrappers.append(wrapper)
    try:
        yield wrapper
    finally:
        with _lock:
            for i in range(len(_wrappers) - 1, -1, -1):
                if _wrappers[i] is wrapper:
                    del _wrappers[i]
                    break


@contextmanager
def override(invoker: BaseInvoker) -> Iterator[BaseInvoker]:
    """Make every `build_invoker(...)` return `invoker` inside the block (in every thread); nests.

    Tests use it to run code that builds its own invoker (the seed's snippets) on the scripted model.
    """
    if not isinstance(invoker, BaseInvoker):
        raise ConfigError(f"override() takes an invoker instance, got {invoker!r}", key="invoker")
    with _lock:
        _overrides.append(invoker)
    try:
        yield invoker
    finally:
        with _lock:
            # remove this one even if inner overrides leaked (remove the last occurrence)
            for i in range(len(_overrides) - 1, -1, -1):
                if _overrides[i] is invoker:
                    del _overrides[i]
                    break
