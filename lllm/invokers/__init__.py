"""Invokers: the registry that builds them from config (`build_invoker`, `register_invoker`, `override`).

```python
invoker = build_invoker({"invoker": "litellm"})                     # real providers, through litellm
invoker = build_invoker({"invoker": "scripted", "steps": ["Hi!"]})  # the scripted model (tests, offline demo)
with override(ScriptedInvoker(["Hi!"])):                             # every build_invoker(...) returns it
    ...
```

Built in: "litellm" (`lllm.invokers.litellm.LiteLLMInvoker`), "scripted" (`ScriptedInvoker`) and "function"
(`FunctionInvoker`). Importing this package does not import litellm: classes load on first use.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from lllm._lazy import lazy_getattr
from lllm.errors import ConfigError
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
    from lllm.invokers.scripted import FunctionInvoker, ScriptedInvoker

__all__ = [
    "BaseInvoker",
    "BaseStreamHandler",
    "FunctionInvoker",
    "InvokeContext",
    "InvokeResult",
    "LiteLLMInvoker",
    "RecordingStreamHandler",
    "ScriptedInvoker",
    "ToolCallRequest",
    "build_invoker",
    "known_invokers",
    "override",
    "register_invoker",
]

_BUILTIN: dict[str, str] = {
    "litellm": "lllm.invokers.litellm:LiteLLMInvoker",
    "scripted": "lllm.invokers.scripted:ScriptedInvoker",
    "function": "lllm.invokers.scripted:FunctionInvoker",
}
_registry: dict[str, type[BaseInvoker] | str] = dict(_BUILTIN)
_overrides: list[BaseInvoker] = []
_lock = threading.Lock()

_LAZY = {
    "LiteLLMInvoker": "lllm.invokers.litellm",
    "ScriptedInvoker": "lllm.invokers.scripted",
    "FunctionInvoker": "lllm.invokers.scripted",
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
    if not isinstance(name, str) or not name:
        raise ConfigError(f"an invoker name must be a non-empty string, got {name!r}", key="invoker")
    if isinstance(cls_or_path, str):
        if ":" not in cls_or_path and "." not in cls_or_path:
            raise ConfigError(
                f"invoker {name!r}: {cls_or_path!r} is not a dotted path; write 'package.module:ClassName'", key="invoker"
            )
    elif not (isinstance(cls_or_path, type) and issubclass(cls_or_path, BaseInvoker)):
        raise ConfigError(
            f"invoker {name!r}: {cls_or_path!r} is not a BaseInvoker subclass (subclass "
            "lllm.invokers.base.BaseInvoker and implement _call_once)",
            key="invoker",
        )
    with _lock:
        current = _registry.get(name)
        if current is not None and current != cls_or_path and not replace:
            raise ConfigError(
                f"an invoker named {name!r} is already registered ({_describe(current)}); pass replace=True to "
                "replace it, or choose another name",
                key="invoker",
            )
        _registry[name] = cls_or_path


def known_invokers() -> list[str]:
    """The registered invoker names, sorted."""
    with _lock:
        return sorted(_registry)


def _describe(target: type[BaseInvoker] | str) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _resolve(name: str) -> type[BaseInvoker]:
    with _lock:
        target = _registry.get(name)
    if target is None:
        import difflib

        close = difflib.get_close_matches(str(name), known_invokers(), n=2, cutoff=0.6)
        hint = " Did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
        raise ConfigError(
            f"unknown invoker {name!r}; known invokers: {known_invokers()!r}.{hint} Register your own with "
            "lllm.invokers.register_invoker(name, cls_or_dotted_path).",
            key="invoker",
        )
    if isinstance(target, str):
        cls = resolve_dotted(target, what=f"invoker {name!r}")
        if not (isinstance(cls, type) and issubclass(cls, BaseInvoker)):
            raise ConfigError(f"invoker {name!r}: {target!r} is {cls!r}, not a BaseInvoker subclass", key="invoker")
        with _lock:
            if _registry.get(name) == target:
                _registry[name] = cls
        return cls
    return target


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
        return _overrides[-1]
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
    return _resolve(name).from_config(options)


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
