"""The registry of sandbox backends: a name (`backend: docker` in a config) -> a `BaseSandbox` subclass.

`docker` (`DockerSandbox`), `local` (`LocalSandbox`, NOT isolated) and `fake` (`FakeSandbox`) are built in;
another backend registers itself by name with `register_sandbox_backend(name, cls_or_dotted_path)`, or, from
another package, as an entry point of the group `lllm.sandbox_backends`. Classes load on first use.

`create_sandbox(backend, **options)` makes an unstarted sandbox of a backend, after checking that the backend
takes those options (so a typo is an error here, not a TypeError later in a pool's background thread).
"""

from __future__ import annotations

import inspect
from typing import Any

from lllm.errors import UsageError
from lllm.registry import Registry
from lllm.sandbox.base import BaseSandbox

__all__ = ["SANDBOX_BACKENDS", "backend_options", "check_options", "create_sandbox", "register_sandbox_backend"]


def _check_backend(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, BaseSandbox)):
        raise UsageError(f"sandbox backend {name!r}: {obj!r} is not a BaseSandbox subclass (subclass "
                         "lllm.sandbox.base.BaseSandbox and implement its _start/_run_cell/... hooks)", key=name)


SANDBOX_BACKENDS: Registry[type[BaseSandbox]] = Registry(
    "sandbox backend", group="lllm.sandbox_backends", check=_check_backend,
    hint="Register one with lllm.sandbox.backends.register_sandbox_backend(name, cls_or_dotted_path).")
"""Backend name -> `BaseSandbox` subclass (or its dotted path until first use)."""
SANDBOX_BACKENDS.register("docker", "lllm.sandbox.docker:DockerSandbox")
SANDBOX_BACKENDS.register("local", "lllm.sandbox.local:LocalSandbox")
SANDBOX_BACKENDS.register("fake", "lllm.sandbox.fake:FakeSandbox")


def register_sandbox_backend(name: str, cls_or_path: type[BaseSandbox] | str, *, replace: bool = True) -> None:
    """Make `backend: name` mean `cls_or_path` (a `BaseSandbox` subclass or its dotted path "pkg.mod:Class")."""
    SANDBOX_BACKENDS.register(name, cls_or_path, replace=replace)


def backend_options(backend: str) -> set[str]:
    """The keyword options the backend's constructor takes (ConfigError for an unknown backend)."""
    cls = SANDBOX_BACKENDS.lookup(backend)
    return {name for name, p in inspect.signature(cls).parameters.items() if p.kind is p.KEYWORD_ONLY}


def check_options(backend: str, options: dict[str, Any]) -> None:
    """Raise UsageError when `backend` does not take one of `options` (names the ones it takes); a backend whose
    constructor takes `**options` is given them unchecked."""
    params = inspect.signature(SANDBOX_BACKENDS.lookup(backend)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    unknown = sorted(set(options) - backend_options(backend))
    if unknown:
        raise UsageError(f"sandbox backend {backend!r} takes no option {unknown[0]!r}; it takes "
                         f"{sorted(backend_options(backend))!r}", backend=backend)


def create_sandbox(backend: str = "docker", **options: Any) -> BaseSandbox:
    """An unstarted sandbox of `backend`, made with `options` (call `start()`, or use it in a `with` block).

    Raises:
        ConfigError: no backend of that name (the message lists the registered ones).
        UsageError: the backend does not take one of the options.
    """
    check_options(backend, options)
    return SANDBOX_BACKENDS.lookup(backend)(**options)
