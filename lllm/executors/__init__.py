"""Executors that run a batch's tasks somewhere else than this process: `RayExecutor` (a Ray cluster).

`tactic.bcall(tasks, executor="ray")` finds it by name (the entry point `ray` of the group
`lllm.batch_executors`);
`lllm.core.executor` is the seam, docs/scaling.md the user's guide. Ray is imported when a batch starts, never
by `import lllm` or `import lllm.executors`.
"""

from __future__ import annotations

from lllm._lazy import lazy_getattr

_LAZY = {"RayExecutor": "lllm.executors.ray_executor"}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr("lllm.executors", _LAZY, globals())
