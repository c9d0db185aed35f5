"""Branch kernels: fork this kernel between two cells into a second kernel with the same Python state.

Loaded by `lllm_kernel_init` (`install(shell)`), which registers a shell handler for `lllm_fork_request`. The
host sends it on the kernel's shell channel, so it runs between two cells (a fork asked for while a cell runs
waits in the kernel's queue until the cell ends). Its content: `connection_file` (the branch's, written by the
host: its own socket names and signing key), `gateway` (the branch's gateway file names in the run directory)
and `branch` (the branch id). The reply, `lllm_fork_reply`, carries `status` and the branch's `pid`, or an error.

How (measured recipe in the project's ENVIRONMENT.md): `gc.freeze()` so that the collector does not write to
every object of the parent's heap in the branch (copy-on-write stays shared), then a double fork: the middle
process takes a new session and exits, so the branch is reparented to the sandbox supervisor (a child
subreaper), which tracks it, reaps it and kills it with the kernel it came from. The branch then
- points fds 1 and 2 back at what they were before ipykernel captured them, and covers every inherited socket,
  pipe, eventfd and epoll fd with /dev/null (they belong to the parent's ZMQ context, whose threads did not
  survive the fork: touching them would hang or steal the parent's messages);
- leaves the parent's event loop behind (never returns into it) and starts a fresh one;
- binds its own sockets from its connection file with a new ZMQ context, new IOPub/control/heartbeat threads,
  new output streams and a new `IPythonKernel`, reusing the same `InteractiveShell`, so that functions defined
  in cells keep reading the globals they always read;
- points CALL_API at its own gateway session (`LLLM_GATEWAY_NAME`);
- tells the parent it is ready through a pipe, and ends with `os._exit` (never the parent's atexit handlers).
Threads of the parent do not exist in the branch (a fork copies only the thread that forks).
"""

from __future__ import annotations

import gc
import json
import os
import select
import sys
import time
from typing import Any

FORK_REQUEST = "lllm_fork_request"
FORK_REPLY = "lllm_fork_reply"
READY_TIMEOUT = float(os.environ.get("LLLM_FORK_READY_TIMEOUT", "20"))
RUN_DIR = os.environ.get("LLLM_RUN_DIR", "/run/lllm")


def install(shell: Any) -> None:
    """Register the fork handler on the shell's kernel (a no-op outside an ipykernel)."""
    kernel = getattr(shell, "kernel", None)
    handlers = getattr(kernel, "shell_handlers", None)
    if isinstance(handlers, dict):
        handlers[FORK_REQUEST] = lambda stream, ident, parent: _fork_request(kernel, stream, ident, parent)


def _checked_request(content: Any) -> tuple[str, str, str]:
    if not isinstance(content, dict):
        raise ValueError("the request's content is not a mapping")
    conn, gateway, branch = content.get("connection_file"), content.get("gateway"), content.get("branch")
    if not isinstance(conn, str) or os.path.dirname(conn) != RUN_DIR:
        raise ValueError(f"connection_file must name a file in {RUN_DIR}, got {conn!r}")
    for name, value in (("gateway", gateway), ("branch", branch)):
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(f"{name} must be a plain name, got {value!r}")
    return conn, str(gateway), str(branch)


def _fork_request(kernel: Any, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
    try:
        conn, gateway, branch = _checked_request(parent.get("content"))
        with open(conn, encoding="utf-8") as fh:
            info = json.load(fh)
        reply = _fork(kernel, info, conn, gateway, branch)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the host as the reply
        reply = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    kernel.session.send(stream, FORK_REPLY, reply, parent, ident=ident)


def _fork(kernel: Any, info: dict[str, Any], conn: str, gateway: str, branch: str) -> dict[str, Any]:
    started = time.monotonic()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # what the parent printed is sent by the parent, not lost in the branch
        except Exception:  # noqa: BLE001
            pass
    read_end, write_end = os.pipe()
    gc.freeze()
    try:
        middle = os.fork()
        if middle == 0:  # the middle process: a new session, fork the branch, exit at once
            code = 1
            try:
                os.close(read_end)
                os.setsid()
                if os.fork() == 0:
                    _become_branch(kernel, info, conn, gateway, branch, write_end)  # never returns
                code = 0
            finally:
                os._exit(code)
    finally:
        gc.unfreeze()
    os.close(write_end)
    try:
        os.waitpid(middle, 0)
        message = _read_line(read_end, READY_TIMEOUT)
    finally:
        os.close(read_end)
    if not message.startswith("ready "):
        why = message[6:] if message.startswith("error ") else (message or "it ended before it was ready")
        return {"status": "error", "error": f"the branch kernel did not start: {why}"}
    words = message.split(" ", 2)
    phases = json.loads(words[2]) if len(words) > 2 else {}
    return {"status": "ok", "pid": int(words[1]), "fork_s": time.monotonic() - started, "phases": phases}


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and len(data) < 4096:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return f"error no word from the branch within {timeout:g}s"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


def _cover_inherited_fds(keep: set[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    keep = keep | {0, 1, 2, devnull}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory listing's own fd
        if target.startswith(("socket:", "pipe:", "anon_inode:")):
            try:
                os.dup2(devnull, fd, inheritable=False)
            except OSError:
                pass
    os.close(devnull)


def _become_branch(kernel: Any, info: dict[str, Any], conn: str, gateway: str, branch: str, ready: int) -> None:
    try:
        _setup_branch(kernel, info, conn, gateway, branch, ready)
    except BaseException as exc:  # noqa: BLE001 - tell the parent, then go
        try:
            os.write(ready, f"error {type(exc).__name__}: {exc}\n".encode(errors="replace"))
        finally:
            os._exit(1)
    os._exit(0)


def _setup_branch(kernel: Any, info: dict[str, Any], conn: str, gateway: str, branch: str, ready: int) -> None:
    import asyncio
    import uuid

    from ipykernel.ipkernel import IPythonKernel
    from tornado.ioloop import IOLoop

    marks = [("start", time.monotonic())]
    app = kernel.parent
    shell = kernel.shell
    # fds 1 and 2: back to the container's own (ipykernel pointed them at pipes the parent's threads read)
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        original = getattr(stream, "_original_stdstream_copy", None)
        if isinstance(original, int):
            os.dup2(original, fd)
    _cover_inherited_fds({ready})
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    os.environ["LLLM_GATEWAY_NAME"] = gateway
    os.environ["LLLM_BRANCH"] = branch

    # a fresh event loop: the parent's is still "running" on this thread's stack, and stays there
    asyncio.events._set_running_loop(None)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    IOLoop.current()
    marks.append(("loop", time.monotonic()))

    # the branch's identity: its connection file's socket names and key
    app.connection_file = conn
    app.transport, app.ip = info["transport"], info["ip"]
    for port in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        setattr(app, port, int(info[port]))
    app.session.key = info["key"].encode()
    app.session.session = str(uuid.uuid4())
    app.session.pid = os.getpid()  # jupyter_client's Session drops what a "fork" sends (check_pid)
    app.context = None
    app.init_sockets()
    marks.append(("sockets", time.monotonic()))
    app.heartbeat = None  # the host never uses the heartbeat channel (it watches the process instead)
    app._ports = {"shell": app.shell_port, "iopub": app.iopub_port, "stdin": app.stdin_port, "hb": app.hb_port,
                  "control": app.control_port}
    app.init_io()
    app.init_signal()
    marks.append(("io", time.monotonic()))
    IPythonKernel.clear_instance()
    app.init_kernel()
    marks.append(("kernel", time.monotonic()))
    new_kernel = app.kernel
    shell.kernel = new_kernel
    new_kernel.shell = shell
    try:
        import lllm_kernel_init  # type: ignore[import-not-found]

        lllm_kernel_init.wrap_output_streams()
    except ImportError:
        pass
    try:
        import lllm_guest  # type: ignore[import-not-found]

        lllm_guest.forget_connections()
    except ImportError:
        pass
    install(shell)  # a branch can fork again
    try:
        import lllm_snapshot  # type: ignore[import-not-found]

        lllm_snapshot.install(shell)  # and be saved
    except ImportError:
        pass
    marks.append(("hooks", time.monotonic()))
    phases = {name: round(t - marks[i][1], 4) for i, (name, t) in enumerate(marks[1:])}
    os.write(ready, f"ready {os.getpid()} {json.dumps(phases, separators=(',', ':'))}\n".encode())
    os.close(ready)
    new_kernel.start()
    IOLoop.current().start()
