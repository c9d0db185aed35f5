"""Lazy public names for a package `__init__`: a name's module is imported on first use (keeps imports fast)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `exports[name]` on first use and caches the value.

    Args:
        package: The package's dotted name (for the error message).
        exports: Public name -> the module that defines it.
        namespace: The package's `globals()`, where a resolved name is cached.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
