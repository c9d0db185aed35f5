"""The cell loop shared by the kernel backends: one deadline, replies matched on msg_id, escalation on timeout.

Follows jupyter_client's `execute_interactive`: send one execute_request, read IOPub messages whose parent is
that request until `status: idle` (and the shell reply), with the deadline set once from `time.monotonic()`.
On top of that it
- caps output as it streams (`OutputCollector`): it keeps draining, it stops storing;
- escalates a timeout: interrupt (a control-channel `interrupt_request`), wait `interrupt_grace`, then kill the
  kernel and start a new one; the result says which (`timeout_action`) and whether state was lost;
- notices a dead kernel (the backend's `exit_status()`: process exit code, OOM kill counter, container state)
  and reports `died` or `oom`, restarts the kernel and says state was lost, so the session stays usable;
- hands each piece of output, as it arrives, to the call's listeners (`lllm.sandbox.live`).

The loop is written once, as a generator (`cell_steps`) that does no waiting itself: it yields a `Wait` (for
input on the kernel's channels, up to a time) or a `Call` (something that may block: a Docker API call, a
kernel restart, a send) and is sent back the outcome. Two small drivers run it: `drive` (the blocking API:
`select` and plain calls) and `adrive` (asyncio: the channels' sockets are watched with `loop.add_reader`,
blocking calls run in a worker thread), in the way jupyter_client writes each operation once for its blocking
and async clients. So `DockerSandbox.run_cell` and `AsyncDockerSandbox.run_cell` are the same loop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union

from lllm.sandbox._kernel import KernelChannels
from lllm.sandbox._output import OutputCollector, RecordBudget, clean_text
from lllm.sandbox._zmtp import ChannelError
from lllm.sandbox.base import BaseSandbox, CellResult, CellStatus, RecordLimits

_HEALTH_EVERY_S = 0.25
_IDLE_AFTER_REPLY_S = 1.0
_REPLY_AFTER_IDLE_S = 2.0


@dataclass(frozen=True)
class ExitStatus:
    """How a kernel ended: `returncode` (negative: killed by that signal) and whether it was an OOM kill."""

    returncode: int | None
    oom: bool = False
    detail: str = ""
    container: bool = False
    """The whole container stopped (not only the kernel): its tmpfs files went with it."""

    def describe(self) -> str:
        rc = self.returncode
        if rc is None:
            how = "ended"
        elif rc < 0:
            try:
                how = f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"was killed by signal {-rc}"
        elif rc >= 128:
            try:
                how = f"exited with {rc} ({signal.Signals(rc - 128).name})"
            except ValueError:
                how = f"exited with {rc}"
        else:
            how = f"exited with code {rc}"
        reason = " for using more memory than the sandbox's limit" if self.oom else ""
        return f"the kernel {how}{reason}" + (f" ({self.detail})" if self.detail else "")


class KernelHandle(Protocol):
    """What the loop needs from a backend's kernel."""

    channels: KernelChannels

    def exit_status(self) -> ExitStatus | None:
        """None while the kernel lives; cheap enough to call a few times a second."""

    def send_interrupt(self) -> None:
        """Ask the running cell to stop (KeyboardInterrupt)."""

    def restart_kernel(self) -> None:
        """Kill the kernel (if alive), start a new one and wait until it answers; replaces `channels`."""

    def restart_note(self) -> str:
        """What the last restart cleaned up besides the kernel ('' when nothing worth saying)."""


@dataclass
class CellLimits:
    """The caps and timings of one cell run."""

    timeout: float | None
    interrupt_grace: float
    max_output_chars: int
    max_stored_chars: int
    max_display_bytes: int
    budget: RecordBudget | None = None
    """The sandbox's session budget for what cells store (None: `RecordLimits()` per cell, no session cap)."""


@dataclass(frozen=True)
class Wait:
    """A step of the loop: wait up to `timeout` s for input on `channels`; the driver sends back (iopub, shell,
    control) readiness."""

    channels: KernelChannels
    timeout: float


@dataclass(frozen=True)
class Call:
    """A step of the loop: call `fn()`, which may block; the driver sends back its result or throws its exception
    into the loop. `fast()`, when given, is what an event loop tries first, in its own thread: it must not
    block, and returns the result, or `Later(fn)` when the rest has to wait (run `fn` in a worker thread;
    `Later()`: run `fn` itself there)."""

    fn: Callable[[], Any]
    fast: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Later:
    """What a `Call`'s `fast()` returns when the call has to go on in a worker thread (with `fn`, or the Call's)."""

    fn: Callable[[], Any] | None = None


Step = Union[Wait, Call]
CellSteps = Generator[Step, Any, CellResult]
Listen = Callable[[str, Any], None]
"""`listen(kind, value)`: a piece of output as it arrives (stdout/stderr text, a display bundle)."""


def drive(steps: CellSteps) -> CellResult:
    """Run the loop, blocking: waits with `select`, calls in this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        if isinstance(step, Wait):
            value = step.channels.poll(step.timeout)
        else:
            try:
                value = step.fn()
            except Exception as exc:  # noqa: BLE001 - thrown into the loop, which decides
                error = exc


async def adrive(steps: CellSteps, *, flush: Callable[[], Any] | None = None,
                 on_cancel: Callable[[], None] | None = None) -> CellResult:
    """Run the loop on the running asyncio event loop: waits on the channels' sockets with `add_reader` (no thread
    per cell), blocking calls in a worker thread. `flush()` (awaited, when given) delivers the output the loop
    queued for the call's callbacks after each step. Cancelled, it calls `on_cancel()` (an interrupt) and stops."""
    import asyncio

    loop = asyncio.get_running_loop()
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                if flush is not None:
                    await flush()
                return stop.value
            value, error = None, None
            if flush is not None:
                await flush()
            if isinstance(step, Wait):
                value = await _readable(loop, step.channels, step.timeout)
                continue
            try:
                # a thread hop costs up to the interpreter's switch interval (5 ms) while the loop is busy: what
                # can be done without blocking is done here
                value = step.fast() if step.fast is not None else Later()
                if isinstance(value, Later):
                    value = await asyncio.to_thread(value.fn or step.fn)
            except Exception as exc:  # noqa: BLE001 - thrown into the loop, which decides
                error = exc
    except asyncio.CancelledError:
        steps.close()
        if on_cancel is not None:
            loop.run_in_executor(None, on_cancel)
        raise


async def _readable(loop: Any, channels: KernelChannels, timeout: float) -> tuple[bool, bool, bool]:
    """(iopub, shell, control) readiness within `timeout` s, waiting on the event loop, not in a thread."""
    import asyncio

    if not channels.all_connected():
        await asyncio.to_thread(channels.connect_missing)  # a connect may wait for a handshake
    if channels.buffered() or timeout <= 0:  # a message already read ahead: no socket will say so
        return channels.ready(0)
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    fds = [fd for fd in channels.filenos() if fd >= 0]
    timer = loop.call_later(timeout, wake)
    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await done
    finally:
        timer.cancel()
        for fd in fds:
            loop.remove_reader(fd)
    return channels.ready(0)


def run_cell(kernel: KernelHandle, code: str, limits: CellLimits, listen: Listen | None = None) -> CellResult:
    """Run `code` on `kernel`, blocking (see the module docstring). Never raises for what the cell (or the kernel)
    sent."""
    return drive(cell_steps(kernel, code, limits, listen))


def _prepare(channels: KernelChannels) -> list[str]:
    """Before a cell: drop what an earlier cell left (a late message after a timeout is not ours), within a small
    bound, and make sure the streams are clean; return the notices that calls for."""
    channels.discard_pending()
    notices = []
    if not channels.resync():
        notices.append("the kernel's IOPub channel did not answer a check before the cell; output may be missing")
    channels.take_problems()
    return notices


def _execute_fast(channels: KernelChannels, code: str, timeout: float) -> Any:
    """Send the execute_request as far as the socket takes it now; a kernel that is not reading gets the rest
    from a worker thread (`Later`), so it cannot hold the event loop."""
    begun = channels.execute_nowait(code)
    if begun is None:
        return Later()  # not connected: `execute` connects (a handshake may wait)
    msg_id, rest = begun
    if not rest:
        return msg_id

    def finish() -> str:
        channels.finish_send(rest, timeout=timeout)
        return msg_id

    return Later(finish)


def cell_steps(kernel: KernelHandle, code: str, limits: CellLimits, listen: Listen | None = None) -> CellSteps:
    """The loop itself, as steps for `drive`/`adrive`; returns the cell's result."""
    out = OutputCollector(max_output_chars=limits.max_output_chars, max_stored_chars=limits.max_stored_chars,
                          max_display_bytes=limits.max_display_bytes, budget=limits.budget, listen=listen)
    started = time.monotonic()
    channels = kernel.channels
    out.notices.extend((yield Call(lambda: _prepare(channels),
                                   fast=lambda: _prepare(channels) if channels.clean() else Later())))
    sendable = clean_text(code)
    if sendable != code:
        out.notices.append("the code held lone surrogates (text that is not valid Unicode); they were replaced "
                           "with U+FFFD")
    send_timeout = min(10.0, limits.timeout or 10.0)
    try:
        msg_id = yield Call(lambda: channels.execute(sendable, timeout=send_timeout),
                            fast=lambda: _execute_fast(channels, sendable, send_timeout))
    except ChannelError as exc:
        return (yield from _unreachable(kernel, out, started, exc))
    deadline = started + limits.timeout if limits.timeout is not None else None
    idle = False
    idle_at = 0.0
    reply: dict | None = None
    reply_at = 0.0
    interrupted_at: float | None = None
    last_health = started
    last_iopub = started
    status: CellStatus | None = None
    timeout_action: str | None = None
    restarted = False
    status_lost = False

    while True:
        now = time.monotonic()
        if idle and reply is not None:
            break
        if reply is not None and now - max(reply_at, last_iopub) > _IDLE_AFTER_REPLY_S:
            out.notices.append("the kernel's final status message was lost; output may be incomplete")
            status_lost = True
            break
        if idle and reply is None and now - idle_at > _REPLY_AFTER_IDLE_S:
            # IOPub says the cell is done; its shell reply (status and count only) is not coming
            out.notices.append("the kernel's reply to the cell was lost; its output is complete")
            channels.reset_shell()
            break
        if deadline is not None and now >= deadline:
            if interrupted_at is None:
                interrupted_at = now
                timeout_action = "interrupted"
                yield Call(kernel.send_interrupt)
                deadline = now + limits.interrupt_grace
                continue
            status, timeout_action, restarted = "timeout", "restarted", True
            out.fate.append(f"the cell ran past its {limits.timeout:g}s timeout and did not stop within "
                               f"{limits.interrupt_grace:g}s of an interrupt: the kernel was killed and "
                               "restarted, and every variable was lost")
            yield Call(kernel.restart_kernel)
            break
        wait = _HEALTH_EVERY_S if deadline is None else min(_HEALTH_EVERY_S, max(0.0, deadline - now))
        has_iopub, has_shell, has_control = yield Wait(channels, wait)
        if has_iopub:
            last_iopub = time.monotonic()
            for msg in channels.read_iopub(msg_id):
                if msg.get("foreign"):
                    continue
                if "malformed" in msg:
                    out.malformed(f"a message with {msg['malformed']}")
                elif "oversized" in msg:
                    out.add_oversized(msg["msg_type"], msg["oversized"])
                elif msg["msg_type"] == "status":
                    if msg["content"].get("execution_state") == "idle" and not idle:
                        idle, idle_at = True, time.monotonic()
                else:
                    out.add(msg["msg_type"], msg["content"], msg["metadata"])
        if has_shell:
            for msg in channels.read_shell(msg_id):
                if not msg.get("foreign") and "malformed" not in msg and msg["msg_type"] == "execute_reply":
                    reply, reply_at = msg, time.monotonic()
        if has_control:
            channels.drain_control()
        if not (has_iopub or has_shell) or time.monotonic() - last_health > 4 * _HEALTH_EVERY_S:
            last_health = time.monotonic()
            if reply is None or not idle:
                ended = yield Call(kernel.exit_status)
                if ended is not None:
                    status = "oom" if ended.oom else "died"
                    restarted = True
                    yield Call(kernel.restart_kernel)
                    out.fate.append(f"{ended.describe()}; {_lost(ended)}{_cleanup_note(kernel)}")
                    break

    if restarted:
        if timeout_action == "restarted":
            note = _cleanup_note(kernel)
            if note:
                out.fate[-1] += note
    else:
        for problem in channels.take_problems():
            out.notices.append(problem)
        if status_lost:
            channels.reset_iopub()  # out of step: the next cell starts on a clean connection
    if status is None:
        if interrupted_at is not None:
            status = "timeout"
            out.fate.append(f"the cell ran past its {limits.timeout:g}s timeout and was interrupted "
                               "(KeyboardInterrupt); variables are kept")
        elif out.error_name == "MemoryError":
            status = "oom"
        elif out.error_name or (reply is not None and reply["content"].get("status") == "error"):
            status = "error"
        else:
            status = "ok"
    if reply is not None and out.execution_count is None:
        out._count(reply["content"].get("execution_count"))
    return out.finish(status=status, duration_s=time.monotonic() - started, timeout_action=timeout_action,
                      restarted=restarted, state_lost=restarted)


def _lost(ended: ExitStatus) -> str:
    return ("the container was started again: every variable and every file in the workspace, /tmp and home were "
            "lost" if ended.container else "it was restarted and every variable was lost")


def _cleanup_note(kernel: KernelHandle) -> str:
    """What the restart cleaned up, as the backend reports it (`restart_note()`), e.g. leftover processes."""
    note = getattr(kernel, "restart_note", None)
    return f"; {note()}" if callable(note) and note() else ""


def _unreachable(kernel: KernelHandle, out: OutputCollector, started: float, exc: ChannelError) -> CellSteps:
    """The kernel did not take the cell (its socket is gone or it stopped reading): restart it, say so."""
    ended = yield Call(kernel.exit_status)
    why = ended.describe() if ended is not None else f"the kernel did not take the cell ({exc})"
    status: CellStatus = "oom" if ended is not None and ended.oom else "died"
    yield Call(kernel.restart_kernel)
    lost = _lost(ended) if ended is not None else "it was restarted and every variable was lost"
    out.fate.append(f"{why}; {lost}{_cleanup_note(kernel)}; the cell did not run")
    return out.finish(status=status, duration_s=time.monotonic() - started, restarted=True, state_lost=True)


class KernelSandbox(BaseSandbox):
    """A sandbox whose cells run on a Jupyter kernel through `run_cell` (the Docker and local backends).

    Subclasses set `channels`, `interrupt_grace`, `max_stored_chars`, `max_display_bytes`, `record_limits` and
    `_lock`, and provide `send_interrupt()`, `restart_kernel()` and `exit_status()` (the `KernelHandle`
    protocol).
    """

    channels: KernelChannels | None
    interrupt_grace: float
    max_stored_chars: int
    max_display_bytes: int
    record_limits: RecordLimits
    _lock: threading.RLock
    _record_budget: RecordBudget | None = None

    def _on_cell_start(self) -> None:
        """Called under the lock just before a cell is sent (Docker notes the time, for OOM events)."""

    def restart_note(self) -> str:
        return ""

    @property
    def record_budget(self) -> RecordBudget:
        """What this sandbox's cells have stored so far, against `record_limits` (over the whole session)."""
        if self._record_budget is None:
            self._record_budget = RecordBudget(getattr(self, "record_limits", None) or RecordLimits())
        return self._record_budget

    def _run_cell(self, code: str, *, timeout: float | None, listen: Listen | None = None) -> CellResult:
        with self._lock:
            return drive(self.cell_steps(code, timeout=timeout, listen=listen))

    def cell_steps(self, code: str, *, timeout: float | None, listen: Listen | None = None) -> CellSteps:
        """This sandbox's cell loop as steps (`drive` runs them blocking, `adrive` on an event loop); the caller
        holds the sandbox's lock (or, async, its own) while they run."""
        if self.channels is None:  # an earlier restart failed half-way: try once more
            yield Call(self.restart_kernel)  # type: ignore[attr-defined]
        self._on_cell_start()
        limits = CellLimits(timeout=timeout, interrupt_grace=self.interrupt_grace,
                            max_output_chars=self.max_output_chars, max_stored_chars=self.max_stored_chars,
                            max_display_bytes=self.max_display_bytes, budget=self.record_budget)
        return (yield from cell_steps(self, code, limits, listen))  # type: ignore[arg-type]

    def _interrupt(self) -> None:
        self.send_interrupt()  # type: ignore[attr-defined]

    def _restart(self) -> None:
        with self._lock:
            self.restart_kernel()  # type: ignore[attr-defined]
