"""Issue 9, item 1: kernel code cannot push unbounded memory into the host over the kernel's ZMQ channels.

Kernel code owns the kernel's end of every channel and its signing key. The attacks (shared with
bench/bench_hostile_kernel.py, which prints the figures) write straight into the kernel's connections to the
host: signed messages of 8 MB on shell, control and IOPub while no cell runs, and one message of endless 1 MB
frames (never a last one), which libzmq's per-frame MAXMSGSIZE and per-message RCVHWM do not stop. Measured
before the fix: host RSS +230 to +650 MB for the floods, +420 to +800 MB for one endless message.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_hostile_kernel as hostile  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("each_transport")]

LIMIT = 50 << 20
"""The issue's target for host RSS growth per sandbox, whatever the kernel sends."""


@pytest.fixture
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="1g", pids=128), cell_timeout=10,
                       interrupt_grace=1.0) as sandbox:
        yield sandbox


def test_signed_floods_on_every_channel_while_no_cell_runs(sb: DockerSandbox) -> None:
    growth, results = hostile.attack_growth(sb, hostile.idle_flood(), idle_s=4.0)
    assert growth < LIMIT, f"host RSS grew by {growth / 2**20:.0f} MiB"
    assert results[-1].result == "2", results[-1].text
    # nothing was read while no cell waited: the floods' messages were skipped unread by the next cell
    assert sb.run_cell("1+1").result == "2"


@pytest.mark.parametrize("channel", ["2", "1"], ids=["iopub", "shell"])
def test_an_endless_message_is_dropped_as_it_streams(sb: DockerSandbox, channel: str) -> None:
    growth, results = hostile.attack_growth(sb, hostile.endless_message(channel=channel), idle_s=4.0)
    assert growth < LIMIT, f"host RSS grew by {growth / 2**20:.0f} MiB"
    assert results[-1].result == "2", results[-1].text  # the channel was connected again, clean


def test_one_huge_frame_on_shell_is_dropped_unread(sb: DockerSandbox) -> None:
    # a reply of 300 MB announced in one frame header: the host reads and discards it in chunks
    code = hostile._PRELUDE + r'''
def _lllm_huge():
    time.sleep(0.5)
    chunk = bytes([2]) + struct.pack('>Q', 300 << 20)
    deadline = time.monotonic() + 20
    for fd in _lllm_channel_fds().get('1', []):
        if _lllm_write(fd, chunk, deadline):
            for _ in range(300):
                if not _lllm_write(fd, b'z' * (1 << 20), deadline):
                    break
threading.Thread(target=_lllm_huge, daemon=True).start()
'''
    growth, results = hostile.attack_growth(sb, code, idle_s=3.0)
    assert growth < LIMIT, f"host RSS grew by {growth / 2**20:.0f} MiB"
    assert results[-1].result == "2", results[-1].text


def test_the_host_never_follows_a_socket_path_the_kernel_replaced(sb: DockerSandbox, tmp_path: Path) -> None:
    # The kernel's sockets live in a directory kernel code can write. It swaps IOPub's for a symlink to a socket
    # of the host's (the container cannot reach it, but the host, reconnecting as root, would) and breaks the
    # live connection so that the host connects again.
    import socket

    bait = socket.socket(socket.AF_UNIX)
    bait.bind(str(tmp_path / "host-only.sock"))
    bait.listen(1)
    bait.settimeout(4.0)
    code = hostile._PRELUDE + f'''
fds = _lllm_channel_fds().get('2', [])
os.unlink('/run/lllm/kernel-2')
os.symlink({str(tmp_path / "host-only.sock")!r}, '/run/lllm/kernel-2')
for fd in fds:
    socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
'''
    sb.run_cell(code)
    sb.run_cell("1+1", timeout=5)  # the host reads IOPub, sees it closed, connects again
    try:
        conn, _ = bait.accept()
    except socket.timeout:
        conn = None
    finally:
        bait.close()
    assert conn is None, "the host followed the kernel's symlink to one of its own sockets"
    sb.restart()  # a new kernel binds its sockets again
    assert sb.run_cell("1+1").result == "2"
