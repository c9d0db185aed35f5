"""The host's ZMTP reader (`lllm.sandbox._zmtp`) against real libzmq peers and a raw hostile one, no kernel."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from lllm.sandbox._zmtp import ChannelError, Dropped, ZmtpChannel, wait_readable


def recv_one(ch: ZmtpChannel, timeout: float = 5.0) -> list | Dropped:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wait_readable([ch], 0.1)
        msg = ch.recv()
        if msg is not None:
            return msg
    raise AssertionError("no message")


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_dealer_talks_to_a_libzmq_router(ctx: zmq.Context, tmp_path: Path) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{tmp_path}/shell")
    ch = ZmtpChannel(f"{tmp_path}/shell", b"DEALER", max_message_bytes=1 << 20)
    assert ch.connect()
    ch.send([b"<IDS|MSG>", b"sig", b"x" * 300])
    ident, *frames = router.recv_multipart()
    assert frames == [b"<IDS|MSG>", b"sig", b"x" * 300]
    router.send_multipart([ident, b"reply", b"y" * 100_000])
    assert recv_one(ch) == [b"reply", b"y" * 100_000]
    ch.close()


def test_sub_receives_what_a_libzmq_pub_publishes_and_drops_what_is_too_big(ctx: zmq.Context, tmp_path: Path) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.bind(f"ipc://{tmp_path}/iopub")
    ch = ZmtpChannel(f"{tmp_path}/iopub", b"SUB", max_message_bytes=1 << 20)
    assert ch.connect()
    deadline = time.monotonic() + 5
    got = None
    while got is None and time.monotonic() < deadline:  # a SUB joins late: publish until it hears
        pub.send_multipart([b"topic", b"hello"])
        wait_readable([ch], 0.05)
        got = ch.recv()
    assert got == [b"topic", b"hello"]
    while ch.recv() is not None:
        pass
    pub.send_multipart([b"topic", b"h" * 10, b"z" * (3 << 20)])  # over the limit: dropped as it streams
    pub.send_multipart([b"after"])
    dropped = recv_one(ch)
    assert isinstance(dropped, Dropped) and dropped.size > 3 << 20 and dropped.frames[:2] == [b"topic", b"h" * 10]
    assert recv_one(ch) == [b"after"]  # the stream goes on in step
    ch.close()


def raw_peer(path: str, socket_type: bytes, payload: bytes) -> threading.Thread:
    """A peer that speaks ZMTP by hand (as kernel code can) and writes `payload` after the handshake."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" * 32)
        conn.recv(64)
        body = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", len(socket_type)) + socket_type
        conn.sendall(bytes([4, len(body)]) + body)
        try:
            conn.sendall(payload)
            time.sleep(0.5)
        except OSError:
            pass
        conn.close()
        srv.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_endless_message_costs_no_more_than_a_read_buffer(tmp_path: Path) -> None:
    frame = bytes([3]) + struct.pack(">Q", 1 << 20) + b"q" * (1 << 20)  # MORE | LONG, 1 MiB, never the last
    path = str(tmp_path / "endless")
    raw_peer(path, b"PUB", frame * 64)
    ch = ZmtpChannel(path, b"SUB", max_message_bytes=4 << 20)
    assert ch.connect()
    biggest = 0
    deadline = time.monotonic() + 10
    with pytest.raises(ChannelError):  # the peer hangs up at the end
        while time.monotonic() < deadline:
            wait_readable([ch], 0.1)
            assert ch.recv() is None
            biggest = max(biggest, len(ch._buf) + sum(len(f) for f in ch._partial.frames))
    assert ch.dropped_bytes > 32 << 20 and biggest < 5 << 20  # 64 MiB streamed by, never more than the limit held


def test_too_many_frames_and_bad_flags(tmp_path: Path) -> None:
    small = b"".join(bytes([1, 1]) + b"f" for _ in range(100)) + bytes([0, 1]) + b"e"
    path = str(tmp_path / "frames")
    raw_peer(path, b"ROUTER", small + bytes([0xF0, 0]))
    ch = ZmtpChannel(path, b"DEALER", max_message_bytes=1 << 20, max_frames=64)
    assert ch.connect()
    msg = recv_one(ch)
    assert isinstance(msg, Dropped) and msg.nframes == 101
    with pytest.raises(ChannelError, match="bad frame flags"):
        recv_one(ch)
    assert not ch.connected


def test_a_wrong_peer_type_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "wrong")
    raw_peer(path, b"PUSH", b"")
    ch = ZmtpChannel(path, b"SUB", max_message_bytes=1 << 20)
    assert not ch.connect() and not ch.connected


def test_a_symlink_in_place_of_the_socket_is_never_followed(ctx: zmq.Context, tmp_path: Path) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{tmp_path}/real")
    (tmp_path / "planted").symlink_to(tmp_path / "real")
    ch = ZmtpChannel(str(tmp_path / "planted"), b"DEALER", max_message_bytes=1 << 20)
    assert not ch.connect()
    assert ZmtpChannel(str(tmp_path / "real"), b"DEALER", max_message_bytes=1 << 20).connect()
