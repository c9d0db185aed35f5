"""Processes started in a sandbox container with `docker exec`, bounded: a deadline, a byte cap, a killed process.

`ExecSession` is one exec with its streams on the engine's socket: `exchange()` writes its stdin and yields its
output frames as they come, in one non-blocking loop, and `kill()` ends it. The file operations of
`DockerSandbox` run helpers through `run_capped`, and `run_command` runs its supervisor through an
`ExecSession` directly (`lllm.sandbox.commands`).

Kernel code shares the helpers' uid, so it can stop them (SIGSTOP), make them block, or (were their Python not
isolated) make them print without end. `run_capped` therefore streams the exec's output from the engine's
socket instead of buffering it, stops reading at `max_bytes` or at the deadline, and then kills the exec'd
process; the host thread comes back in bounded time whatever the sandbox does. Input goes to the helper's stdin
(not its argv, which other processes of the same uid can read in /proc).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from lllm.errors import SandboxFileError
from lllm.sandbox import _docker

_HEADER = struct.Struct(">BxxxL")  # the engine's multiplexed stream: stream id (1 stdout, 2 stderr), length
class Readable(Protocol):
    """What `exchange` can send from: anything with `read(n) -> bytes` (a file, a spooled archive)."""

    def read(self, size: int = ..., /) -> bytes: ...


_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass
class ExecOutput:
    """What a helper wrote, in full (it stayed under the cap and finished before the deadline)."""

    stdout: bytes
    stderr: bytes


class ExecSession:
    """One `docker exec` with its streams on a socket: write to its stdin, read its output frames as they come,
    kill it. The file helpers and `run_command` are built on it.

    Raises (constructor):
        SandboxError: the engine refused the exec (the container is gone, ...).
    """

    def __init__(self, container: Any, cmd: list[str], *, user: str, workdir: str = "/", stdin: bool = False,
                 what: str = "the helper") -> None:
        self.container = container
        self.what = what
        self.api = getattr(container, "client", None) and container.client.api or _docker.client().api
        with _docker.translate_errors(f"start {what} in the sandbox"):
            self.exec_id = self.api.exec_create(container.id, cmd, stdout=True, stderr=True, stdin=stdin, user=user,
                                                workdir=workdir)["Id"]
            self.conn = self.api.exec_start(self.exec_id, socket=True)
        self.sock: socket.socket = getattr(self.conn, "_sock", self.conn)  # raw socket (SSLSocket for TLS)
        self._pending = bytearray()

    def exchange(self, data: bytes | Readable, deadline: float | None) -> Iterator[tuple[int, bytes]]:
        """Write `data` (bytes, or a file read to its end) to the process's stdin as it takes it while yielding
        (stream, bytes) of its output as the engine sends them (1 stdout, 2 stderr), until its streams end;
        TimeoutError past `deadline` (None: no limit). One thread, non-blocking: a process that writes before
        it reads cannot deadlock the host."""
        sock = self.sock
        sock.setblocking(False)
        source = None if isinstance(data, (bytes, bytearray)) else data
        out = memoryview(data if isinstance(data, (bytes, bytearray)) else b"")
        pending = self._pending
        while True:
            while len(pending) >= _HEADER.size:
                stream, size = _HEADER.unpack_from(pending)
                if len(pending) < _HEADER.size + size:
                    break
                body = bytes(pending[_HEADER.size:_HEADER.size + size])
                del pending[:_HEADER.size + size]
                yield stream, body
            try:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
                pending += chunk
                continue
            except _WOULD_BLOCK:
                pass
            if not out and source is not None:
                out = memoryview(source.read(1 << 16))
                if not out:
                    source = None
            if out:
                try:
                    out = out[sock.send(out[: 1 << 16]):]
                    continue
                except _WOULD_BLOCK:
                    pass
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            if getattr(sock, "pending", lambda: 0)():  # TLS: bytes already decrypted, not seen by select
                continue
            select.select([sock], [sock] if out else [], [], 1.0 if left is None else min(left, 1.0))

    def exit_code(self) -> int | None:
        try:
            info = self.api.exec_inspect(self.exec_id)
        except Exception:  # noqa: BLE001 - the container is gone
            return None
        code = info.get("ExitCode")
        return code if isinstance(code, int) and not info.get("Running") else None

    def kill(self) -> None:
        """SIGKILL the exec'd process if it still runs (see `_kill`)."""
        _kill(self.api, self.exec_id, self.container.id)

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def run_capped(container: Any, cmd: list[str], *, user: str, timeout: float, max_bytes: int,
               stdin: bytes | Readable = b"", workdir: str = "/", what: str = "the helper",
               sink: IO[bytes] | None = None, max_sink: int = 0) -> ExecOutput:
    """Run `cmd` in `container`, feed it `stdin` (bytes or a file), and return its output. With `sink`, its
    stdout goes there instead (at most `max_sink` bytes) and only stderr counts against `max_bytes`.

    Raises:
        SandboxFileError: it wrote more than allowed or did not finish within `timeout` seconds; it has been
            killed (when the engine runs on this host) and its output dropped.
        SandboxError: the engine refused the exec (the container is gone, ...).
    """
    deadline = time.monotonic() + timeout
    session = ExecSession(container, cmd, user=user, workdir=workdir, stdin=bool(stdin), what=what)
    failure = ""
    streams = {1: bytearray(), 2: bytearray()}
    total = sunk = 0
    try:
        for stream, body in session.exchange(stdin, deadline):
            if sink is not None and stream == 1:
                sunk += len(body)
                if sunk > max_sink:
                    raise _TooMuch(max_sink)
                sink.write(body)
                continue
            total += len(body)
            if total > max_bytes:
                raise _TooMuch(max_bytes)
            if stream in streams:
                streams[stream] += body
    except TimeoutError:
        failure = f"{what} did not answer within {timeout:g}s (stopped or blocked by code in the sandbox?)"
    except _TooMuch as exc:
        failure = f"{what} wrote more than {exc.args[0]:,} bytes; it was stopped and its output dropped"
    except OSError as exc:
        failure = f"lost the connection to {what}: {exc}"
    finally:
        session.close()
    if failure:
        session.kill()
        raise SandboxFileError(failure)
    return ExecOutput(stdout=bytes(streams[1]), stderr=bytes(streams[2]))


class _TooMuch(Exception):
    pass


def _kill(api: Any, exec_id: str, container_id: str) -> None:
    """SIGKILL the exec'd process, if it still runs and the engine is on this host. The engine reports its host
    pid; a pidfd pins that process before the cgroup check proves it is this container's, so a pid reused by
    an unrelated host process is never signalled."""
    try:
        info = api.exec_inspect(exec_id)
    except Exception:  # noqa: BLE001 - the container is gone: so is the process
        return
    pid = info.get("Pid")
    if not info.get("Running") or not isinstance(pid, int) or pid <= 0:
        return
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as fh:
            if container_id not in fh.read():
                return  # not ours (a remote engine, or the pid was reused)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)
