"""lllm.sandbox: where model-written code runs. Backends, pool, reaper and notebooks; names load lazily.

- `DockerSandbox`: a hardened container per session with a Jupyter kernel and no network (the real one).
- `LocalSandbox`: a local ipykernel subprocess, NOT isolated: for machines without Docker.
- `FakeSandbox`: a function answers each cell (for tests).
- `AsyncDockerSandbox`, `AsyncLocalSandbox`: the same, awaited (`lllm.sandbox.asynchronous`).
- `run_cell(..., on_stdout=...)`, `run_command(...) -> CommandResult`: output while it runs (`lllm.sandbox.live`:
  also `watch_cells`, `TerminalEcho`); a process beside the kernel (`lllm.sandbox.commands`).
- `create_sandbox(backend, **options)`, `register_sandbox_backend(name, cls_or_path)`: the backend registry
  (`lllm.sandbox.backends`).
- `SandboxPool`: started sandboxes ready to hand out; `shared_pool()`: the process-wide cache of pools;
  `reap()`: remove orphans; `ensure_image()`: build the image.
- `JupyterSession`: run cells on any sandbox and write a `.ipynb`.
- `sb.fork()` -> `BranchSandbox` (`lllm.sandbox.fork`); `sb.save(path)` -> `SnapshotInfo` and
  `DockerSandbox.resume(path)` (`lllm.sandbox.snapshot`).
"""

from __future__ import annotations

from lllm._lazy import lazy_getattr


_EXPORTS: dict[str, str] = {
    "AsyncDockerSandbox": "lllm.sandbox.asynchronous",
    "AsyncLocalSandbox": "lllm.sandbox.asynchronous",
    "CellEvent": "lllm.sandbox.live",
    "CommandResult": "lllm.sandbox.commands",
    "TerminalEcho": "lllm.sandbox.live",
    "watch_cells": "lllm.sandbox.live",
    "BaseSandbox": "lllm.sandbox.base",
    "BranchSandbox": "lllm.sandbox.fork",
    "CellImage": "lllm.sandbox.base",
    "CellResult": "lllm.sandbox.base",
    "DockerSandbox": "lllm.sandbox.docker",
    "FakeSandbox": "lllm.sandbox.fake",
    "JupyterSession": "lllm.sandbox.notebook",
    "LocalSandbox": "lllm.sandbox.local",
    "RecordLimits": "lllm.sandbox.base",
    "Sandbox": "lllm.sandbox.base",
    "SandboxLimits": "lllm.sandbox.base",
    "SANDBOX_BACKENDS": "lllm.sandbox.backends",
    "SandboxPool": "lllm.sandbox.pool",
    "SandboxState": "lllm.sandbox.base",
    "SnapshotInfo": "lllm.sandbox.snapshot",
    "close_shared_pools": "lllm.sandbox.pool",
    "create_sandbox": "lllm.sandbox.backends",
    "ensure_image": "lllm.sandbox.image",
    "image_name": "lllm.sandbox.image",
    "reap": "lllm.sandbox.reaper",
    "render_cell": "lllm.sandbox.render",
    "register_sandbox_backend": "lllm.sandbox.backends",
    "shared_pool": "lllm.sandbox.pool",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr('lllm.sandbox', _EXPORTS, globals())


def __dir__() -> list[str]:
    return __all__
