"""The host end of one kernel channel: ZMTP 3.0 over a unix socket, read only on demand and within a budget.

Why not a pyzmq socket: libzmq reads a peer's bytes into the host process as fast as they come, whether or not
anyone asks for them, and its limits do not hold against a peer that speaks the wire protocol itself (which
kernel code can: it owns the kernel's end of every connection). `ZMQ_MAXMSGSIZE` bounds one *frame*, not a
message, and `ZMQ_RCVHWM` counts *complete* messages, so one message of endless 1 MB frames, never flagged
last, grows the host without bound (measured: +400 MB for 400 frames, with both options set). Here the host
reads a channel only when it asks for the next message, holds at most one message (under `max_message_bytes`
and `max_frames`) plus one read-ahead chunk, and discards the rest of a message over those limits as it
streams by, keeping its first small frames (the Jupyter envelope and header) so the caller can say what was
dropped. Everything the kernel does not send yet waits in the kernel's own memory (the container's).

The protocol subset is the one a Jupyter kernel's libzmq (4.x) speaks to a DEALER or SUB peer: the 64-byte
greeting, the NULL mechanism's READY command, data frames (short or long), PING answered with PONG, and a
SUB's subscription as a `\\x01`-prefixed message (ZMTP 3.0). See https://rfc.zeromq.org/spec/23/.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import time
from dataclasses import dataclass, field

_MORE, _LONG, _COMMAND = 1, 2, 4
_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
_MAX_COMMAND = 64 << 10
_KEEP_FRAME = 64 << 10
"""Frames up to this size are kept from a message that is dropped (its envelope and header, for the notice)."""
_KEEP_FRAMES = 8
_CHUNK = 256 << 10
_READ_PER_CALL = 8 << 20
"""The most bytes one `recv()` reads, so that a caller's deadline is seen while a big message streams in."""
_PEERS = {b"DEALER": (b"ROUTER", b"DEALER"), b"SUB": (b"PUB", b"XPUB")}


Frame = bytes | bytearray
"""A received frame: a big one stays in the bytearray it was read into (json.loads and hmac take either)."""


class ChannelError(Exception):
    """The channel broke: no peer, a protocol error, a peer that does not read. The caller reconnects."""


@dataclass
class Dropped:
    """A message over the channel's limits, discarded as it arrived: its first small frames and its size."""

    frames: list[Frame]
    size: int
    nframes: int


@dataclass
class _Partial:
    frames: list[Frame] = field(default_factory=list)
    size: int = 0
    nframes: int = 0
    dropping: bool = False


class ZmtpChannel:
    """One connection to a kernel's socket (ROUTER or PUB) as a DEALER or SUB.

    Args:
        path: the unix socket path the kernel bound.
        socket_type: `b"DEALER"` or `b"SUB"` (a SUB subscribes to everything).
        identity: a DEALER's routing id (none: the peer's ROUTER gives each connection its own).
        max_message_bytes: a message larger than this (all frames) is dropped as it streams by.
        max_frames: so is a message of more frames than this.
    """

    def __init__(self, path: str, socket_type: bytes, *, identity: bytes = b"", max_message_bytes: int,
                 max_frames: int = 64) -> None:
        self.path = path
        self.socket_type = socket_type
        self.identity = identity
        self.max_message_bytes = max_message_bytes
        self.max_frames = max_frames
        self.sock: socket.socket | None = None
        self.reconnects = 0
        """How many times a live connection was dropped and made again (a desynchronised or closed stream)."""
        self.dropped_bytes = 0
        self._buf = bytearray()
        self._pos = 0
        self._partial = _Partial()
        self._skip = 0  # bytes of the current (dropped) frame still to discard
        self._skip_more = False
        self._big: bytearray | None = None  # a kept frame too big for the read-ahead buffer, filled in place
        self._big_fill = 0
        self._big_more = False
        self._ready = False  # bytes may hold a complete message: recv() before waiting on the socket
        self._next_connect = 0.0

    # -- connection ---------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.sock is not None

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def connect(self, *, timeout: float = 1.0) -> bool:
        """Connect and handshake if not connected (at most every 10 ms, longer after a slow handshake); True when
        connected."""
        if self.sock is not None:
            return True
        now = time.monotonic()
        if now < self._next_connect:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            _connect_no_follow(sock, self.path)
            self._handshake(sock)
            sock.setblocking(False)
        except (OSError, ChannelError):
            sock.close()
            # not there yet (a starting kernel binds late): retry soon; a peer that stalled the handshake: back
            # off as long as it stalled
            self._next_connect = time.monotonic() + 0.01 + 2 * (time.monotonic() - now)
            return False
        self.sock = sock
        self._reset_parser()
        if self.socket_type == b"SUB":
            try:
                self.send([b"\x01"])  # subscribe to every topic
            except ChannelError:
                return False
        return True

    def _handshake(self, sock: socket.socket) -> None:
        sock.sendall(_GREETING)
        peer = _recv_exact(sock, 64)
        if peer[0] != 0xFF or peer[9] != 0x7F or peer[10] < 3 or peer[12:32].rstrip(b"\x00") != b"NULL":
            raise ChannelError("the peer does not speak ZMTP 3 with the NULL mechanism")
        body = b"\x05READY" + _property(b"Socket-Type", self.socket_type)
        if self.identity:
            body += _property(b"Identity", self.identity)
        sock.sendall(_command_frame(body))
        flags = _recv_exact(sock, 1)[0]
        size = struct.unpack(">Q", _recv_exact(sock, 8))[0] if flags & _LONG else _recv_exact(sock, 1)[0]
        if not flags & _COMMAND or size > _MAX_COMMAND:
            raise ChannelError("the peer's first frame is not a READY command")
        command = _recv_exact(sock, size)
        if not command.startswith(b"\x05READY"):
            raise ChannelError(f"the peer answered {command[:16]!r}, not READY")
        peer_type = _properties(command[6:]).get(b"Socket-Type", b"")
        if peer_type not in _PEERS[self.socket_type]:
            raise ChannelError(f"the peer is a {peer_type!r} socket; a {self.socket_type!r} needs one of "
                               f"{_PEERS[self.socket_type]!r}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._reset_parser()

    def reconnect(self) -> None:
        """Drop the connection (a stream we can no longer parse) and make a new one when possible."""
        if self.sock is not None:
            self.reconnects += 1
        self.close()
        self._next_connect = 0.0
        self.connect()

    def _reset_parser(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._partial = _Partial()
        self._skip = 0
        self._skip_more = False
        self._big = None
        self._big_fill = 0
        self._ready = False

    # -- sending ----------------------------------------------------------------------------------------------
    def send(self, frames: list[bytes], *, timeout: float = 10.0) -> None:
        """Send one message; raises ChannelError when not connected or the peer does not take it in time."""
        if self.sock is None:
            raise ChannelError(f"not connected to {self.path}")
        self._write(_wire(frames), timeout)

    def send_nowait(self, frames: list[bytes]) -> bytes:
        """Send as much of one message as the socket takes now, without waiting; return what is left (b"" when
        all of it went), which `finish_send` must send before anything else goes on this channel."""
        if self.sock is None:
            raise ChannelError(f"not connected to {self.path}")
        data = _wire(frames)
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close()
            raise ChannelError(f"sending to {self.path} failed: {exc}") from None
        return data[sent:]

    def finish_send(self, rest: bytes, *, timeout: float = 10.0) -> None:
        """Send the rest of a message `send_nowait` began (waiting up to `timeout` for the peer to read)."""
        if rest:
            if self.sock is None:
                raise ChannelError(f"not connected to {self.path}")
            self._write(rest, timeout)

    def _write(self, data: bytes, timeout: float) -> None:
        assert self.sock is not None
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[self.sock.send(view):]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                self.close()
                raise ChannelError(f"sending to {self.path} failed: {exc}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()  # a partial message is on the wire: this stream is unusable
                raise ChannelError(f"the kernel did not read its {os.path.basename(self.path)} socket for "
                                   f"{timeout:g}s")
            select.select([], [self.sock], [], min(left, 0.5))

    # -- receiving --------------------------------------------------------------------------------------------
    @property
    def has_buffered(self) -> bool:
        """A message may be complete in what was already read: call recv() before waiting on the socket."""
        return self._ready

    def recv(self) -> list[Frame] | Dropped | None:
        """The next complete message, a `Dropped` one, or None when none is complete yet.

        Raises:
            ChannelError: the peer closed the connection or broke the protocol (the channel is closed; call
                `reconnect()`).
        """
        if self.sock is None:
            return None
        budget = _READ_PER_CALL
        while True:
            msg = self._parse()
            if msg is not None:
                self._ready = True
                return msg
            self._ready = False
            if budget <= 0:
                self._ready = True  # more may be waiting; let the caller check its deadline first
                return None
            got = self._read()
            if got == 0:
                return None
            budget -= got

    def _read(self) -> int:
        """Read what the socket has (one chunk, or into the big frame in progress); 0 when nothing is there."""
        assert self.sock is not None
        try:
            if self._big is not None:
                view = memoryview(self._big)[self._big_fill :]
                n = self.sock.recv_into(view, min(len(view), _READ_PER_CALL))
                if n:
                    self._big_fill += n
            else:
                if self._pos and self._pos == len(self._buf):
                    self._buf.clear()
                    self._pos = 0
                elif self._pos > _CHUNK:
                    del self._buf[: self._pos]
                    self._pos = 0
                data = self.sock.recv(min(_CHUNK, self._skip) if self._skip else _CHUNK)
                n = len(data)
                self._buf += data
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.close()
            raise ChannelError(f"reading {self.path} failed: {exc}") from None
        if n == 0:
            self.close()
            raise ChannelError(f"the kernel closed its end of {self.path}")
        return n

    def _parse(self) -> list[Frame] | Dropped | None:
        """Consume buffered bytes; return a finished message (kept or dropped) or None when more is needed."""
        part = self._partial
        while True:
            if self._big is not None:
                if self._big_fill < len(self._big):
                    return None
                frame: Frame
                frame, self._big = self._big, None  # kept as is: json.loads and hmac take a bytearray
                done = self._take(frame, self._big_more)
                if done is not None:
                    return done
                continue
            if self._skip:
                n = min(self._skip, len(self._buf) - self._pos)
                self._pos += n
                self._skip -= n
                self.dropped_bytes += n
                if self._skip:
                    return None
                if not self._skip_more:
                    return self._finish_dropped()
                continue
            avail = len(self._buf) - self._pos
            if avail < 2:
                return None
            flags = self._buf[self._pos]
            if flags & ~(_MORE | _LONG | _COMMAND):
                self.close()
                raise ChannelError(f"bad frame flags {flags:#x} on {self.path}")
            if flags & _LONG:
                if avail < 9:
                    return None
                size = struct.unpack_from(">Q", self._buf, self._pos + 1)[0]
                head = 9
            else:
                size = self._buf[self._pos + 1]
                head = 2
            more = bool(flags & _MORE)
            if flags & _COMMAND:
                if size > _MAX_COMMAND:
                    self.close()
                    raise ChannelError(f"a {size}-byte command on {self.path}")
                if avail < head + size:
                    return None
                command = bytes(self._buf[self._pos + head : self._pos + head + size])
                self._pos += head + size
                self._command(command)
                continue
            part.size += size
            part.nframes += 1
            if not part.dropping and (part.size > self.max_message_bytes or part.nframes > self.max_frames):
                part.dropping = True
            keep = not part.dropping or (size <= _KEEP_FRAME and len(part.frames) < _KEEP_FRAMES)
            if not keep:
                self._pos += head
                self._skip, self._skip_more = size, more
                continue
            if avail >= head + size:
                frame = bytes(self._buf[self._pos + head : self._pos + head + size])
                self._pos += head + size
                done = self._take(frame, more)
                if done is not None:
                    return done
                continue
            if size > _CHUNK:  # a big kept frame: read it straight into its own buffer
                self._pos += head
                have = len(self._buf) - self._pos
                self._big = bytearray(size)
                self._big[:have] = self._buf[self._pos :]
                self._big_fill, self._big_more = have, more
                self._pos = len(self._buf)
                continue
            # wait for the rest of a small frame; undo the count, it is taken again when complete
            part.size -= size
            part.nframes -= 1
            return None

    def _take(self, frame: Frame, more: bool) -> list[Frame] | Dropped | None:
        part = self._partial
        part.frames.append(frame)
        if more:
            return None
        if part.dropping:
            return self._finish_dropped()
        self._partial = _Partial()
        return part.frames

    def _finish_dropped(self) -> Dropped:
        part, self._partial = self._partial, _Partial()
        return Dropped(frames=part.frames, size=part.size, nframes=part.nframes)

    def _command(self, command: bytes) -> None:
        if command.startswith(b"\x04PING") and self.sock is not None:
            # PONG echoes the PING's context (after its 2-byte TTL)
            try:
                self._write(_command_frame(b"\x04PONG" + command[7:]), 1.0)
            except ChannelError:
                pass
        elif command.startswith(b"\x05ERROR"):
            self.close()
            raise ChannelError(f"the kernel's socket sent ERROR on {self.path}")

    @property
    def partial_bytes(self) -> int:
        """Bytes of a message in progress (read, being dropped, or waiting in the read-ahead buffer): non-zero
        when the stream stopped between two message boundaries."""
        part = self._partial
        pending = len(self._buf) - self._pos
        if part.nframes or part.frames or self._skip or self._big is not None or pending:
            return max(1, part.size + pending + self._skip)
        return 0


def _wire(frames: list[bytes]) -> bytes:
    """One message as ZMTP frames."""
    wire = bytearray()
    for i, body in enumerate(frames):
        more = _MORE if i < len(frames) - 1 else 0
        if len(body) < 256:
            wire += bytes([more, len(body)])
        else:
            wire += bytes([more | _LONG]) + struct.pack(">Q", len(body))
        wire += body
    return bytes(wire)


def _connect_no_follow(sock: socket.socket, path: str) -> None:
    """Connect to the unix socket at `path` itself, never through a symlink: kernel code can write the directory
    the sockets live in, and the host (often root) must not follow a link it planted to a socket of the host's.
    The name is opened O_PATH|O_NOFOLLOW, checked to be a socket, and connected to through /proc/self/fd."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ChannelError(f"{path} is not a socket (a symlink or a file put there by kernel code?)")
        sock.connect(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value


def _properties(data: bytes) -> dict[bytes, bytes]:
    props: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        n = data[pos]
        name = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if pos + 4 > len(data):
            break
        (size,) = struct.unpack_from(">I", data, pos)
        props[name] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return props


def _command_frame(body: bytes) -> bytes:
    if len(body) < 256:
        return bytes([_COMMAND, len(body)]) + body
    return bytes([_COMMAND | _LONG]) + struct.pack(">Q", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            raise ChannelError("the peer did not finish the handshake in time") from None
        if not chunk:
            raise ChannelError("the peer closed the connection during the handshake")
        data += chunk
    return bytes(data)


def wait_readable(channels: list[ZmtpChannel], timeout: float) -> list[bool]:
    """Which channels have something to read (or a message already buffered), waiting up to `timeout`."""
    ready = [ch.has_buffered for ch in channels]
    if any(ready):
        return ready
    poller = select.poll()
    fds = {}
    for i, ch in enumerate(channels):
        if ch.sock is not None:
            fds[ch.fileno()] = i
            poller.register(ch.fileno(), select.POLLIN)
    if not fds:
        time.sleep(max(0.0, min(timeout, 0.01)))  # nothing to wait on yet: a connect is retried soon
        return ready
    try:
        events = poller.poll(max(0, int(timeout * 1000)))
    except InterruptedError:
        return ready
    for fd, _ev in events:
        ready[fds[fd]] = True
    return ready


__all__ = ["ChannelError", "Dropped", "Frame", "ZmtpChannel", "wait_readable"]
