"""The supervisor of one `run_command`: started beside the kernel, it runs the command and reports how it ended.

Its source is sent as `python3 -I -c SOURCE` (`lllm.sandbox.commands.GUEST_SOURCE`): by `docker exec` in a
container (as the sandbox user, like the file helpers), and as a subprocess in a LocalSandbox's workspace. It
imports only the standard library, and nothing of lllm: it runs where lllm is not installed.

Protocol. Its stdin starts with the request (`argv`, `cwd`, `env`, `timeout`, `nonce`, `oom`, `stdin`): a
4-byte length, then the dict in `marshal` format (the host writes it, and `marshal` costs no import where
`json` costs `re`: this process starts for every command); the next `stdin` bytes are the command's stdin,
copied into a pipe that is closed after them (so no half-closed connection is needed to end it: a TLS link to
a remote engine has none). It
writes the command's output to its stdout as frames (`b"o"` stdout, `b"e"` stderr, `b"p"` the command's pid;
then a 4-byte big-endian length and the bytes), and on its stderr one line `<nonce> <json>` saying how the
command ended: `rc`, `signal`, `timeout`, `oom`, `killed` (leftover processes killed), `spawn_error`. Only this
process writes to its stdout and stderr (the command gets pipes), and it makes itself non-dumpable before it
reads the nonce, so code in the sandbox (same uid) can neither read the nonce nor write into its streams.

The command runs in a new session (`setsid`), so it and everything it starts share a process group and a
session whose id is the command's pid. When the command ends, or when it runs past `timeout`, every process
of that group or session is killed (found in /proc, again until none is left), so nothing it started outlives
the call; a process that made itself a new session (`setsid`, a daemon) has left both and is not found. The
command's `oom_score_adj` is 1000 like the kernel's, so the one using the memory is what the OOM killer
picks; an OOM kill is told apart from other SIGKILLs by the memory cgroup's `oom_kill` counter.
"""

from __future__ import annotations

import _json as _json_module
import ctypes
import errno
import marshal
import os
import select
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` imports `re`: not at run time
    import signal
    from typing import Any
else:
    import _signal as signal  # the C module: `signal` imports enum, which costs more than all the rest

_HEADER = struct.Struct(">cI")
_CHUNK = 1 << 16


def _read_exactly(count: int) -> bytes:
    """`count` bytes of stdin, read without buffering ahead (the rest of stdin is the command's)."""
    buf = bytearray()
    while len(buf) < count:
        chunk = os.read(0, count - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_request() -> dict[str, Any]:
    (size,) = struct.unpack(">I", _read_exactly(4))
    request = marshal.loads(_read_exactly(min(size, 16 << 20)))
    if not isinstance(request, dict):
        raise SystemExit("the request is not a dict")
    return request


def _json(value: object) -> str:
    """JSON of the report's values (None, bool, int, str) without importing `json`."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    return _json_module.encode_basestring_ascii(str(value))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _oom_kills() -> int:
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return -1


def _members(leader: int) -> list[int]:
    """Live processes in the command's process group or session (the leader itself included, unless reaped)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in (b"Z", b"X"):
            continue
        if int(fields[2]) == leader or int(fields[3]) == leader:
            found.append(int(name))
    return found


def kill_tree(leader: int, *, seconds: float = 5.0) -> int:
    """SIGKILL the command's process group and session until none of it is left; return how many were killed.
    Called while the leader is unreaped (a zombie holds its pid, so no unrelated process can have taken it)."""
    killed: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = _members(leader)  # before the group signal, so that what it kills is counted too
        try:
            os.killpg(leader, signal.SIGKILL)
        except OSError:
            pass
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            if pid != leader:
                killed.add(pid)
        time.sleep(0.005)
    return len(killed)


def _copy_stdin(count: int, dest: int) -> None:
    """Copy the command's `count` bytes of stdin from ours to its pipe, then close the pipe (EOF)."""
    try:
        while count > 0:
            data = os.read(0, min(count, _CHUNK))
            if not data:
                break
            count -= len(data)
            _write_all(dest, data)
    except OSError:
        pass  # it ended without reading all of it
    finally:
        os.close(dest)


def _spawn(req: dict[str, Any], in_r: int, out_w: int, err_w: int) -> tuple[int, str | None]:
    """Fork and exec the command in a new session; (pid, None), or (0, why it could not start)."""
    argv = [str(a) for a in req["argv"]]
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the command
        try:
            os.setsid()
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.closerange(3, report_w)
            os.closerange(report_w + 1, 65536)
            if req.get("oom"):
                try:
                    with open("/proc/self/oom_score_adj", "w") as fh:
                        fh.write("1000")
                except OSError:
                    pass
            os.chdir(req.get("cwd") or ".")
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            what = "change to directory" if exc.filename == req.get("cwd") and req.get("cwd") else "run"
            target = req.get("cwd") if what == "change to directory" else argv[0]
            os.write(report_w, f"cannot {what} {target!r}: {exc.strerror or exc}".encode()[:2000])
        finally:
            os._exit(127)
    os.close(report_w)
    why = b""
    while True:
        try:
            chunk = os.read(report_r, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        why += chunk
    os.close(report_r)
    if why:
        os.waitpid(pid, 0)
        return 0, why.decode("utf-8", "replace")
    return pid, None


def main() -> None:
    try:  # non-dumpable first: no process of the same uid may read our memory (the nonce) or our fds
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    req = _read_request()
    nonce = str(req["nonce"])

    def report(**facts: object) -> None:
        body = ", ".join(f'"{key}": {_json(value)}' for key, value in facts.items())
        _write_all(2, (nonce + " {" + body + "}\n").encode())

    oom_before = _oom_kills() if req.get("oom") else -1
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid, spawn_error = _spawn(req, in_r, out_w, err_w)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    if spawn_error is None and req.get("stdin"):
        import threading

        threading.Thread(target=_copy_stdin, args=(int(req["stdin"]), in_w), daemon=True).start()
    else:
        os.close(in_w)  # no stdin: it reads end of file at once
    if spawn_error is not None:
        report(rc=None, signal=None, timeout=False, oom=False, killed=0, spawn_error=spawn_error)
        return
    _write_all(1, _HEADER.pack(b"p", 4) + struct.pack(">I", pid))
    timeout = req.get("timeout")
    deadline = time.monotonic() + float(timeout) if timeout is not None else None
    streams = {out_r: b"o", err_r: b"e"}
    status: int | None = None
    timed_out = False
    ended_at = 0.0
    killed = 0
    try:
        idle = 0.001
        while True:
            now = time.monotonic()
            if status is None:
                ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if ended is not None and ended.si_pid == pid:  # ended, not reaped: its pid stays ours
                    status, ended_at = 0, now
                    continue
                if deadline is not None and now >= deadline:
                    timed_out = True
                    killed = kill_tree(pid)
                    status, ended_at = 0, time.monotonic()
                    continue
            elif not streams:
                break
            elif now - ended_at > 0.25:
                # what it left running still holds the pipes: it goes with the command
                killed += kill_tree(pid)
                ended_at = now + 3600.0
            wait = 0.1 if deadline is None or status is not None else max(0.0, min(0.1, deadline - now))
            if not streams:  # it closed its output but runs on: wait for its end
                time.sleep(min(wait, idle))
                idle = min(idle * 2, 0.05)
                continue
            try:
                readable, _, _ = select.select(list(streams), [], [], wait)
            except InterruptedError:
                continue
            for fd in readable:
                try:
                    data = os.read(fd, _CHUNK)
                except InterruptedError:
                    continue
                if not data:
                    os.close(fd)
                    del streams[fd]
                    continue
                _write_all(1, _HEADER.pack(streams[fd], len(data)) + data)
        killed += kill_tree(pid)
    except OSError as exc:  # the host went away (EPIPE): nothing may outlive the call
        kill_tree(pid)
        if exc.errno != errno.EPIPE:
            raise
        return
    _, raw = os.waitpid(pid, 0)
    sig = os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else None
    rc = os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else -(sig or 0)
    oom = bool(req.get("oom")) and sig == signal.SIGKILL and not timed_out and _oom_kills() > oom_before >= 0
    report(rc=rc, signal=sig, timeout=timed_out, oom=oom, killed=killed, spawn_error=None)


if __name__ == "__main__":
    main()
    sys.exit(0)
