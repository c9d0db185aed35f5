"""Running a short helper process in a sandbox container, bounded: a deadline, a byte cap, and a killed process.

The file operations of `DockerSandbox` run helpers with `docker exec`. Kernel code shares the helpers' uid, so
it can stop them (SIGSTOP), make them block, or (were their Python not isolated) make them print without end.
`run_capped` therefore streams the exec's output from the engine's socket instead of buffering it, stops reading
at `max_bytes` or at the deadline, and then kills the exec'd process; the host thread comes back in bounded
time whatever the sandbox does. Input goes to the helper's stdin (not its argv, which other processes of the
same uid can read in /proc).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from lllm.errors import SandboxFileError
from lllm.sandbox import _docker

_HEADER = struct.Struct(">BxxxL")  # the engine's multiplexed stream: stream id (1 stdout, 2 stderr), length


@dataclass
class ExecOutput:
    """What a helper wrote, in full (it stayed under the cap and finished before the deadline)."""

    stdout: bytes
    stderr: bytes


def run_capped(container: Any, cmd: list[str], *, user: str, timeout: float, max_bytes: int, stdin: bytes = b"",
               workdir: str = "/", what: str = "the helper") -> ExecOutput:
    """Run `cmd` in `container`, feed it `stdin`, and return its output.

    Raises:
        SandboxFileError: it wrote more than `max_bytes` (stdout and stderr together) or did not finish within
            `timeout` seconds; it has been killed (when the engine runs on this host) and its output dropped.
        SandboxError: the engine refused the exec (the container is gone, ...).
    """
    deadline = time.monotonic() + timeout
    api = _docker.client().api
    with _docker.translate_errors(f"start {what} in the sandbox"):
        exec_id = api.exec_create(container.id, cmd, stdout=True, stderr=True, stdin=bool(stdin), user=user,
                                  workdir=workdir)["Id"]
        conn = api.exec_start(exec_id, socket=True)
    sock: socket.socket = getattr(conn, "_sock", conn)  # the raw socket (an SSLSocket for a TLS engine)
    failure = ""
    streams: dict[int, bytearray] = {}
    try:
        if stdin:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(stdin)
        streams = _read_frames(sock, deadline, max_bytes)
    except TimeoutError:
        failure = f"{what} did not answer within {timeout:g}s (stopped or blocked by code in the sandbox?)"
    except _TooMuch:
        failure = f"{what} wrote more than {max_bytes:,} bytes; it was stopped and its output dropped"
    except OSError as exc:
        failure = f"lost the connection to {what}: {exc}"
    finally:
        conn.close()
    if failure:
        _kill(api, exec_id, container.id)
        raise SandboxFileError(failure)
    return ExecOutput(stdout=bytes(streams[1]), stderr=bytes(streams[2]))


class _TooMuch(Exception):
    pass


def _read_frames(sock: socket.socket, deadline: float, max_bytes: int) -> dict[int, bytearray]:
    streams = {1: bytearray(), 2: bytearray()}
    pending = bytearray()
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout as exc:
            raise TimeoutError from exc
        if not chunk:
            return streams
        total += len(chunk)
        if total > max_bytes + _HEADER.size * 64:  # headers are small; a flood is not
            raise _TooMuch
        pending += chunk
        while len(pending) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(pending)
            if len(pending) < _HEADER.size + size:
                break
            if stream in streams:
                streams[stream] += pending[_HEADER.size:_HEADER.size + size]
            del pending[:_HEADER.size + size]
        if len(streams[1]) + len(streams[2]) > max_bytes:
            raise _TooMuch


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
