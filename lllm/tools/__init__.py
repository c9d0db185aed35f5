"""Toolsets an agent can be given: `lllm.tools.code` (run_python and query_api_doc over a sandbox and the
CALL_API gateway: the `proxy:` agent config block) and `lllm.tools.cua` (the Playwright computer-use toolset).

Importing `lllm.tools` loads neither: each loads on first use (Playwright when a browser starts, Docker when a
sandbox starts).
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("code", "cua")
_LAZY = {"ProxyConfig": "lllm.tools.code", "ProxyTools": "lllm.tools.code", "attach": "lllm.tools.code"}

__all__ = sorted([*_SUBMODULES, *_LAZY])


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"lllm.tools.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lllm.tools' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
