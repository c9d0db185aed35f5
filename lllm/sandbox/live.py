"""Watching a cell or command while it runs: per-call callbacks, process-wide watchers, and a terminal echo.

`run_cell(code, on_stdout=..., on_stderr=..., on_display=...)` and `run_command(...)` call their callbacks with
each piece of output as it arrives, from the thread that runs the call (the async sandboxes call them on their
event loop, and await them when they are coroutine functions). Callbacks see every piece (text cleaned of lone
surrogates, display bundles as the notebook keeps them), also past the caps on what the result keeps: that is
how a long log is streamed to a file. A callback that raises is not called again for that call; the call runs
to its end (the kernel is left in a known state) and then the callback's exception is raised, with a note.

`watch_cells(fn)` is for code that does not make the call itself, such as `lllm run` showing what an agent's
cells print: within the block, `fn(CellEvent)` sees every cell and command that sandboxes run in this context
(threads started with a copy of it, like the workers of a batch, included), from `start` through its output to
`end`. `TerminalEcho` is such a watcher: it prints the output, line by line and prefixed with the agent, to a
stream through `lllm._textsafe` (control characters made visible), within a per-cell budget.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Literal

__all__ = ["CellEvent", "Listeners", "OutputCallback", "TerminalEcho", "watch_cells"]

EventKind = Literal["start", "stdout", "stderr", "display", "end"]
OutputCallback = Callable[[Any], Any]
"""`on_stdout(text)`, `on_stderr(text)`, `on_display(bundle)`; an async sandbox also takes coroutine functions."""


@dataclass(frozen=True)
class CellEvent:
    """One thing a watcher sees: a cell or command starting, a piece of its output, or its end."""

    kind: EventKind
    sandbox_id: str
    agent: str | None
    what: Literal["cell", "command"] = "cell"
    text: str = ""
    """`start`: the code (or the command line); `stdout`/`stderr`: the piece of output; `end`: the status."""
    data: dict[str, Any] = field(default_factory=dict)
    """`display`: the MIME bundle; `end`: `{"status", "duration_s"}`."""


Watcher = Callable[[CellEvent], None]
_WATCHERS: contextvars.ContextVar[tuple[Watcher, ...]] = contextvars.ContextVar("lllm_cell_watchers", default=())


@contextlib.contextmanager
def watch_cells(watcher: Watcher) -> Iterator[Watcher]:
    """Within the block, `watcher(CellEvent)` sees every cell and command run in this context (see the module
    docstring). Watchers nest; an exception in one is swallowed (it must not change what the cell does)."""
    token = _WATCHERS.set((*_WATCHERS.get(), watcher))
    try:
        yield watcher
    finally:
        _WATCHERS.reset(token)


class Listeners:
    """The callbacks of one call and the watchers in force, fed by the cell loop (or the command pump).

    Args:
        callbacks: `{"stdout": fn, "stderr": fn, "display": fn}`, None for those not given.
        sandbox_id, agent, what: for the watchers' events.
        deferred: queue the calls instead of making them (the async driver makes them on its loop: `aflush`).
    """

    def __init__(self, callbacks: dict[str, OutputCallback | None], *, sandbox_id: str = "", agent: str | None = None,
                 what: Literal["cell", "command"] = "cell", deferred: bool = False) -> None:
        for name, fn in callbacks.items():
            if fn is not None and not callable(fn):
                from lllm.errors import UsageError

                raise UsageError(f"on_{name}={fn!r} is not callable; pass a function of the {name} piece or None")
        self.callbacks = {k: v for k, v in callbacks.items() if v is not None}
        self.watchers = _WATCHERS.get()
        self.sandbox_id = sandbox_id
        self.agent = agent
        self.what = what
        self.deferred = deferred
        self.pending: list[tuple[str, Any]] = []
        self.failure: tuple[str, BaseException] | None = None
        self.notify: Callable[[], Any] | None = None
        """Deferred: called (from any thread) when a piece is queued, so an event loop can deliver it."""
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Anyone listening at all (else the loop skips building events)."""
        return bool(self.callbacks or self.watchers)

    def start(self, text: str) -> None:
        self._watch(CellEvent("start", self.sandbox_id, self.agent, self.what, text=text))

    def end(self, status: str, duration_s: float) -> None:
        self._watch(CellEvent("end", self.sandbox_id, self.agent, self.what, text=status,
                              data={"status": status, "duration_s": duration_s}))

    def __call__(self, kind: str, value: Any) -> None:
        """One piece of output: `kind` is stdout, stderr or display."""
        if self.deferred:
            with self._lock:
                self.pending.append((kind, value))
            if self.notify is not None:
                self.notify()
            return
        self._deliver(kind, value)

    def _deliver(self, kind: str, value: Any) -> Any:
        if self.watchers:
            if kind == "display":
                self._watch(CellEvent("display", self.sandbox_id, self.agent, self.what, data=value))
            else:
                self._watch(CellEvent(kind, self.sandbox_id, self.agent, self.what, text=value))  # type: ignore[arg-type]
        fn = self.callbacks.get(kind)
        if fn is None:
            return None
        try:
            return fn(value)
        except Exception as exc:  # noqa: BLE001 - the user's callback: raised after the call ends
            self._failed(kind, exc)
            return None

    def _failed(self, kind: str, exc: BaseException) -> None:
        self.callbacks.pop(kind, None)
        if self.failure is None:
            self.failure = (kind, exc)

    async def aflush(self) -> None:
        """Make the queued calls (async driver), awaiting those that return an awaitable."""
        while True:
            with self._lock:
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            for kind, value in batch:
                outcome = self._deliver(kind, value)
                if inspect.isawaitable(outcome):
                    try:
                        await outcome
                    except Exception as exc:  # noqa: BLE001 - raised after the call ends
                        self._failed(kind, exc)

    def _watch(self, event: CellEvent) -> None:
        for watcher in self.watchers:
            try:
                watcher(event)
            except Exception:  # noqa: BLE001 - a broken watcher must not change what the cell does
                pass

    def raise_failure(self, status: str) -> None:
        """Re-raise the first exception a callback raised, noting that the call itself ran to its end."""
        if self.failure is None:
            return
        kind, exc = self.failure
        exc.add_note(f"(raised by the on_{kind} callback of a {self.what} in sandbox {self.sandbox_id!r}; it was not "
                     f"called again, and the {self.what} ran to its end with status {status!r})")
        raise exc


class TerminalEcho:
    """A watcher that prints the output of running cells and commands, line by line, prefixed with the agent.

    Everything goes through `lllm._textsafe.safe_writer` (a cell cannot drive the terminal). Each cell prints at
    most `max_lines` lines and `max_chars` characters here; past that one line says the rest is in the notebook.

    Args:
        stream: where to print (default: stderr at the time of each write).
        max_lines, max_chars: the per-cell budget.
    """

    def __init__(self, stream: IO[str] | None = None, *, max_lines: int = 200, max_chars: int = 20_000) -> None:
        self.stream = stream
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _EchoState] = {}

    def _out(self) -> IO[str]:
        from lllm._textsafe import safe_writer

        return safe_writer(self.stream if self.stream is not None else sys.stderr)

    def __call__(self, event: CellEvent) -> None:
        key = (event.sandbox_id, event.what)
        with self._lock:
            if event.kind == "start":
                self._open[key] = _EchoState(prefix=f"[{event.agent or event.sandbox_id}] ")
                first = event.text.strip().splitlines()[0][:120] if event.text.strip() else ""
                self._write(f"{self._open[key].prefix}{'$ ' if event.what == 'command' else '>>> '}{first}"
                            f"{' ...' if event.text.strip().count(chr(10)) else ''}\n")
                return
            state = self._open.get(key)
            if state is None:
                return
            if event.kind in ("stdout", "stderr"):
                state.partial += event.text
                *lines, state.partial = state.partial.split("\n")
                for line in lines:
                    self._line(state, line)
                if len(state.partial) > 4096:  # a long line without an end: show it in pieces
                    self._line(state, state.partial)
                    state.partial = ""
            elif event.kind == "display":
                plain = event.data.get("text/plain")
                kinds = ", ".join(sorted(k for k in event.data if k != "text/plain"))
                self._line(state, f"[display: {kinds or 'text'}] {plain if isinstance(plain, str) else ''}".rstrip())
            elif event.kind == "end":
                if state.partial:
                    self._line(state, state.partial)
                if state.cut:
                    self._write(f"{state.prefix}... ({state.cut} more lines not shown here)\n")
                if event.text != "ok":
                    self._write(f"{state.prefix}[{event.what} ended: {event.text}]\n")
                del self._open[key]

    def _line(self, state: _EchoState, line: str) -> None:
        if state.lines >= self.max_lines or state.chars >= self.max_chars:
            state.cut += 1
            return
        line = line[: self.max_chars - state.chars]
        state.lines += 1
        state.chars += len(line)
        self._write(f"{state.prefix}| {line}\n")

    def _write(self, text: str) -> None:
        out = self._out()
        out.write(text)
        out.flush()


@dataclass
class _EchoState:
    prefix: str
    partial: str = ""
    lines: int = 0
    chars: int = 0
    cut: int = 0
