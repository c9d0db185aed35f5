"""`SandboxPool`: sandboxes started ahead of time, so that `acquire()` takes milliseconds.

The pool keeps `size` sandboxes started (container up, kernel answering) and hands one out per `acquire()`; a
background thread starts a replacement at once. A sandbox is never handed out twice: `release()` (or the
sandbox's own `close()`) destroys it, in the background. The gateway's socket and token are written into the
acquired sandbox's `session_dir` after `acquire()`, which is why pooled sandboxes need nothing per session at
start. What belongs to one use (cell timeout, output cap, tracer, agent name) is given to `acquire(**use)`.
At `start()` a Docker pool runs the reaper, so containers left by a crashed earlier run go first.

    with SandboxPool(size=4, limits=SandboxLimits(memory="512m")) as pool:
        sb = pool.acquire(cell_timeout=30, tracer=records.append)
        try:
            sb.run_cell("1+1")
        finally:
            pool.release(sb)

`shared_pool(backend, size=, **options)` is the process-wide cache of pools that callers with the same options
share (the `proxy:` block's `pool_size`); `close_shared_pools()` closes them (also at interpreter exit).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

from pydantic import BaseModel

from lllm.errors import SandboxClosed, SandboxError, SandboxStartError, UsageError
from lllm.sandbox.backends import check_options, create_sandbox
from lllm.sandbox.base import USE_OPTIONS, Sandbox

__all__ = ["SandboxPool", "close_shared_pools", "shared_pool"]


class SandboxPool:
    """Keep `size` started sandboxes ready (see the module docstring).

    Args:
        size: how many ready sandboxes to keep.
        factory: makes one unstarted sandbox; default `create_sandbox(backend, **sandbox_options)`.
        backend: the registered sandbox backend the default factory makes (`lllm.sandbox.backends`).
        parallel: how many sandboxes start at once while refilling.
        reap: run the reaper (`lllm.sandbox.reaper.reap`) at `start()` (Docker pools only).
        max_failures: after this many start failures in a row, `acquire()` raises the last one.
        **sandbox_options: passed to the backend when no factory is given (image, limits, env, ...).
    """

    def __init__(self, size: int = 2, *, factory: Callable[[], Any] | None = None, backend: str = "docker",
                 parallel: int = 2, reap: bool = True, max_failures: int = 3, **sandbox_options: Any) -> None:
        if not isinstance(size, int) or size < 1:
            raise UsageError(f"SandboxPool(size={size!r}): size must be an int >= 1")
        if factory is not None and sandbox_options:
            raise UsageError(f"give either factory= or sandbox options, not both (got {sorted(sandbox_options)})")
        if factory is None:
            check_options(backend, sandbox_options)  # here, not in a filler thread

            def factory() -> Any:
                return create_sandbox(backend, **sandbox_options)

            self._docker = backend == "docker"
        else:
            self._docker = False
        self.size = size
        self.factory = factory
        self.parallel = max(1, min(parallel, size))
        self.reap_at_start = reap
        self.max_failures = max_failures
        self._ready: collections.deque[Any] = collections.deque()
        self._starting = 0
        self._failures = 0
        self._last_error: BaseException | None = None
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing: list[threading.Thread] = []
        self._closed = False
        self._started = False
        self.acquired = 0
        self.started_total = 0

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> SandboxPool:
        """Reap orphans (Docker) and start filling; returns at once (use `wait_ready()` to wait)."""
        if self._closed:
            raise SandboxClosed("start() on a closed SandboxPool; create a new pool")
        if self._started:
            return self
        self._started = True
        if self.reap_at_start and self._docker:
            from lllm.sandbox.reaper import reap

            reap()
        for index in range(self.parallel):
            thread = threading.Thread(target=self._fill, name=f"lllm-pool-fill-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until `size` sandboxes are ready.

        Raises:
            SandboxStartError: they did not come up in time, or starting keeps failing.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._ready) < self.size:
                self._raise_if_failing()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxStartError(f"the pool has {len(self._ready)} of {self.size} sandboxes ready after "
                                            f"{timeout:.0f}s")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        """Stop refilling and destroy every sandbox not handed out; wait for background removals."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ready, self._ready = list(self._ready), collections.deque()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=120)
        with self._cond:  # a start that finished during the join
            ready += list(self._ready)
            self._ready.clear()
        for sandbox in ready:
            with contextlib.suppress(SandboxError):
                sandbox.close()
        for thread in list(self._closing):
            thread.join(timeout=60)

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- use --------------------------------------------------------------------------------------------------
    def acquire(self, *, timeout: float = 120.0, **use: Any) -> Any:
        """A started sandbox, yours alone; wait up to `timeout` seconds if none is ready.

        Args:
            timeout: seconds to wait for a ready sandbox.
            **use: per-use options set on it before it is handed out (`cell_timeout`, `max_output_chars`,
                `tracer`, `agent`; see `BaseSandbox.configure`).

        Raises:
            SandboxClosed: the pool is closed. SandboxStartError: none came up (the last start error is chained).
            UsageError: an option that is not per-use.
        """
        if use:
            unknown = sorted(set(use) - set(USE_OPTIONS))
            if unknown:  # before a sandbox leaves the pool
                raise UsageError(f"acquire() got {unknown[0]!r}, which is not a per-use option; those are "
                                 f"{list(USE_OPTIONS)!r}")
        sandbox = self._take(timeout)
        if use:
            try:
                sandbox.configure(**use)
            except BaseException:
                self.release(sandbox)
                raise
        return sandbox

    def _take(self, timeout: float) -> Any:
        if not self._started:
            self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxClosed("acquire() on a closed SandboxPool")
                if self._ready:
                    sandbox = self._ready.popleft()
                    self._cond.notify_all()  # a filler may start a replacement
                    if getattr(getattr(sandbox, "state", None), "value", "running") != "running":
                        continue  # its idle_timeout or max_lifetime ended while it waited here
                    self.acquired += 1
                    return sandbox
                self._raise_if_failing()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxStartError(f"no sandbox became ready within {timeout:.0f}s (pool size {self.size})")
                self._cond.wait(min(left, 0.5))

    def release(self, sandbox: Sandbox) -> None:
        """Give a sandbox back: it is destroyed (in the background), never handed out again."""
        thread = threading.Thread(target=self._destroy, args=(sandbox,), name="lllm-pool-release", daemon=True)
        thread.start()
        self._closing = [t for t in self._closing if t.is_alive()] + [thread]

    @contextlib.contextmanager
    def lease(self, *, timeout: float = 120.0) -> Iterator[Any]:
        """`with pool.lease() as sb:` acquires a sandbox and releases it at the end of the block."""
        sandbox = self.acquire(timeout=timeout)
        try:
            yield sandbox
        finally:
            self.release(sandbox)

    @property
    def ready(self) -> int:
        """How many sandboxes are ready right now."""
        return len(self._ready)

    # -- internals ----------------------------------------------------------------------------------------------
    @staticmethod
    def _destroy(sandbox: Sandbox) -> None:
        with contextlib.suppress(SandboxError):
            sandbox.close()

    def _raise_if_failing(self) -> None:
        if self._failures >= self.max_failures and self._last_error is not None:
            raise SandboxStartError(f"the pool could not start a sandbox {self._failures} times in a row; last "
                                    f"error: {self._last_error}") from self._last_error

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) + self._starting >= self.size:
                    self._cond.wait()
                if self._closed:
                    return
                self._starting += 1
            sandbox = None
            try:
                sandbox = self.factory()
                sandbox.start()
            except BaseException as exc:  # noqa: BLE001 - reported through acquire()
                with self._cond:
                    self._starting -= 1
                    self._failures += 1
                    self._last_error = exc
                    self._cond.notify_all()
                time.sleep(min(5.0, 0.2 * 2 ** min(self._failures, 5)))
                continue
            with self._cond:
                self._starting -= 1
                self._failures = 0
                self.started_total += 1
                if self._closed:
                    closing = True
                else:
                    closing = False
                    self._ready.append(sandbox)
                self._cond.notify_all()
            if closing:
                self._destroy(sandbox)
                return


# -- pools shared by the callers that ask for the same options ----------------------------------------------------
_SHARED: dict[tuple[Any, ...], SandboxPool] = {}
_SHARED_LOCK = threading.Lock()


def _option_key(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, dict):
        return tuple(sorted((k, _option_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_option_key(v) for v in value)
    return value


def shared_pool(backend: str = "docker", *, size: int, **options: Any) -> SandboxPool:
    """The process-wide pool of `size` sandboxes of `backend` started with `options` (created and started on
    first use; later calls with the same backend, size and options get the same pool). Per-use options go to
    `acquire(**use)`, never here, so users with different timeouts or tracers share one pool."""
    key = (backend, size, _option_key(options))
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None:
            pool = SandboxPool(size=size, backend=backend, **options)
            pool.start()
            _SHARED[key] = pool
        return pool


@atexit.register
def close_shared_pools() -> None:
    """Close every pool `shared_pool` started (also done at interpreter exit)."""
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.close()
