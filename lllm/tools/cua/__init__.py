"""The computer-use toolset: agents that see and drive a real browser (Chromium through Playwright).

- `BrowserConfig` (config.py): the `computer_use:` block.
- `BrowserSession` (session.py): one browser context per agent per tactic call, with its tabs, its
  egress policy (safety.py, _proxy.py) and the log of its actions (actions.py).
- `BrowserToolset` / `attach` (toolset.py): the session's actions as tools an `Agent` calls; `attach(agent,
  block, ctx)` is the `computer_use:` config extension.
- `ComputerUseTactic` (tactic.py): the observe-act loop until the model says done or a step limit.
- `export_script` (replay.py): a finished session as a plain Playwright script that replays it.

Nothing here imports Playwright at import time; it loads when the first browser starts.
"""

from __future__ import annotations

from typing import Any

from lllm._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "ActionLog": "lllm.tools.cua.session",
    "BrowserConfig": "lllm.tools.cua.config",
    "BrowserDriver": "lllm.tools.cua._driver",
    "BrowserSession": "lllm.tools.cua.session",
    "BrowserToolset": "lllm.tools.cua.toolset",
    "COMPUTER_USE_SYSTEM_PROMPT": "lllm.tools.cua.tactic",
    "ComputerUseTactic": "lllm.tools.cua.tactic",
    "ConfirmRequest": "lllm.tools.cua.safety",
    "Observation": "lllm.tools.cua.session",
    "Secrets": "lllm.tools.cua.safety",
    "UrlPolicy": "lllm.tools.cua.safety",
    "close_shared_drivers": "lllm.tools.cua._driver",
    "export_script": "lllm.tools.cua.replay",
    "script_from_records": "lllm.tools.cua.replay",
    "shared_driver": "lllm.tools.cua._driver",
    "toolset_of": "lllm.tools.cua.toolset",
}

__all__ = sorted([*_EXPORTS, "attach"])


__getattr__ = lazy_getattr('lllm.tools.cua', _EXPORTS, globals())


def attach(agent: Any, block: dict[str, Any], ctx: Any) -> Any:
    """The `computer_use:` agent-config extension (see `lllm.tools.cua.toolset.attach`)."""
    from lllm.tools.cua.toolset import attach as _attach

    return _attach(agent, block, ctx)


def __dir__() -> list[str]:
    return __all__
