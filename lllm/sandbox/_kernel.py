"""The host end of a kernel's ZMQ channels over ipc unix sockets: connection files, signing, size-guarded reads.

A sandbox's kernel binds its five channels as unix sockets in the session directory (`<dir>/kernel-1` ...).
`KernelChannels` connects the three the host needs (shell, iopub, control; no stdin: `input()` must fail, no
heartbeat: death is seen from the process/container), signs messages with jupyter_client's `Session`, and reads
IOPub without decoding messages over `max_message_bytes` (their size is known from the raw frames).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lllm.errors import SandboxStartError

PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


def connection_info(ip_prefix: str, key: str) -> dict[str, Any]:
    """A Jupyter connection dict for ipc sockets named `<ip_prefix>-<n>`."""
    return {"transport": "ipc", "ip": ip_prefix, **PORTS, "key": key, "signature_scheme": "hmac-sha256",
            "kernel_name": ""}


def write_connection_file(session_dir: Path, kernel_ip_prefix: str) -> dict[str, Any]:
    """Write `kernel.json` (as the kernel sees its directory) into `session_dir`; return the host's view."""
    key = secrets.token_hex(32)
    (session_dir / "kernel.json").write_text(json.dumps(connection_info(kernel_ip_prefix, key)))
    return connection_info(str(session_dir / "kernel"), key)


class KernelChannels:
    """Shell, IOPub and control sockets to one kernel. Not thread-safe except `send_control`.

    Args:
        info: the host-side connection dict.
        max_message_bytes: IOPub messages larger than this are dropped unread (see `recv_iopub`).
    """

    def __init__(self, info: dict[str, Any], *, max_message_bytes: int) -> None:
        import zmq
        from jupyter_client.session import Session

        self.info = info
        self.max_message_bytes = max_message_bytes
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self.context = zmq.Context.instance()
        self._control_lock = threading.Lock()
        prefix = info["ip"]
        self.shell = self._socket(zmq.DEALER, f"ipc://{prefix}-{info['shell_port']}")
        self.control = self._socket(zmq.DEALER, f"ipc://{prefix}-{info['control_port']}")
        self.iopub = self._socket(zmq.SUB, f"ipc://{prefix}-{info['iopub_port']}")
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        # Bounded buffering on the host: at most this many messages (the guest flushes every 1 MiB) wait in
        # the host's queue; the kernel's side queues the rest, in the container's memory.
        self.iopub.setsockopt(zmq.RCVHWM, 8)
        self.iopub.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_bytes + (64 << 20))
        self.poller = zmq.Poller()
        self.poller.register(self.iopub, zmq.POLLIN)
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.closed = False

    def _socket(self, kind: int, url: str) -> Any:
        import zmq

        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.DEALER:
            sock.setsockopt(zmq.IDENTITY, self.session.bsession)
        sock.connect(url)
        return sock

    # -- sending --------------------------------------------------------------------------------------------------
    def send_shell(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send a shell request; return its msg_id."""
        msg = self.session.send(self.shell, msg_type, content)
        return str(msg["header"]["msg_id"])

    def execute(self, code: str) -> str:
        """Send an execute_request with stdin disallowed (so `input()` fails at once); return its msg_id."""
        return self.send_shell("execute_request", {"code": code, "silent": False, "store_history": True,
                                                   "user_expressions": {}, "allow_stdin": False,
                                                   # one cell at a time: nothing queued to abort, and
                                                   # no abort window that would swallow the next cell
                                                   "stop_on_error": False})

    def send_control(self, msg_type: str, content: dict[str, Any] | None = None) -> None:
        """Send a control request (thread-safe: `interrupt()` may come from another thread)."""
        with self._control_lock:
            if not self.closed:
                self.session.send(self.control, msg_type, content or {})

    # -- receiving -----------------------------------------------------------------------------------------------
    def poll(self, timeout_s: float) -> tuple[bool, bool, bool]:
        """Wait up to `timeout_s` for input; return (iopub, shell, control) readiness."""
        events = dict(self.poller.poll(max(0, int(timeout_s * 1000))))
        return self.iopub in events, self.shell in events, self.control in events

    def recv_iopub(self) -> dict[str, Any] | None:
        """One IOPub message, or None when none is waiting. An oversized one comes back as
        `{"msg_type", "parent_header", "oversized": size}` with its content never decoded."""
        return self._recv(self.iopub, guard=True)

    def recv_shell(self) -> dict[str, Any] | None:
        return self._recv(self.shell, guard=False)

    def drain_control(self) -> None:
        with self._control_lock:
            while self._recv(self.control, guard=False) is not None:
                pass

    def _recv(self, sock: Any, *, guard: bool) -> dict[str, Any] | None:
        import zmq

        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        _idents, msg_list = self.session.feed_identities(frames, copy=False)
        size = sum(len(frame) for frame in msg_list)
        if guard and size > self.max_message_bytes and len(msg_list) >= 5:
            header = json.loads(msg_list[1].bytes)
            parent = json.loads(msg_list[2].bytes) if len(msg_list[2]) < 65536 else {}
            return {"msg_type": header.get("msg_type", "?"), "header": header, "parent_header": parent,
                    "oversized": size, "content": {}, "metadata": {}}
        return self._decode(msg_list)

    def _decode(self, msg_list: list[Any]) -> dict[str, Any] | None:
        """Check the HMAC and parse the four JSON frames (jupyter_client's `Session.deserialize` without its
        date parsing, which costs more than the rest of a small message)."""
        if len(msg_list) < 5:
            return None
        frames = [bytes(frame.buffer) if hasattr(frame, "buffer") else bytes(frame) for frame in msg_list[:5]]
        if self.session.auth is not None and not hmac.compare_digest(frames[0], self.session.sign(frames[1:5])):
            return None  # a bad signature: not from our kernel
        try:
            header, parent, metadata, content = (json.loads(frame) for frame in frames[1:5])
        except ValueError:
            return None
        return {"header": header, "msg_type": header.get("msg_type"), "parent_header": parent or {},
                "metadata": metadata, "content": content}

    def wait_ready(self, timeout: float, *, check_alive: Callable[[], None]) -> dict[str, Any]:
        """Block until the kernel answers kernel_info on shell AND its IOPub reaches us; return the reply.

        Args:
            timeout: seconds.
            check_alive: raises `SandboxStartError` when the kernel process or container is gone.

        Raises:
            SandboxStartError: no answer within `timeout`.
        """
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        reply: dict[str, Any] | None = None
        iopub_seen = False
        next_send = 0.0
        while True:
            now = time.monotonic()
            if reply is not None and iopub_seen:
                self._warm_up(deadline)
                return reply
            if now >= deadline:
                raise SandboxStartError(f"the kernel did not answer within {timeout:.0f}s "
                                        f"(kernel_info {'answered' if reply else 'unanswered'}, iopub "
                                        f"{'connected' if iopub_seen else 'silent'})", timeout=timeout)
            if now >= next_send:
                sent.add(self.send_shell("kernel_info_request", {}))
                next_send = now + (0.5 if reply is None else 0.2)
                check_alive()
            has_iopub, has_shell, has_control = self.poll(min(0.05, max(0.0, deadline - now)))
            if has_shell:
                while (msg := self.recv_shell()) is not None:
                    if msg.get("msg_type") == "kernel_info_reply" and msg["parent_header"].get("msg_id") in sent:
                        reply = msg
            if has_iopub:
                while (msg := self.recv_iopub()) is not None:
                    if msg["parent_header"].get("msg_id") in sent:
                        iopub_seen = True
            if has_control:
                self.drain_control()

    def _warm_up(self, deadline: float) -> None:
        """Run one empty cell outside the history, so the user's first cell does not pay for IPython's first-use
        costs (about 7 ms); its messages are drained here."""
        msg_id = self.send_shell("execute_request", {"code": "pass", "silent": False, "store_history": False,
                                                      "user_expressions": {}, "allow_stdin": False,
                                                      "stop_on_error": False})
        idle = replied = False
        while not (idle and replied) and time.monotonic() < deadline:
            has_iopub, has_shell, _ = self.poll(0.05)
            while has_iopub and (msg := self.recv_iopub()) is not None:
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    idle = True
            while has_shell and (msg := self.recv_shell()) is not None:
                replied = replied or msg["parent_header"].get("msg_id") == msg_id

    def close(self) -> None:
        with self._control_lock:
            if self.closed:
                return
            self.closed = True
            for sock in (self.shell, self.iopub, self.control):
                sock.close(linger=0)
