"""The host end of a kernel's ZMQ channels over ipc unix sockets: connection files, signing, size-guarded reads.

A sandbox's kernel binds its five channels as unix sockets in the session directory (`<dir>/kernel-1` ...).
`KernelChannels` connects the three the host needs (shell, iopub, control; no stdin: `input()` must fail, no
heartbeat: death is seen from the process/container) with `lllm.sandbox._zmtp` (bounded, on-demand reads),
signs messages with jupyter_client's `Session`, and parses them itself: a message over its channel's limit is
dropped unread, one not meant for the waiting cell is not decoded, and one that is not a valid signed Jupyter
message comes back as `malformed` (never as an exception).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from lllm.errors import SandboxStartError
from lllm.sandbox._zmtp import ChannelError, Dropped, Frame, ZmtpChannel, wait_readable

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


DELIM = b"<IDS|MSG>"
MAX_REPLY_BYTES = 2 << 20
"""The most a shell reply may take on the host (an error's execute_reply repeats its traceback: a bigger one is
dropped, and the error comes from IOPub)."""
MAX_CONTROL_BYTES = 256 << 10
_MAX_PROBLEMS = 20


def iopub_message_limit(max_display_bytes: int) -> int:
    """The most one IOPub message may take on the host: a display at the sandbox's limit and its envelope, or a
    stream chunk the guest flushed (1 Mi characters, up to 4 bytes each in UTF-8)."""
    return max(max_display_bytes, 4 << 20) + (1 << 20)


class KernelChannels:
    """Shell, IOPub and control connections to one kernel. Not thread-safe except `send_control`.

    Each is a `ZmtpChannel`: read only when asked, one message at a time, every message over its channel's limit
    dropped as it streams by (see `lllm.sandbox._zmtp`). So the host holds at most one message per channel,
    whatever the kernel sends and whenever it sends it; the rest waits in the kernel's memory.

    Args:
        info: the host-side connection dict.
        max_message_bytes: the most one IOPub message may take (larger ones come back as `oversized`).
        max_reply_bytes: the same for shell replies.
    """

    def __init__(self, info: dict[str, Any], *, max_message_bytes: int, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        from jupyter_client.session import Session

        self.info = info
        self.max_message_bytes = max_message_bytes
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self._control_lock = threading.Lock()
        prefix = info["ip"]
        # No routing identity: the kernel's ROUTER gives each connection its own, so a connection made again
        # (after a broken stream) never collides with the old one while the kernel still holds it.
        self.shell = ZmtpChannel(f"{prefix}-{info['shell_port']}", b"DEALER", max_message_bytes=max_reply_bytes)
        self.iopub = ZmtpChannel(f"{prefix}-{info['iopub_port']}", b"SUB", max_message_bytes=max_message_bytes)
        self.control = ZmtpChannel(f"{prefix}-{info['control_port']}", b"DEALER",
                                   max_message_bytes=MAX_CONTROL_BYTES)
        self.closed = False
        self.problems: list[str] = []
        """What went wrong on the channels since the caller last took them (`take_problems()`)."""
        self._problem_count = 0

    # -- connection ---------------------------------------------------------------------------------------------
    def _note(self, problem: str) -> None:
        self._problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)

    def take_problems(self) -> list[str]:
        """The channel problems noted since the last call (malformed or dropped messages, broken streams)."""
        problems, self.problems = self.problems, []
        return problems

    def _channels(self) -> tuple[ZmtpChannel, ZmtpChannel, ZmtpChannel]:
        return self.iopub, self.shell, self.control

    # -- sending --------------------------------------------------------------------------------------------------
    def _send(self, channel: ZmtpChannel, msg_type: str, content: dict[str, Any], timeout: float) -> str:
        msg = self.session.msg(msg_type, content)
        if not channel.connect():
            raise ChannelError(f"the kernel's socket for {msg_type} is not there (yet)")
        channel.send(self.session.serialize(msg), timeout=timeout)
        return str(msg["header"]["msg_id"])

    def send_shell(self, msg_type: str, content: dict[str, Any], *, timeout: float = 10.0) -> str:
        """Send a shell request; return its msg_id.

        Raises:
            ChannelError: the kernel's shell socket is not there, or it did not take the request in `timeout`.
        """
        return self._send(self.shell, msg_type, content, timeout)

    def execute(self, code: str, *, timeout: float = 10.0) -> str:
        """Send an execute_request with stdin disallowed (so `input()` fails at once); return its msg_id."""
        return self.send_shell("execute_request", _execute_content(code), timeout=timeout)

    def execute_nowait(self, code: str) -> tuple[str, bytes] | None:
        """Begin an execute_request without waiting: (msg_id, the bytes the shell socket did not take yet, for
        `finish_send`), or None when the shell channel is not connected (nothing was sent)."""
        if not self.shell.connected:
            return None
        msg = self.session.msg("execute_request", _execute_content(code))
        rest = self.shell.send_nowait(self.session.serialize(msg))
        return str(msg["header"]["msg_id"]), rest

    def finish_send(self, rest: bytes, *, timeout: float = 10.0) -> None:
        """Send what `execute_nowait` left (ChannelError when the kernel does not read it in `timeout`)."""
        self.shell.finish_send(rest, timeout=timeout)

    def clean(self) -> bool:
        """All three channels connected and none holding part of a message: `resync` would do nothing."""
        return self.all_connected() and not any(ch.partial_bytes for ch in self._channels())

    def send_control(self, msg_type: str, content: dict[str, Any] | None = None) -> bool:
        """Send a control request (thread-safe: `interrupt()` may come from another thread); False when the
        kernel's control socket did not take it."""
        with self._control_lock:
            if self.closed:
                return False
            try:
                self._send(self.control, msg_type, content or {}, 1.0)
            except ChannelError as exc:
                self._note(f"a {msg_type} could not be sent: {exc}")
                return False
            return True

    # -- receiving -----------------------------------------------------------------------------------------------
    def poll(self, timeout_s: float) -> tuple[bool, bool, bool]:
        """Wait up to `timeout_s` for input; return (iopub, shell, control) readiness. A channel whose connection
        broke is connected again here (a new connection starts a clean stream)."""
        self.connect_missing()
        return self.ready(timeout_s)

    def all_connected(self) -> bool:
        return all(channel.connected for channel in self._channels())

    def connect_missing(self) -> None:
        """Connect the channels whose connection broke (may wait up to half a second for a handshake each)."""
        for channel in (self.iopub, self.shell):
            if not channel.connected:
                channel.connect(timeout=0.5)
        with self._control_lock:  # `send_control` (another thread) may be connecting it
            if not self.control.connected and not self.closed:
                self.control.connect(timeout=0.5)

    def ready(self, timeout_s: float) -> tuple[bool, bool, bool]:
        """(iopub, shell, control) readiness, waiting up to `timeout_s` (0: just look)."""
        ready = wait_readable(list(self._channels()), timeout_s)
        return ready[0], ready[1], ready[2]

    def buffered(self) -> bool:
        """A message may be complete in what was already read from a channel (no socket will signal it)."""
        return any(channel.has_buffered for channel in self._channels())

    def filenos(self) -> list[int]:
        """The channels' socket descriptors (-1 for one not connected), for an event loop to watch."""
        return [channel.fileno() for channel in self._channels()]

    def recv_iopub(self, want: str | None = None) -> dict[str, Any] | None:
        """The next IOPub message, or None when none is complete. Messages whose parent is not `want` (when
        given) come back as `{"msg_type", "parent_header", "foreign": True}` without their content decoded;
        one over `max_message_bytes` as `{"msg_type", "parent_header", "oversized": size}`, its content never
        read into memory; one that is not a valid signed Jupyter message as `{"malformed": reason}`."""
        return self._recv(self.iopub, want)

    def recv_shell(self, want: str | None = None) -> dict[str, Any] | None:
        """The next shell message (see `recv_iopub`)."""
        return self._recv(self.shell, want)

    def drain_control(self) -> None:
        """Read and drop what the control channel has (interrupt replies), within one read budget."""
        with self._control_lock:
            for _ in range(64):
                if self._recv(self.control, None) is None:
                    break

    def discard_pending(self, *, seconds: float = 0.02, messages: int = 256) -> None:
        """Drop what earlier cells left on IOPub and shell, within a small bound (a kernel that keeps sending is
        read no further here; the next cell skips the rest as not its own)."""
        deadline = time.monotonic() + seconds
        for channel in (self.iopub, self.shell):
            for _ in range(messages):
                if time.monotonic() > deadline or self._recv(channel, "") is None:
                    break

    def resync(self, *, timeout: float = 2.0) -> bool:
        """Make sure the next cell starts on clean streams: a channel that stopped mid-message (a kernel that
        wrote junk into it) or lost its connection is connected again, and a new IOPub subscription is confirmed
        with a kernel_info round trip (a SUB misses what is published before its subscription lands). False
        when IOPub could not be confirmed within `timeout`."""
        if self.shell.partial_bytes or not self.shell.connected:
            self.shell.reconnect()
        if self.control.partial_bytes or not self.control.connected:
            self.control.reconnect()
        if not (self.iopub.partial_bytes or not self.iopub.connected):
            return True
        self.iopub.reconnect()
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                next_send = time.monotonic() + 0.2
                try:
                    sent.add(self.send_shell("kernel_info_request", {}))
                except ChannelError:
                    pass
            has_iopub, has_shell, _ = self.poll(0.05)
            for _msg in self.read(self.shell if has_shell else None, ""):
                pass
            for msg in self.read(self.iopub if has_iopub else None, ""):
                if msg["parent_header"].get("msg_id") in sent:
                    return True
        return False

    def _recv(self, channel: ZmtpChannel, want: str | None) -> dict[str, Any] | None:
        try:
            raw = channel.recv()
        except ChannelError as exc:
            self._note(f"the {_name(channel, self)} connection broke ({exc}) and was made again; output may be "
                       "missing")
            channel.reconnect()
            return None
        if raw is None:
            return None
        if isinstance(raw, Dropped):
            return self._dropped(raw, want)
        return self._decode(raw, want)

    def _envelope(self, frames: list[Frame]) -> tuple[list[Frame], dict[str, Any], dict[str, Any]] | str:
        """The frames after the delimiter, and the parsed header and parent; or what is wrong."""
        try:
            at = frames.index(DELIM)
        except ValueError:
            return "no <IDS|MSG> delimiter"
        msg_list = frames[at + 1 :]
        if len(msg_list) < 5:
            return f"{len(msg_list)} frames after the delimiter, not 5"
        try:
            header, parent = json.loads(msg_list[1]), json.loads(msg_list[2])
        except (ValueError, RecursionError):
            return "a header that is not JSON"
        if not isinstance(header, dict) or not isinstance(parent, dict):
            return "a header that is not a JSON object"
        return msg_list, header, parent

    def _decode(self, frames: list[Frame], want: str | None) -> dict[str, Any]:
        """Check the HMAC and parse the four JSON frames (jupyter_client's `Session.deserialize` without its
        date parsing, which costs more than the rest of a small message). Content is decoded only for `want`."""
        env = self._envelope(frames)
        if isinstance(env, str):
            return self._malformed(env)
        msg_list, header, parent = env
        msg_type = header.get("msg_type")
        if not isinstance(msg_type, str):
            return self._malformed("a header without a msg_type")
        if want is not None and parent.get("msg_id") != want:
            return {"msg_type": msg_type, "header": header, "parent_header": parent, "foreign": True,
                    "content": {}, "metadata": {}}
        if self.session.auth is not None and not hmac.compare_digest(bytes(msg_list[0]),
                                                                     self.session.sign(msg_list[1:5])):
            return self._malformed("a bad signature")
        try:
            metadata, content = json.loads(msg_list[3]), json.loads(msg_list[4])
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past Python's recursion limit
            return self._malformed(f"a {msg_type} whose content is not JSON")
        if not isinstance(content, dict) or not isinstance(metadata, dict):
            return self._malformed(f"a {msg_type} whose content is not a JSON object")
        return {"header": header, "msg_type": msg_type, "parent_header": parent, "metadata": metadata,
                "content": content}

    def _dropped(self, raw: Dropped, want: str | None) -> dict[str, Any]:
        env = self._envelope(raw.frames + [b"{}"] * 5)  # the kept frames; what was dropped reads as empty
        header, parent = ({}, {}) if isinstance(env, str) else (env[1], env[2])
        msg_type = header.get("msg_type") if isinstance(header.get("msg_type"), str) else "message"
        foreign = want is not None and parent.get("msg_id") != want
        return {"msg_type": msg_type, "header": header, "parent_header": parent, "oversized": raw.size,
                "frames": raw.nframes, "foreign": foreign, "content": {}, "metadata": {}}

    def _malformed(self, reason: str) -> dict[str, Any]:
        return {"msg_type": "?", "header": {}, "parent_header": {}, "malformed": reason, "content": {},
                "metadata": {}}

    def wait_ready(self, timeout: float, *, check_alive: Callable[[], None],
                   resend_every: float = 0.2, warm_up: bool = True) -> dict[str, Any]:
        """Block until the kernel answers kernel_info on shell AND its IOPub reaches us; return the reply.

        Args:
            timeout: seconds.
            check_alive: raises `SandboxStartError` when the kernel process or container is gone.
            resend_every: seconds between kernel_info requests once one was answered but IOPub has not shown
                its status yet (the subscription may not have reached the kernel's PUB socket in time).
            warm_up: run one empty cell first (a branch kernel forked from a warm one needs none).

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
                if warm_up:
                    self._warm_up(deadline)
                self.take_problems()  # a start-up race (a socket not bound yet) is no news for the first cell
                return reply
            if now >= deadline:
                raise SandboxStartError(f"the kernel did not answer within {timeout:.0f}s "
                                        f"(kernel_info {'answered' if reply else 'unanswered'}, iopub "
                                        f"{'connected' if iopub_seen else 'silent'})", timeout=timeout)
            if now >= next_send:
                next_send = now + (0.5 if reply is None else resend_every)
                try:
                    sent.add(self.send_shell("kernel_info_request", {}))
                except ChannelError:
                    next_send = now + 0.01  # not bound yet: the kernel is still starting
                check_alive()
            has_iopub, has_shell, has_control = self.poll(min(0.05, max(0.0, deadline - now)))
            for msg in self.read(self.shell if has_shell else None):
                if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") in sent:
                    reply = msg
            for msg in self.read(self.iopub if has_iopub else None):
                if msg["parent_header"].get("msg_id") in sent:
                    iopub_seen = True
            if has_control:
                self.drain_control()

    def read(self, channel: ZmtpChannel | None, want: str | None = None, *, limit: int = 256,
             seconds: float = 0.05) -> Iterator[dict[str, Any]]:
        """The messages `channel` has now (see `recv_iopub`), at most `limit` of them or `seconds` of reading,
        so that a caller's deadline is checked between batches whatever the kernel sends."""
        if channel is None:
            return
        end = time.monotonic() + seconds
        for _ in range(limit):
            msg = self._recv(channel, want)
            if msg is None:
                return
            yield msg
            if time.monotonic() > end:
                return

    def read_iopub(self, want: str) -> Iterator[dict[str, Any]]:
        """This cell's IOPub messages available now, one bounded batch (see `read`)."""
        return self.read(self.iopub, want)

    def read_shell(self, want: str) -> Iterator[dict[str, Any]]:
        return self.read(self.shell, want)

    def reset_iopub(self) -> None:
        """Start IOPub again on a new connection (a stream that lost its place)."""
        self.iopub.reconnect()

    def reset_shell(self) -> None:
        self.shell.reconnect()

    def _warm_up(self, deadline: float) -> None:
        """Run one empty cell outside the history, so the user's first cell does not pay for IPython's first-use
        costs (about 7 ms); its messages are drained here."""
        try:
            msg_id = self.send_shell("execute_request", {"code": "pass", "silent": False, "store_history": False,
                                                          "user_expressions": {}, "allow_stdin": False,
                                                          "stop_on_error": False})
        except ChannelError:
            return
        idle = replied = False
        while not (idle and replied) and time.monotonic() < deadline:
            has_iopub, has_shell, _ = self.poll(0.05)
            for msg in self.read(self.iopub if has_iopub else None, msg_id):
                if (not msg.get("foreign") and msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    idle = True
            for msg in self.read(self.shell if has_shell else None, msg_id):
                replied = replied or not msg.get("foreign")

    def close(self) -> None:
        with self._control_lock:
            if self.closed:
                return
            self.closed = True
            for channel in self._channels():
                channel.close()


def _execute_content(code: str) -> dict[str, Any]:
    # one cell at a time (stop_on_error False): nothing queued to abort, and no abort window that would swallow
    # the next cell; stdin disallowed, so input() fails at once
    return {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": False}


def _name(channel: ZmtpChannel, channels: KernelChannels) -> str:
    return {id(channels.iopub): "IOPub", id(channels.shell): "shell", id(channels.control): "control"}.get(
        id(channel), "kernel")
