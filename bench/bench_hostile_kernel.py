"""Host memory under a hostile kernel: how much a sandbox's kernel can push into the host process.

    .venv/bin/python bench/bench_hostile_kernel.py

Kernel code holds the kernel's end of every ZMQ channel (and its signing key), so it can write whatever it
likes to the host: signed messages of any size on shell, control and IOPub while no cell runs, or one endless
multipart message whose last frame never comes. Each attack below runs in a real DockerSandbox; the figure is
the host process's peak RSS growth while it lasts and through the next cells, printed next to the growth of
the same cells without an attack (the baseline measured in this run) and checked against the target (50 MB).

The attack cells are also used by tests/security/test_channels.py.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

TARGET_BYTES = 50 << 20

_PRELUDE = r'''
import os, select, socket, struct, threading, time

def _lllm_channel_fds():
    """The kernel's accepted connections from the host, by channel number (1 shell, 2 iopub, 4 control)."""
    found = {}
    for name in os.listdir('/proc/self/fd'):
        fd = int(name)
        try:
            if not os.readlink('/proc/self/fd/%d' % fd).startswith('socket:'):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if (probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM
                    and not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                path = probe.getsockname()
                if isinstance(path, str) and '/kernel-' in path:
                    found.setdefault(path.rsplit('-', 1)[1], []).append(fd)
        finally:
            probe.close()
    return found

def _lllm_frames(parts):
    """ZMTP 3 data frames (long form) for one message."""
    out = []
    for i, body in enumerate(parts):
        out.append(bytes([2 | (1 if i < len(parts) - 1 else 0)]) + struct.pack('>Q', len(body)) + body)
    return b''.join(out)

def _lllm_write(fd, data, deadline):
    view = memoryview(data)
    while view:
        if time.monotonic() > deadline:
            return False
        try:
            view = view[os.write(fd, view[:1 << 20]):]
        except BlockingIOError:
            select.select([], [fd], [], 0.2)
        except OSError:
            return False
    return True
'''

IDLE_FLOOD = r'''
def _lllm_flood(message_bytes={message_bytes}, count={count}, seconds={seconds}):
    time.sleep(1.0)  # the cell that started this has ended: the host is idle
    session = get_ipython().kernel.session
    msg = session.msg('stream', {{'name': 'stdout', 'text': 'x' * message_bytes}},
                      parent={{'msg_id': 'no-cell-waits-for-this', 'session': 'x'}})
    body = session.serialize(msg)
    fds = _lllm_channel_fds()
    wire = {{'1': _lllm_frames(body), '4': _lllm_frames(body), '2': _lllm_frames([b'kernel.x.stream'] + body)}}
    deadline = time.monotonic() + seconds
    for _ in range(count):
        for chan, data in wire.items():
            for fd in fds.get(chan, []):
                if not _lllm_write(fd, data, deadline):
                    return
threading.Thread(target=_lllm_flood, daemon=True).start()
'''

ENDLESS_MESSAGE = r'''
def _lllm_endless(frame_bytes={frame_bytes}, count={count}, seconds={seconds}):
    time.sleep(1.0)
    chunk = bytes([3]) + struct.pack('>Q', frame_bytes) + b'y' * frame_bytes  # MORE | LONG: never the last
    deadline = time.monotonic() + seconds
    for _ in range(count):
        for fd in _lllm_channel_fds().get('{channel}', []):
            if not _lllm_write(fd, chunk, deadline):
                return
threading.Thread(target=_lllm_endless, daemon=True).start()
'''


def idle_flood(*, message_mb: int = 8, count: int = 40, seconds: float = 8.0) -> str:
    """A cell that, once it has ended, writes `count` signed `message_mb` MB messages to each of shell, control
    and IOPub (about 3 x 320 MB by default), for at most `seconds`."""
    return _PRELUDE + IDLE_FLOOD.format(message_bytes=message_mb << 20, count=count, seconds=seconds)


def endless_message(*, channel: str = "2", frame_mb: int = 1, count: int = 400, seconds: float = 8.0) -> str:
    """A cell that, once it has ended, writes `count` frames of `frame_mb` MB to one channel (2: IOPub, 1:
    shell), every one flagged MORE: a message with no end."""
    return _PRELUDE + ENDLESS_MESSAGE.format(frame_bytes=frame_mb << 20, count=count, seconds=seconds, channel=channel)


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakRss:
    """Samples this process's RSS in a thread; `growth` is the peak over the value at entry."""

    def __init__(self) -> None:
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def attack_growth(sandbox: Any, attack: str | None, *, idle_s: float = 6.0, after_cells: int = 3) -> tuple[int, list[Any]]:
    """Run `attack` (None: a harmless cell), leave the host idle `idle_s`, then run `after_cells` cells of
    `1+1`; return the host's peak RSS growth over all of it and those cells' results."""
    sandbox.run_cell("1+1", timeout=10)  # warm: the first cell's allocations are not the attack's
    with PeakRss() as rss:
        sandbox.run_cell(attack or "pass", timeout=10)
        time.sleep(idle_s)
        results = [sandbox.run_cell("1+1", timeout=10) for _ in range(after_cells)]
    return rss.growth, results


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lllm.sandbox import DockerSandbox, SandboxLimits
    from lllm.sandbox.image import ensure_image

    image = ensure_image()
    limits = SandboxLimits(memory="1g", pids=128)
    attacks = {
        "signed floods on shell+control+iopub, idle": idle_flood(),
        "endless multipart message on iopub": endless_message(channel="2"),
        "endless multipart message on shell": endless_message(channel="1"),
    }
    with DockerSandbox(image=image, limits=limits) as sb:
        base, _ = attack_growth(sb, None)
    print(f"baseline: host RSS growth over the same cells without an attack: {base / 2**20:6.1f} MiB\n")
    for name, code in attacks.items():
        with DockerSandbox(image=image, limits=limits) as sb:
            growth, results = attack_growth(sb, code)
        ok = [r.result == "2" for r in results]
        ratio = growth / max(base, 1 << 20)
        print(f"{name:<48} host RSS +{growth / 2**20:7.1f} MiB   vs baseline {base / 2**20:5.1f} MiB   "
              f"ratio {ratio:6.1f}   target <= 50 MiB: {'met' if growth <= TARGET_BYTES else 'MISSED'}   "
              f"cells after: {ok}")


if __name__ == "__main__":
    main()
