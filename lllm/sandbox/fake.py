"""`FakeSandbox`: a Sandbox whose cells are answered by a function you pass, like httpx's `MockTransport`.

For tests of code that drives a sandbox (agents, tools, notebooks) without Docker or a kernel:

    def handler(code: str) -> CellResult | str:
        return "2" if code == "1+1" else CellResult(status="error", error_name="NameError", text="...")

    with FakeSandbox(handler) as sb:
        assert sb.run_cell("1+1").text == "2"
        assert sb.cells == ["1+1"]

A `str` answer becomes an `ok` result with that text as stdout and `text` (capped like a real sandbox's); the
`on_stdout`/`on_stderr`/`on_display` callbacks of `run_cell` get the answer's output when it is made (nothing
runs, so there is nothing to stream). `command_handler(argv)` answers `run_command` the same way (a
`CommandResult`, or a str: the stdout of a command that exited 0). Files live in memory with the same path rules
as the real backends. It has a real (empty) `session_dir`, so code that
puts a gateway socket there works unchanged. The default handler runs nothing and answers every cell with "".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Union

from lllm.errors import SandboxFileError, UsageError
from lllm.sandbox import files
from lllm.sandbox._output import OutputCollector
from lllm.sandbox._rundir import make_session_dir, new_sandbox_id, remove_session_dir
from lllm.sandbox.base import DEFAULT_MAX_OUTPUT_CHARS, BaseSandbox, CellResult
from lllm.sandbox.commands import CommandResult
from lllm.sandbox.live import Listeners

FakeAnswer = Union[CellResult, str]
Handler = Callable[[str], FakeAnswer]
CommandHandler = Callable[[list[str]], Union[CommandResult, str]]

_WORKSPACE = "/home/sandbox/work"


def _empty(code: str) -> FakeAnswer:
    return ""


class FakeSandbox(BaseSandbox):
    """A sandbox that runs nothing: `handler(code)` answers each cell (see the module docstring).

    Args:
        handler: called with each cell's code; returns a `CellResult` or a str (stdout of an `ok` cell).
        files: initial workspace files, relative path -> bytes.
        command_handler: answers `run_command` with the argv (a str command line is `["/bin/sh", "-c", line]`);
            without one, `run_command` raises UsageError.
        env: recorded in `self.env` (nothing runs, so it has no effect).
        cell_timeout, max_output_chars, tracer, agent: as for the real backends.
    """

    __test__ = False
    kind = "fake"

    def __init__(self, handler: Handler | None = None, *, files: dict[str, bytes] | None = None,
                 env: dict[str, str] | None = None, cell_timeout: float | None = 60.0,
                 max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS, tracer: Any = None,
                 agent: str | None = None, command_handler: CommandHandler | None = None) -> None:
        super().__init__(cell_timeout=cell_timeout, max_output_chars=max_output_chars, tracer=tracer, agent=agent)
        if handler is not None and not callable(handler):
            raise UsageError(f"FakeSandbox(handler=...) takes a function of the cell's code, got {handler!r}")
        self.handler: Handler = handler or _empty
        self.env = dict(env or {})
        self.files: dict[str, bytes] = {}
        for name, data in (files or {}).items():
            self.files[self._rel(name)] = bytes(data)
        if command_handler is not None and not callable(command_handler):
            raise UsageError(f"FakeSandbox(command_handler=...) takes a function of the argv, got {command_handler!r}")
        self.command_handler = command_handler
        self.cells: list[str] = []
        """The code of every cell run, in order."""
        self.commands: list[list[str]] = []
        """The argv of every command run, in order."""
        self.timeouts: list[float | None] = []
        """The timeout each cell was given."""
        self.interrupts = 0
        self.restarts = 0

    def _rel(self, path: str) -> str:
        rel = files.clean_relative(path, workspace=_WORKSPACE)
        if rel == ".":
            raise SandboxFileError(f"{path!r} names the workspace itself; give a file name", path=path)
        return rel

    def _start(self) -> None:
        self.sandbox_id = new_sandbox_id()
        self._session_dir = make_session_dir(self.sandbox_id, chown=False)

    def _close(self) -> None:
        if self._session_dir is not None:
            remove_session_dir(self._session_dir)

    def _run_cell(self, code: str, *, timeout: float | None) -> CellResult:
        started = time.monotonic()
        self.cells.append(code)
        self.timeouts.append(timeout)
        answer = self.handler(code)
        if isinstance(answer, CellResult):
            return answer
        if not isinstance(answer, str):
            raise UsageError(f"FakeSandbox handler returned {type(answer).__name__}; return a CellResult or a str")
        out = OutputCollector(max_output_chars=self.max_output_chars, max_stored_chars=1_000_000,
                              max_display_bytes=8 << 20)
        out.execution_count = len(self.cells)
        if answer:
            out.add("stream", {"name": "stdout", "text": answer})
        return out.finish(status="ok", duration_s=time.monotonic() - started)

    def _run_command(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                     stdin: bytes | None, listen: Listeners | None) -> CommandResult:
        if self.command_handler is None:
            raise UsageError("this FakeSandbox runs no commands: give it command_handler=fn(argv) -> CommandResult | "
                             "str")
        self.commands.append(list(argv))
        answer = self.command_handler(list(argv))
        if isinstance(answer, str):
            answer = CommandResult(status="ok", exit_code=0, stdout=answer, argv=list(argv),
                                   output_bytes=len(answer.encode()))
        if not isinstance(answer, CommandResult):
            raise UsageError(f"FakeSandbox command_handler returned {type(answer).__name__}; return a "
                             "CommandResult or a str")
        if listen is not None:
            for name in ("stdout", "stderr"):
                if getattr(answer, name):
                    listen(name, getattr(answer, name))
        return answer

    def _interrupt(self) -> None:
        self.interrupts += 1

    def _restart(self) -> None:
        self.restarts += 1

    def upload(self, src: str | Path | bytes, dest: str | None = None) -> str:
        self._require_running("upload")
        rel = self._rel(files.default_dest(src, dest))
        if files.is_folder(src):
            from lllm.sandbox import _tarsafe

            try:
                entries, _ = _tarsafe.scan(str(src), limit=files.MAX_TRANSFER_BYTES)
            except _tarsafe.ArchiveError as exc:
                raise SandboxFileError(f"cannot upload folder {str(src)!r}: {exc}", path=str(src)) from None
            for name, kind in entries:
                if kind == "f":
                    self.files[f"{rel}/{name}"] = files.read_source(Path(src) / name)  # type: ignore[arg-type]
            return rel
        self.files[rel] = files.read_source(src)
        return rel

    def download_dir(self, path: str, dest: str | Path) -> Path:
        self._require_running("download_dir")
        rel = files.clean_relative(path, workspace=_WORKSPACE)
        inside = {name: data for name, data in self.files.items() if rel == "." or name.startswith(rel + "/")}
        if not inside:
            raise SandboxFileError(f"no folder {path!r} in the workspace; list_files() shows what is there", path=path)
        target = Path(dest)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise SandboxFileError(f"the destination {str(target)!r} is not a new or empty folder", path=str(target))
        for name, data in inside.items():
            out = target / (name if rel == "." else name[len(rel) + 1:])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        return target

    def download(self, path: str) -> bytes:
        self._require_running("download")
        rel = self._rel(path)
        if rel not in self.files:
            raise SandboxFileError(f"no file {path!r} in the workspace; list_files() shows what is there", path=path)
        return self.files[rel]

    def list_files(self, path: str = ".") -> list[str]:
        self._require_running("list_files")
        rel = files.clean_relative(path, workspace=_WORKSPACE)
        if rel == ".":
            return sorted(self.files)
        return sorted(name for name in self.files if name == rel or name.startswith(rel + "/"))
