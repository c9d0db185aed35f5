"""Toolsets an agent can be given beyond run_python: `lllm.tools.cua`, the Playwright computer-use toolset.

Importing `lllm.tools` (or `lllm.tools.cua`) does not import Playwright; it loads when a browser starts.
"""

from __future__ import annotations

__all__ = ["cua"]


def __getattr__(name: str) -> object:
    if name == "cua":
        import importlib

        return importlib.import_module("lllm.tools.cua")
    raise AttributeError(f"module 'lllm.tools' has no attribute {name!r}")
