"""Async sandboxes: `AsyncDockerSandbox` and `AsyncLocalSandbox`, the same contract as the blocking ones, awaited.

    async with AsyncDockerSandbox(limits=SandboxLimits(memory="512m")) as sb:
        result = await sb.run_cell("print('hi')", on_stdout=print)

Each wraps a blocking sandbox of the same options (`.sandbox`) and runs the very same cell loop on the event
loop (`lllm.sandbox._cell_loop.adrive`): it waits on the kernel's sockets with `loop.add_reader`, so a cell
holds no thread while it waits, and many sandboxes' cells run at once from one loop. What can block (a
Docker API call, a kernel restart, starting and removing the container, file transfers, the process of
`run_command`) runs in a worker thread. Callbacks are called on the loop, in order; a coroutine function is
awaited before the next piece is delivered.

Cells of one sandbox run one at a time (an `asyncio.Lock`, the async counterpart of the blocking sandbox's
lock); use the async sandbox from one event loop, and not its `.sandbox` at the same time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from lllm.sandbox._cell_loop import KernelSandbox, adrive
from lllm.sandbox.base import CellResult, SandboxState
from lllm.sandbox.commands import CommandResult
from lllm.sandbox.live import Listeners, OutputCallback

__all__ = ["AsyncDockerSandbox", "AsyncLocalSandbox", "AsyncSandbox"]

T = TypeVar("T")


class AsyncSandbox:
    """The async face of a kernel sandbox; subclasses name the blocking class (`sync_class`).

    Args:
        **options: the blocking class's options (see `DockerSandbox`, `LocalSandbox`).
    """

    sync_class: ClassVar[type[KernelSandbox]]

    def __init__(self, **options: Any) -> None:
        self.sandbox = self.sync_class(**options)
        """The blocking sandbox underneath (same state, same container or kernel)."""
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def sandbox_id(self) -> str:
        return self.sandbox.sandbox_id

    @property
    def session_dir(self) -> Path:
        return self.sandbox.session_dir

    async def start(self) -> None:
        """Bring the sandbox up (in a worker thread); see `BaseSandbox.start`."""
        await asyncio.to_thread(self.sandbox.start)

    async def close(self) -> None:
        """Remove the sandbox; safe to call twice."""
        await asyncio.to_thread(self.sandbox.close)

    async def __aenter__(self) -> AsyncSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sandbox_id or '-'} {self.state.value}>"

    # -- cells -------------------------------------------------------------------------------------------------------
    async def run_cell(self, code: str, *, timeout: float | None | object = ..., on_stdout: OutputCallback | None = None,
                       on_stderr: OutputCallback | None = None,
                       on_display: OutputCallback | None = None) -> CellResult:
        """Run `code`; the contract of `BaseSandbox.run_cell`, awaited. Callbacks may be coroutine functions.
        Cancelled while it runs, the cell is interrupted in the kernel (the next cell starts clean)."""
        sb = self.sandbox
        limit = sb._cell_arguments(code, timeout)
        listeners = sb._listeners("cell", deferred=True, on_stdout=on_stdout, on_stderr=on_stderr,
                                  on_display=on_display)
        async with self._lock:
            started = time.time()
            listeners.start(code)
            steps = sb.cell_steps(code, timeout=limit, listen=listeners if listeners.active else None)
            result = await adrive(steps, flush=listeners.aflush if listeners.active else None,
                                  on_cancel=sb.send_interrupt)  # type: ignore[attr-defined]
        if sb._pending_notices:
            result = sb._with_pending_notices(result)
        listeners.end(result.status, result.duration_s)
        if sb.tracer is not None:  # a LogStore waits for its commit: not on the loop
            await asyncio.to_thread(sb._record, code, result, started)
        listeners.raise_failure(result.status)
        return result

    async def run_command(self, command: str | Sequence[str], *, cwd: str | None = None,
                          env: dict[str, str] | None = None, timeout: float | None | object = ...,
                          stdin: str | bytes | None = None, on_stdout: OutputCallback | None = None,
                          on_stderr: OutputCallback | None = None) -> CommandResult:
        """Run a process beside the kernel; the contract of `BaseSandbox.run_command`, awaited (the process is
        watched from a worker thread; callbacks are called on the loop)."""
        import shlex

        sb = self.sandbox
        args = sb._command_arguments(command, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
        listeners = sb._listeners("command", deferred=True, on_stdout=on_stdout, on_stderr=on_stderr)
        listeners.start(command if isinstance(command, str) else shlex.join(args["argv"]))
        result = await _with_listeners(lambda: sb._run_command(**args, listen=listeners if listeners.active
                                                               else None), listeners)
        listeners.end(result.status, result.duration_s)
        listeners.raise_failure(result.status)
        return result

    async def interrupt(self) -> None:
        """Interrupt the running cell (KeyboardInterrupt in the kernel)."""
        await asyncio.to_thread(self.sandbox.interrupt)

    async def restart(self) -> None:
        """A fresh kernel (after the running cell, if any): every variable is lost; files stay."""
        async with self._lock:
            await asyncio.to_thread(self.sandbox.restart)

    # -- files -------------------------------------------------------------------------------------------------------
    async def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        """See `BaseSandbox.upload` (a file, a folder, or bytes)."""
        return await asyncio.to_thread(self.sandbox.upload, src, dest)

    async def download(self, path: str) -> bytes:
        return await asyncio.to_thread(self.sandbox.download, path)

    async def download_dir(self, path: str, dest: str | Path) -> Path:
        return await asyncio.to_thread(self.sandbox.download_dir, path, dest)

    async def list_files(self, path: str = ".") -> list[str]:
        return await asyncio.to_thread(self.sandbox.list_files, path)


async def _with_listeners(fn: Callable[[], T], listeners: Listeners) -> T:
    """Run `fn` in a worker thread while delivering, on this loop, what it queues for `listeners`."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    listeners.notify = lambda: loop.call_soon_threadsafe(woken.set)
    work = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        while not work.done():
            waiter = asyncio.ensure_future(woken.wait())
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            woken.clear()
            await listeners.aflush()
        await listeners.aflush()
        return work.result()
    finally:
        listeners.notify = None


class AsyncDockerSandbox(AsyncSandbox):
    """`DockerSandbox`, awaited: `async with AsyncDockerSandbox(**DockerSandbox options) as sb: await
    sb.run_cell(...)`."""

    @property
    def sync_class(self) -> type[KernelSandbox]:  # type: ignore[override]  # imported on first use
        from lllm.sandbox.docker import DockerSandbox

        return DockerSandbox


class AsyncLocalSandbox(AsyncSandbox):
    """`LocalSandbox` (NOT isolated), awaited."""

    @property
    def sync_class(self) -> type[KernelSandbox]:  # type: ignore[override]
        from lllm.sandbox.local import LocalSandbox

        return LocalSandbox
