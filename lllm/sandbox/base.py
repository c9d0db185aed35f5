"""The sandbox contract: the `Sandbox` protocol, its lifecycle enum, `CellResult`, `SandboxLimits`, a thin base.

Every backend (`DockerSandbox`, `LocalSandbox`, `FakeSandbox`) subclasses `BaseSandbox`, which supplies the
lifecycle (new -> running -> closed, `SandboxClosed` after close), the context-manager methods, the tracer
hook (one `CellRecord` per cell) and argument checks, in the way httpx's `BaseTransport` does; a backend
implements the `_start`/`_run_cell`/`_interrupt`/`_restart`/`_close` hooks and the file operations.
"""

from __future__ import annotations

import base64
import enum
import re
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from lllm.errors import SandboxClosed, SandboxError, UsageError
from lllm.records import CellRecord
from lllm.sandbox.live import Listeners, OutputCallback

if TYPE_CHECKING:
    from lllm.sandbox.commands import CommandResult

CellStatus = Literal["ok", "error", "timeout", "oom", "died"]
TimeoutAction = Literal["interrupted", "restarted"]

DEFAULT_MAX_OUTPUT_CHARS = 20_000
"""How much of a cell's output `CellResult.text` (what a model sees) keeps."""
RECORD_ERROR_CHARS = 2_000
"""How much of a cell's error (name and message, or the sandbox's notices) its log record keeps."""


_RECORD_NOTICES = 50
"""The most notices of one cell its log record keeps."""
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class SandboxState(str, enum.Enum):
    """Where a sandbox is in its life. A sandbox only moves forward: new -> running -> closed."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class CellImage(BaseModel):
    """An image a cell displayed (a matplotlib figure, `IPython.display.Image`)."""

    model_config = ConfigDict(frozen=True)

    mime: Literal["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"]
    data: str
    """Base64, as the kernel sent it (SVG: the XML text)."""


class CellResult(BaseModel):
    """What running one cell produced. `text` is what a model should see; the other fields are for code."""

    status: CellStatus
    """`ok`; `error` (an exception in the cell); `timeout` (see `timeout_action`); `oom` (the kernel ran out of
    memory: killed and restarted, or a `MemoryError`); `died` (the kernel process died: `os._exit`, segfault)."""
    stdout: str = ""
    """The stdout stream, capped at the sandbox's stored-output limit (see `truncated`)."""
    stderr: str = ""
    """The stderr stream, capped like stdout."""
    result: str | None = None
    """The `text/plain` form of the cell's last expression, if it had a value."""
    result_data: dict[str, Any] = Field(default_factory=dict)
    """The last expression's full MIME bundle."""
    display_data: list[dict[str, Any]] = Field(default_factory=list)
    """MIME bundles of everything displayed (figures, `display(...)`), in order."""
    images: list[CellImage] = Field(default_factory=list)
    """The images among the displays and the result, ready to show a model."""
    error_name: str | None = None
    """The exception's class name, e.g. `ZeroDivisionError`."""
    error_value: str | None = None
    """The exception's message."""
    traceback: list[str] = Field(default_factory=list)
    """The traceback lines, without terminal colour codes."""
    execution_count: int | None = None
    duration_s: float = 0.0
    truncated: bool = False
    """Some output was dropped (over a cap, or a display too large); `notices` says what."""
    output_chars: int = 0
    """How many characters of stream output the cell produced in all, kept or not."""
    timeout_action: TimeoutAction | None = None
    """For a timeout: `interrupted` (KeyboardInterrupt stopped it; state kept) or `restarted` (it ignored the
    interrupt, so the kernel was killed and restarted)."""
    restarted: bool = False
    """The kernel was restarted while or after running this cell (timeout, OOM, death)."""
    state_lost: bool = False
    """Variables and imports from earlier cells are gone (the kernel was restarted)."""
    notices: list[str] = Field(default_factory=list)
    """Human-readable notes on what the sandbox did: truncation, dropped displays, restarts."""
    text: str = ""
    """The model's view: output, result, error and notices, all within `max_output_chars` (see
    `lllm.sandbox.render.render_cell`, which can render it again with a header or another cap)."""

    _view: dict[str, Any] | None = PrivateAttr(default=None)
    """The output's kept head and tail and the error text behind `text`, for `render_cell`."""

    @property
    def ok(self) -> bool:
        """True when the cell ran to the end without an error."""
        return self.status == "ok"


def _record_images(images: list[CellImage]) -> tuple[list[dict[str, str]], list[str]]:
    """A cell's images as its log record keeps them (`{"mime", "data"}`, base64 without whitespace; an SVG's
    XML text is base64-encoded so that every record image is), and notices for those left out."""
    from lllm.records import IMAGE_BYTES, MAX_IMAGES

    kept: list[dict[str, str]] = []
    left_out: list[str] = []
    for n, image in enumerate(images, 1):
        if len(kept) >= MAX_IMAGES:
            left_out.append(f"{len(images) - n + 1} more image(s) not kept in the log (at most {MAX_IMAGES} a cell)")
            break
        if image.mime == "image/svg+xml":
            data = base64.b64encode(image.data.encode("utf-8", "replace")).decode("ascii")
        else:
            data = "".join(image.data.split())
            if not _BASE64.fullmatch(data):
                left_out.append(f"image {n} ({image.mime}) not kept in the log: its data is not base64")
                continue
        if len(data) > IMAGE_BYTES:
            left_out.append(f"image {n} ({image.mime}, {len(data):,} bytes of base64) not kept in the log: over "
                            f"{IMAGE_BYTES:,}")
            continue
        kept.append({"mime": image.mime, "data": data})
    return kept, left_out


class SandboxLimits(BaseModel):
    """Resource limits for one sandbox (Docker backend; `LocalSandbox` enforces none of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: str = "1g"
    """Memory limit, Docker notation (`256m`, `1g`); swap is set to the same, so there is no swap. The tmpfs
    workspace and /tmp count against it too."""
    cpus: float = 1.0
    """CPU share (`--cpus`)."""
    pids: int = 256
    """Most processes/threads at once (`--pids-limit`): a fork bomb stops here."""
    workspace_size: str = "256m"
    """Size of the writable workspace `/home/sandbox/work` (tmpfs)."""
    tmp_size: str = "64m"
    """Size of `/tmp` (tmpfs)."""
    home_size: str = "32m"
    """Size of the home directory `/home/sandbox` outside the workspace (tmpfs: dotfiles, caches)."""
    nofile: int = 1024
    """Open files per process."""
    packages_size: str = "512m"
    """Size of the package directory (tmpfs) pip installs into when packages come through the host
    (`DockerSandbox(packages="index")`); it counts against `memory` like the other tmpfs."""

    @field_validator("memory", "workspace_size", "tmp_size", "home_size", "packages_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value


class RecordLimits(BaseModel):
    """How much of what cells send back the host keeps (in `CellResult`s, the notebook, the log), applied as it
    arrives: per cell, and over a sandbox's whole session. What passes a budget is dropped with a notice; the
    model's capped view of each cell is not counted (it is bounded by `max_output_chars` anyway)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cell_display_bytes: int = Field(default=16 << 20, ge=0)
    """All displays and the result of one cell together (one display alone is capped by `max_display_bytes`)."""
    cell_images: int = Field(default=8, ge=0)
    """Images of one cell handed on as images (to a model); the rest stay in the notebook only."""
    error_chars: int = Field(default=20_000, ge=1000)
    """Characters kept of one error: its message and the end of its traceback together."""
    session_stored_chars: int = Field(default=32_000_000, ge=0)
    """Characters of stream output and error text stored over the whole session."""
    session_display_bytes: int = Field(default=64 << 20, ge=0)
    """Bytes of displays and results (figures included) stored over the whole session."""


def parse_size(value: str | int) -> int:
    """Bytes in a Docker-style size (`512m`, `1g`, `64k`, `1048576`).

    Raises:
        UsageError: the value is not a size.
    """
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise UsageError(f"{value!r} is not a size; write it like '512m' or '1g'") from None


USE_OPTIONS = ("cell_timeout", "max_output_chars", "tracer", "agent")
"""Options that belong to one use of a sandbox rather than to how it was started (see `BaseSandbox.configure`)."""


class NoSessionDir(UsageError, AttributeError):
    """`session_dir` read before `start()` (also an AttributeError, so `hasattr`/`isinstance` checks work)."""


@runtime_checkable
class Sandbox(Protocol):
    """What every sandbox backend offers. Use it as a context manager, or call `start()`/`close()`."""

    session_dir: Path

    @property
    def state(self) -> SandboxState: ...

    def start(self) -> None: ...

    def run_cell(self, code: str, *, timeout: float | None = None, on_stdout: OutputCallback | None = None,
                 on_stderr: OutputCallback | None = None, on_display: OutputCallback | None = None) -> CellResult: ...

    def run_command(self, command: str | Sequence[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                    timeout: float | None = None, stdin: str | bytes | None = None,
                    on_stdout: OutputCallback | None = None,
                    on_stderr: OutputCallback | None = None) -> CommandResult: ...

    def interrupt(self) -> None: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...

    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str: ...

    def download(self, path: str) -> bytes: ...

    def download_dir(self, path: str, dest: str | Path) -> Path: ...

    def list_files(self, path: str = ".") -> list[str]: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class BaseSandbox:
    """Lifecycle, context manager, tracing and argument checks shared by every backend.

    Args:
        cell_timeout: default timeout of `run_cell` in seconds (None: no limit).
        max_output_chars: cap of `CellResult.text`.
        tracer: called with a `lllm.records.CellRecord` after each cell (e.g. a LogStore's `record`).
        agent: the agent name written into those records.
    """

    kind: str = "base"
    _streams_cached: ClassVar[bool | None] = None
    cell_timeout: float | None
    max_output_chars: int
    tracer: Any
    agent: str | None
    guest_uid: int | None = None
    """The uid the kernel runs as when it is not this process's user (files written for the guest, like the
    gateway token, are given to it); None: the kernel runs as this user."""

    def __init__(self, *, cell_timeout: float | None = 60.0, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
                 tracer: Any = None, agent: str | None = None) -> None:
        self.configure(cell_timeout=cell_timeout, max_output_chars=max_output_chars, tracer=tracer, agent=agent)
        self.sandbox_id: str = ""
        self._state = SandboxState.NEW
        self._session_dir: Path | None = None

    def configure(self, **use: Any) -> None:
        """Set the per-use options (`USE_OPTIONS`: cell_timeout, max_output_chars, tracer, agent), e.g. on a
        sandbox a pool started ahead of time, when it is handed to its user (`SandboxPool.acquire(**use)`).

        Raises:
            UsageError: an option that is not per-use, or max_output_chars under 100.
        """
        unknown = sorted(set(use) - set(USE_OPTIONS))
        if unknown:
            raise UsageError(f"{unknown[0]!r} is not a per-use sandbox option; those are {list(USE_OPTIONS)!r}")
        if "max_output_chars" in use and use["max_output_chars"] < 100:
            raise UsageError(f"max_output_chars={use['max_output_chars']!r} is too small; use at least 100")
        for key, value in use.items():
            setattr(self, key, value)

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def state(self) -> SandboxState:
        """`new`, `running` or `closed`."""
        return self._state

    @property
    def session_dir(self) -> Path:
        """The per-session host directory (kernel sockets, gateway socket and token). Exists after `start()`."""
        if self._session_dir is None:
            raise NoSessionDir(f"{type(self).__name__} has no session_dir before start(); call start() first")
        return self._session_dir

    def start(self) -> None:
        """Bring the sandbox up (container and kernel ready). Idempotent while running.

        Raises:
            SandboxClosed: the sandbox was closed.
            SandboxStartError: the container or kernel did not come up.
        """
        if self._state is SandboxState.RUNNING:
            return
        self._check_not_closed("start")
        self._start()
        self._state = SandboxState.RUNNING

    def close(self) -> None:
        """Destroy the sandbox (container, kernel, session directory). Safe to call twice."""
        if self._state is SandboxState.CLOSED:
            return
        try:
            self._close()
        finally:
            self._state = SandboxState.CLOSED

    def __enter__(self) -> BaseSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten sandbox must not outlive its owner
        try:
            if getattr(self, "_state", SandboxState.CLOSED) is SandboxState.RUNNING:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sandbox_id or '-'} {self._state.value}>"

    # -- cells -------------------------------------------------------------------------------------------------
    def run_cell(self, code: str, *, timeout: float | None | object = ..., on_stdout: OutputCallback | None = None,
                 on_stderr: OutputCallback | None = None, on_display: OutputCallback | None = None) -> CellResult:
        """Run `code` in the kernel and collect what it produced.

        Args:
            code: Python source (IPython syntax: `%magic` and `!shell` lines work as in Jupyter).
            timeout: seconds before the cell is interrupted; `None` for no limit; not given: `cell_timeout`.
            on_stdout, on_stderr: called with each piece of text the cell prints, while it runs (see
                `lllm.sandbox.live`: every piece, also past the caps on what the result keeps).
            on_display: called with each display's MIME bundle (a figure, `display(...)`) while the cell runs.

        Returns:
            The result: `status` says ok/error/timeout/oom/died; the sandbox stays usable in every case.

        Raises:
            SandboxClosed: the sandbox was closed. SandboxError: the sandbox is broken beyond a restart.
            Whatever a callback raised, after the cell has run to its end (the callback is not called again).
        """
        limit = self._cell_arguments(code, timeout)
        listeners = self._listeners("cell", on_stdout=on_stdout, on_stderr=on_stderr, on_display=on_display)
        started = time.time()
        listeners.start(code)
        if self._streams_cells():
            result = self._run_cell(code, timeout=limit,  # type: ignore[call-arg]  # checked: it takes listen
                                    listen=listeners if listeners.active else None)
        else:  # a backend that cannot stream: its output reaches the listeners when the cell ends
            result = self._run_cell(code, timeout=limit)
            replay_output(result, listeners)
        if self._pending_notices:
            result = self._with_pending_notices(result)
        self._after_cell(code, result, started, listeners)
        return result

    def _cell_arguments(self, code: str, timeout: float | None | object) -> float | None:
        """Check a run_cell call; return the timeout in force."""
        if not isinstance(code, str):
            raise UsageError(f"run_cell() takes the code as a str, got {type(code).__name__}")
        self._require_running("run_cell")
        limit = self.cell_timeout if timeout is ... else timeout
        if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
            raise UsageError(f"timeout={limit!r} must be a positive number of seconds or None")
        return limit

    def _listeners(self, what: Literal["cell", "command"], *, deferred: bool = False,
                   **callbacks: OutputCallback | None) -> Listeners:
        return Listeners({k.removeprefix("on_"): v for k, v in callbacks.items()}, sandbox_id=self.sandbox_id,
                         agent=self.agent, what=what, deferred=deferred)

    def _after_cell(self, code: str, result: CellResult, started: float, listeners: Listeners) -> None:
        """What follows every cell: the watchers hear its end, the tracer gets its record, and a callback's
        exception is raised."""
        listeners.end(result.status, result.duration_s)
        if self.tracer is not None:
            self._record(code, result, started)
        listeners.raise_failure(result.status)

    @classmethod
    def _streams_cells(cls) -> bool:
        """Whether this backend's `_run_cell` takes `listen=` (and so hands output on while the cell runs)."""
        cached = cls.__dict__.get("_streams_cached")
        if cached is None:  # per class: a subclass may override _run_cell
            import inspect

            cached = "listen" in inspect.signature(cls._run_cell).parameters
            cls._streams_cached = cached
        return bool(cached)

    _pending_notices: list[str] = []

    def add_notice(self, text: str) -> None:
        """Put `text` first in the notices of the next cell's result (e.g. what a resume could not restore)."""
        self._pending_notices = [*self._pending_notices, text]

    def _with_pending_notices(self, result: CellResult) -> CellResult:
        from lllm.sandbox.render import render_cell

        notes, self._pending_notices = self._pending_notices, []
        result.notices[:0] = notes
        result.text = render_cell(result, max_chars=self.max_output_chars)
        return result

    def _record(self, code: str, result: CellResult, started: float) -> None:
        """Send the cell's `CellRecord` to the tracer: its code, the model's view of its output (`CellResult.text`,
        capped at `PAYLOAD_CHARS`), its images (those the record budgets let through to `result.images`, at most
        `MAX_IMAGES`, each at most `IMAGE_BYTES` of base64) and its notices. Every text is sanitised and the
        error summary capped (`RECORD_ERROR_CHARS`), so what the cell sent cannot make the row fail to insert;
        should the record still be refused for its content, a plain one without the payloads is sent instead."""
        from lllm.records import PAYLOAD_CHARS, cap
        from lllm.sandbox._text import clean_text, cut_middle

        error = f"{result.error_name}: {result.error_value}" if result.error_name else None
        if error is None and result.status in ("timeout", "oom", "died"):
            error = "; ".join(result.notices) or result.status
        fields = dict(agent=self.agent, sandbox_id=self.sandbox_id, code=clean_text(code), status=result.status,
                      duration_s=result.duration_s, output_chars=result.output_chars, truncated=result.truncated,
                      started_at=started)
        images, left_out = _record_images(result.images)
        notices = [clean_text(cut_middle(n, RECORD_ERROR_CHARS)) for n in result.notices[:_RECORD_NOTICES]]
        if len(result.notices) > _RECORD_NOTICES:
            notices.append(f"... and {len(result.notices) - _RECORD_NOTICES} more notices (not kept in the log)")
        try:
            self.tracer(CellRecord(**fields, error=clean_text(cut_middle(error, RECORD_ERROR_CHARS))
                                   if error is not None else None,
                                   output=clean_text(cap(result.text, PAYLOAD_CHARS)) if result.text else None,
                                   images=images, notices=notices + left_out))
        except (UnicodeError, ValueError, TypeError) as exc:
            self.tracer(CellRecord(**fields, error=f"(the cell's record could not be made: {type(exc).__name__})"))

    # -- commands ----------------------------------------------------------------------------------------------
    def run_command(self, command: str | Sequence[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                    timeout: float | None | object = ..., stdin: str | bytes | None = None,
                    on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None) -> CommandResult:
        """Run a process in the sandbox beside the kernel (not through it), with the sandbox's limits and user.

        Args:
            command: an argv list (run as it is) or a command line (run with `/bin/sh -c`).
            cwd: where it starts: relative to the workspace (the default), or an absolute path.
            env: variables added to the sandbox's environment for this process.
            timeout: seconds before it is killed with every process it started; None: no limit; not given:
                `cell_timeout`.
            stdin: what it reads on stdin (then end of file); None: nothing.
            on_stdout, on_stderr: called with each piece of its output while it runs.

        Returns:
            `CommandResult`: `status` ok/error/timeout/oom, `exit_code`, `stdout`, `stderr` (capped while they
            stream, like a cell's), `duration_s`. A command that fails is a result, not an exception. When it
            ends, whatever it left running in its process group or session is killed.

        Raises:
            UsageError: a malformed command, env or timeout. SandboxClosed: the sandbox was closed.
            SandboxError: the sandbox could not start the process. Whatever a callback raised, afterwards.
        """
        args = self._command_arguments(command, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
        listeners = self._listeners("command", on_stdout=on_stdout, on_stderr=on_stderr)
        listeners.start(command if isinstance(command, str) else shlex.join(args["argv"]))
        result = self._run_command(**args, listen=listeners if listeners.active else None)
        listeners.end(result.status, result.duration_s)
        listeners.raise_failure(result.status)
        return result

    def _command_arguments(self, command: str | Sequence[str], *, cwd: str | None, env: dict[str, str] | None,
                           timeout: float | None | object, stdin: str | bytes | None) -> dict[str, Any]:
        """Check a run_command call; return the keyword arguments of `_run_command` (all but `listen`)."""
        from lllm.sandbox.commands import check_env, command_argv

        argv = command_argv(command)
        variables = check_env(env)
        if cwd is not None and (not isinstance(cwd, str) or not cwd or "\x00" in cwd):
            raise UsageError(f"cwd={cwd!r} must be a path (relative to the workspace, or absolute)")
        if stdin is not None and not isinstance(stdin, (str, bytes)):
            raise UsageError(f"stdin must be str, bytes or None, got {type(stdin).__name__}")
        self._require_running("run_command")
        limit = self.cell_timeout if timeout is ... else timeout
        if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
            raise UsageError(f"timeout={limit!r} must be a positive number of seconds or None")
        return {"argv": argv, "cwd": cwd, "env": variables, "timeout": limit,
                "stdin": stdin.encode() if isinstance(stdin, str) else stdin}

    def _run_command(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                     stdin: bytes | None, listen: Listeners | None) -> CommandResult:
        raise UsageError(f"{type(self).__name__} runs no commands (this backend does not implement run_command)")

    def interrupt(self) -> None:
        """Send a KeyboardInterrupt to the running cell (from another thread)."""
        self._require_running("interrupt")
        self._interrupt()

    def restart(self) -> None:
        """Kill the kernel and start a fresh one: every variable is lost; files in the workspace stay."""
        self._require_running("restart")
        self._restart()

    # -- helpers for backends ----------------------------------------------------------------------------------
    def _check_not_closed(self, what: str) -> None:
        if self._state is SandboxState.CLOSED:
            raise SandboxClosed(f"{what}() on closed sandbox {self.sandbox_id!r}; a closed sandbox is never "
                                "reused: create (or acquire from the pool) a new one", sandbox_id=self.sandbox_id)

    def _require_running(self, what: str) -> None:
        self._check_not_closed(what)
        if self._state is SandboxState.NEW:
            raise UsageError(f"{what}() before start() on {type(self).__name__}; call start() or use it in a "
                             "`with` block")

    # -- backend hooks ---------------------------------------------------------------------------------------------
    def _start(self) -> None:
        raise NotImplementedError

    def _run_cell(self, code: str, *, timeout: float | None) -> CellResult:
        raise NotImplementedError

    def _interrupt(self) -> None:
        raise NotImplementedError

    def _restart(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        """Copy a host file or folder (a path), or bytes, into the workspace at `dest`; return its relative path.

        A folder goes as one archive and lands as `dest/...` (`dest` defaults to the folder's name, as it does to
        the file's name for a file); bytes need a `dest`. Symlinks and special files (FIFOs, devices, sockets)
        are refused, inside a folder too, and so is anything larger than the workspace (`SandboxLimits.
        workspace_size`): the error says so before anything is sent.

        Raises:
            SandboxFileError: `dest` leaves the workspace, `src` is not a readable regular file or folder, holds a
                link or special file, or is too large.
        """
        raise NotImplementedError

    def download(self, path: str) -> bytes:
        """Read a file from the workspace (relative path) and return its bytes.

        Raises:
            SandboxFileError: the path or a symlink on it leaves the workspace, or there is no such file.
        """
        raise NotImplementedError

    def download_dir(self, path: str, dest: str | Path) -> Path:
        """Copy a folder of the workspace to the host folder `dest` (created; it must not exist, or be empty);
        return `dest`.

        Only regular files and folders come back. The archive the sandbox sends is checked member by member on
        the host before anything is written (no absolute paths, no `..`, no links, no devices), and files are
        created only under `dest`, never through a link.

        Raises:
            SandboxFileError: the folder leaves the workspace, holds a link or special file, is too large, or the
                archive is malformed; `dest` is a non-empty folder or not a folder.
        """
        raise NotImplementedError

    def list_files(self, path: str = ".") -> list[str]:
        """Every file under `path` in the workspace, relative to the workspace, sorted."""
        raise NotImplementedError


def replay_output(result: CellResult, listeners: Listeners) -> None:
    """For a backend that cannot stream: hand the finished cell's output to the listeners in one go."""
    if not listeners.active:
        return
    if result.stdout:
        listeners("stdout", result.stdout)
    if result.stderr:
        listeners("stderr", result.stderr)
    for bundle in result.display_data:
        listeners("display", bundle)


__all__ = ["BaseSandbox", "CellImage", "CellResult", "CellStatus", "DEFAULT_MAX_OUTPUT_CHARS", "RecordLimits",
           "Sandbox", "SandboxError", "SandboxLimits", "SandboxState", "USE_OPTIONS", "parse_size"]
