"""`run_command`: a process in the sandbox beside the kernel, its `CommandResult`, and the host side that reads it.

A command is not run through the kernel (it would share the kernel's cell queue and its fate): a supervisor
(`lllm/sandbox/_command_guest.py`, sent as `python3 -I -c SOURCE`) is started beside it, by `docker exec` in
a container (the sandbox user, the container's limits) or as a subprocess in a LocalSandbox's workspace. It
runs the command in a new session, frames its output on its stdout, enforces the timeout by killing the
command's whole process group and session, and reports how the command ended on its stderr in one line
tagged with a nonce only the host knows. `CommandPump` here reads both streams: it keeps the output within
`max_stored_chars` per stream while it streams (draining the rest), hands every piece to the call's
listeners, and turns the report into a `CommandResult`. `run_local` is the LocalSandbox's side of it; the
container's is `DockerSandbox._run_command` over `lllm.sandbox._exec`.
"""

from __future__ import annotations

import codecs
import json
import marshal
import os
import secrets
import selectors
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from lllm.errors import UsageError

__all__ = ["CommandPump", "CommandResult", "CommandStatus", "GUEST_SOURCE", "command_argv", "command_request",
           "run_local"]

CommandStatus = Literal["ok", "error", "timeout", "oom"]
GUEST_SOURCE = (Path(__file__).with_name("_command_guest.py")).read_text(encoding="utf-8")
"""The supervisor's source, run as `python3 -I -S -c GUEST_SOURCE` (the standard library only, nothing of lllm,
not even site)."""
GUEST_ARGS = ["-I", "-S", "-c", GUEST_SOURCE]
BACKSTOP_S = 10.0
"""How long past its timeout the host waits for the supervisor's report before killing it from outside (code
in the sandbox, same uid, can stop the supervisor)."""
_HEADER = struct.Struct(">cI")
_MAX_FRAME = 1 << 20
_MAX_REPORT_BYTES = 64 << 10


class CommandResult(BaseModel):
    """How a `run_command` ended and what it printed."""

    status: CommandStatus
    """`ok` (exit code 0); `error` (another exit code, killed by a signal, or it could not start); `timeout` (it
    ran past its timeout: it was killed with its whole process group); `oom` (killed for memory)."""
    exit_code: int | None = None
    """The exit code; negative: killed by that signal; None: it never started, or its end was not seen."""
    stdout: str = ""
    """What it wrote to stdout (UTF-8, undecodable bytes replaced), the first `max_stored_chars` of it."""
    stderr: str = ""
    """The same for stderr."""
    duration_s: float = 0.0
    truncated: bool = False
    """Some output was not kept (over the cap); `notices` says how much."""
    output_bytes: int = 0
    """Bytes of output in all, kept or not."""
    argv: list[str] = Field(default_factory=list)
    """What ran (a string command runs as `["/bin/sh", "-c", command]`)."""
    notices: list[str] = Field(default_factory=list)
    """What the sandbox did besides running it: killed leftovers, output cut, a timeout."""

    @property
    def ok(self) -> bool:
        """True when it exited with 0."""
        return self.status == "ok"


def command_argv(command: str | Sequence[str]) -> list[str]:
    """The argv of a command: a str runs in `/bin/sh -c`; a list of str runs as it is (no shell).

    Raises:
        UsageError: empty, not str/list of str, or a NUL inside.
    """
    if isinstance(command, str):
        argv = ["/bin/sh", "-c", command]
    elif isinstance(command, (list, tuple)) and command and all(isinstance(a, str) for a in command):
        argv = list(command)
    else:
        raise UsageError(f"run_command() takes a command line (str) or an argv (a non-empty list of str), got "
                         f"{command!r:.200}")
    if not argv[-1 if isinstance(command, str) else 0] or any("\x00" in a for a in argv):
        raise UsageError(f"bad command {command!r:.200}: empty, or a NUL byte in it")
    return argv


def check_env(env: dict[str, str] | None) -> dict[str, str]:
    """`env` as a plain dict, checked: names and values are str, names without '=' or NUL."""
    env = dict(env or {})
    for key, value in env.items():
        if not (isinstance(key, str) and isinstance(value, str)) or not key or "=" in key or "\x00" in key + value:
            raise UsageError(f"env must map variable names to str values, got {key!r}: {value!r:.80}")
    return env


def command_request(argv: list[str], *, nonce: str, cwd: str, env: dict[str, str], timeout: float | None,
                    oom: bool, stdin: bytes | None) -> bytes:
    """What the supervisor reads on its stdin: the request (its length, then `marshal` data), then the command's
    stdin."""
    request = marshal.dumps({"argv": argv, "cwd": cwd, "env": env, "timeout": timeout, "nonce": nonce, "oom": oom,
                             "stdin": len(stdin or b"")}, 4)
    return struct.pack(">I", len(request)) + request + (stdin or b"")


class _Stream:
    """One of the command's streams: decoded as it comes, the first `cap` characters kept."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0

    def add(self, data: bytes, final: bool = False) -> str:
        text = self.decoder.decode(data, final)
        self.total += len(text)
        room = self.cap - self.kept
        if room > 0 and text:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)
        return text


class CommandPump:
    """Reads the supervisor's two streams (see the module docstring) into a `CommandResult`.

    Args:
        nonce: the one the request carried; only the report line tagged with it is believed.
        max_stored_chars: characters kept of each of stdout and stderr.
        listen: `listen("stdout" | "stderr", text)` for each piece as it arrives.
    """

    def __init__(self, nonce: str, *, max_stored_chars: int, listen: Callable[[str, Any], None] | None) -> None:
        self.nonce = nonce
        self.listen = listen
        self.out = {b"o": _Stream("stdout", max_stored_chars), b"e": _Stream("stderr", max_stored_chars)}
        self.pid: int | None = None
        self.output_bytes = 0
        self.broken = ""
        self._frames = bytearray()
        self._report = bytearray()

    def feed(self, stream: int, data: bytes) -> None:
        """Take bytes the supervisor wrote: `stream` 1 (frames) or 2 (its report)."""
        if stream == 2:
            room = _MAX_REPORT_BYTES - len(self._report)
            if room > 0:
                self._report += data[:room]
            return
        if self.broken:
            return
        self._frames += data
        while len(self._frames) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._frames)
            if kind not in (b"o", b"e", b"p") or size > _MAX_FRAME:
                self.broken = "the command's supervisor wrote something that is not a frame"
                self._frames.clear()
                return
            if len(self._frames) < _HEADER.size + size:
                return
            body = bytes(self._frames[_HEADER.size:_HEADER.size + size])
            del self._frames[:_HEADER.size + size]
            if kind == b"p":
                self.pid = struct.unpack(">I", body)[0] if size == 4 else None
                continue
            self.output_bytes += len(body)
            text = self.out[kind].add(body)
            if text and self.listen is not None:
                self.listen(self.out[kind].name, text)

    def report(self) -> dict[str, Any] | None:
        """The supervisor's report, if exactly one line carries the nonce and it is a JSON object."""
        tag = self.nonce.encode() + b" "
        lines = [line[len(tag):] for line in bytes(self._report).splitlines() if line.startswith(tag)]
        if len(lines) != 1:
            return None
        try:
            facts = json.loads(lines[0])
        except ValueError:
            return None
        return facts if isinstance(facts, dict) else None

    def finish(self, argv: list[str], *, duration_s: float, backstop: bool = False) -> CommandResult:
        """The result: from the report, or, without one, an `error` (or `timeout` after the backstop) saying so."""
        for stream in self.out.values():
            tail = stream.add(b"", final=True)
            if tail and self.listen is not None:
                self.listen(stream.name, tail)
        notices: list[str] = []
        facts = self.report() or {}
        rc = facts.get("rc")
        rc = rc if isinstance(rc, int) and not isinstance(rc, bool) else None
        status: CommandStatus
        if backstop:
            status = "timeout"
            notices.append("the command ran past its timeout and its supervisor in the sandbox did not stop it "
                           "(stopped by code in the sandbox?): both were killed from outside")
        elif facts.get("timeout") is True:
            status = "timeout"
            notices.append("the command ran past its timeout: it was killed with every process it started")
        elif facts.get("oom") is True:
            status = "oom"
            notices.append("the command was killed for using more memory than the sandbox's limit")
        elif isinstance(facts.get("spawn_error"), str):
            status = "error"
            notices.append(f"the command did not start: {facts['spawn_error'][:500]}")
        elif not facts:
            status = "error"
            notices.append("the command's supervisor ended without saying how the command ended (killed by code "
                           "in the sandbox?)" + (f"; {self.broken}" if self.broken else ""))
        else:
            status = "ok" if rc == 0 else "error"
        killed = facts.get("killed")
        if isinstance(killed, int) and not isinstance(killed, bool) and killed > 0:
            notices.append(f"{killed} process{'es' if killed != 1 else ''} it left running "
                           f"{'were' if killed != 1 else 'was'} killed when it ended")
        truncated = False
        for stream in self.out.values():
            if stream.total > stream.kept:
                truncated = True
                notices.append(f"{stream.name}: kept the first {stream.kept:,} of {stream.total:,} characters")
        return CommandResult(status=status, exit_code=rc, stdout="".join(self.out[b"o"].parts),
                             stderr="".join(self.out[b"e"].parts), duration_s=round(duration_s, 6),
                             truncated=truncated, output_bytes=self.output_bytes, argv=argv, notices=notices)


def new_nonce() -> str:
    return secrets.token_hex(16)


def run_local(argv: list[str], *, python: str, workspace: str, cwd: str, env: dict[str, str],
              timeout: float | None, stdin: bytes | None, max_stored_chars: int,
              listen: Callable[[str, Any], None] | None) -> CommandResult:
    """Run a command on this host (LocalSandbox) under the same supervisor as in a container; see the module
    docstring. `env` is the whole environment of the command; the supervisor starts in `workspace`."""
    nonce = new_nonce()
    started = time.monotonic()
    pump = CommandPump(nonce, max_stored_chars=max_stored_chars, listen=listen)
    proc = subprocess.Popen([python, *GUEST_ARGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=workspace, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    request = command_request(argv, nonce=nonce, cwd=cwd, env={}, timeout=timeout, oom=False, stdin=stdin)
    feeder = threading.Thread(target=_feed_pipe, args=(proc.stdin, request), daemon=True)
    feeder.start()
    backstop = False
    try:
        for stream, data in _read_pipes(proc, None if timeout is None else started + timeout + BACKSTOP_S):
            pump.feed(stream, data)
    except TimeoutError:
        backstop = True
        if pump.pid:
            try:
                os.killpg(pump.pid, 9)
            except OSError:
                pass
    finally:
        if proc.poll() is None and backstop:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
    return pump.finish(argv, duration_s=time.monotonic() - started, backstop=backstop)


def _feed_pipe(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError, OSError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _read_pipes(proc: subprocess.Popen[bytes], deadline: float | None) -> Iterator[tuple[int, bytes]]:
    """(1 | 2, bytes) from the supervisor's stdout and stderr until both end; TimeoutError past `deadline`."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, 1)
    sel.register(proc.stderr, selectors.EVENT_READ, 2)
    try:
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            for key, _ in sel.select(wait):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                yield key.data, data
    finally:
        sel.close()
