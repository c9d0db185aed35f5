"""The relay transport: a sandbox on any Docker engine, with nothing shared but the Docker API.

The local transport bind-mounts the host's session directory at `/run/lllm`. A remote engine (`tcp://`,
`ssh://`) cannot see the host's files, so with this transport `/run/lllm` is a small tmpfs in the container and
the two directories are kept alike by a relay (`lllm.sandbox._relay_core`) over one `docker exec` whose stdin
and stdout are the stream: the kernel's five sockets, the gateway's socket, the branch kernels' sockets and
gateway sockets, `kernel.json`, `gateway.token`, `kernel.state`, the branch requests and replies, `last_used`.
The host keeps presenting the same unix sockets and files in its own session directory, so the kernel client,
the gateway and forks work unchanged. Files of the workspace do not go through it: `upload`, `download` and
their folder forms stream over exec'd helpers (the engine's archive API cannot see tmpfs mounts).

The container's main process waits (up to the start timeout) for the connection file to arrive over the relay
before it runs the kernel supervisor; after a restart of the whole container the relay is started again.
"""

from __future__ import annotations

import os
import select
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

from lllm.errors import SandboxStartError
from lllm.sandbox import _docker
from lllm.sandbox._relay_core import Relay

GUEST_SOURCE = Path(__file__).with_name("_relay_core.py").read_text(encoding="utf-8").encode()
BOOTSTRAP = ("import sys; n = int(sys.stdin.buffer.readline(32)); "
             "exec(compile(sys.stdin.buffer.read(n), 'lllm_relay', 'exec'))")
"""The guest relay's command line: its source comes first on stdin (not in argv, which /proc shows)."""
_MUX = struct.Struct(">BxxxL")
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def wait_for_connection_file(run_dir: str, timeout: float) -> list[str]:
    """The container's command: wait for `kernel.json` to arrive over the relay, then become the supervisor."""
    script = (
        "import os, sys, time\n"
        f"path = {run_dir + '/kernel.json'!r}; end = time.monotonic() + {timeout:.1f}\n"
        "while not os.path.exists(path) and time.monotonic() < end: time.sleep(0.01)\n"
        "os.execv(sys.executable, [sys.executable, '/opt/lllm/guest/kernel_start.py'])\n"
    )
    return ["python3", "-I", "-c", script]


class HostRelay:
    """The host's end of the relay for one container: the exec'd guest relay and the pump thread of its stream.

    Raises (start):
        SandboxStartError: the engine refused the exec, or the guest relay did not answer.
    """

    def __init__(self, container: Any, session_dir: Path, *, user: str, run_dir: str = "/run/lllm",
                 max_file: int = 256 << 20, peer_names: set[str] | None = None) -> None:
        self.container = container
        self.session_dir = session_dir
        self.user = user
        self.run_dir = run_dir
        self.max_file = max_file
        self.peer_names = set(peer_names or ())
        """Names the container made, known to the relay before this one: still the container's."""
        self.relay: Relay | None = None
        self.conn: Any = None
        self.sock: Any = None
        self._out = bytearray()
        self._io = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._alive = False
        self.stderr = bytearray()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> HostRelay:
        api = self.container.client.api
        with _docker.translate_errors("start the sandbox's relay"):
            exec_id = api.exec_create(self.container.id, ["python3", "-I", "-c", BOOTSTRAP, self.run_dir,
                                                          str(self.max_file), "lllm-relay"],
                                      stdout=True, stderr=True, stdin=True, user=self.user)["Id"]
            self.conn = api.exec_start(exec_id, socket=True)
        self.exec_id = exec_id
        self.sock = getattr(self.conn, "_sock", self.conn)
        self.sock.setblocking(False)
        self._alive = True
        self._send(b"%d\n" % len(GUEST_SOURCE) + GUEST_SOURCE)
        self.relay = Relay(str(self.session_dir), self._send, odd=True, authoritative=True, max_file=self.max_file)
        self.relay.from_peer |= self.peer_names
        self._thread = threading.Thread(target=self._pump, daemon=True, name="lllm-relay-pump")
        self._thread.start()
        self.relay.start()
        if not self.relay.flush(timeout):
            tail = self.stderr[-2000:].decode("utf-8", "replace")
            self.close()
            raise SandboxStartError(f"the sandbox's relay did not answer within {timeout:g}s"
                                    + (f"; it said: {tail}" if tail else ""))
        return self

    @property
    def alive(self) -> bool:
        return self._alive

    def flush(self, timeout: float = 10.0) -> bool:
        """What the host wrote reached the container, and what the container wrote before reached the host."""
        relay = self.relay
        return relay is not None and self._alive and relay.flush(timeout)

    def _send(self, data: bytes) -> None:
        if not self._alive:
            raise OSError("the sandbox's relay has ended")
        with self._io:
            if not self._out:
                try:
                    sent = self.sock.send(data)
                except _WOULD_BLOCK:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            self._out += data
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _pump(self) -> None:
        sock = self.sock
        pending = bytearray()
        try:
            while self._alive:
                got = bytearray()
                eof = False
                with self._io:
                    while True:
                        try:
                            chunk = sock.recv(1 << 16)
                        except _WOULD_BLOCK:
                            break
                        if not chunk:
                            eof = True
                            break
                        got += chunk
                    while self._out:
                        try:
                            sent = sock.send(self._out[: 1 << 16])
                        except _WOULD_BLOCK:
                            break
                        del self._out[:sent]
                    want_write = bool(self._out)
                if got:
                    pending += got
                    while len(pending) >= _MUX.size:
                        stream, size = _MUX.unpack_from(pending)
                        if len(pending) < _MUX.size + size:
                            break
                        body = bytes(pending[_MUX.size:_MUX.size + size])
                        del pending[:_MUX.size + size]
                        if stream == 1 and self.relay is not None:
                            self.relay.feed(body)
                        elif stream == 2:
                            self.stderr += body
                            del self.stderr[:-8192]
                    continue
                if eof:
                    break
                if getattr(sock, "pending", lambda: 0)():
                    continue
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                select.select([sock, self._wake_r], [sock] if want_write else [], [], 1.0)
        except (OSError, ValueError):
            pass
        self._alive = False
        if self.relay is not None:  # the container (or its relay) ended: its mirrors here go too
            for waiter in list(self.relay.sync_waiters.values()):
                waiter.set()
            self.relay.close()

    def close(self) -> None:
        self._alive = False
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self.relay is not None:
            self.relay.close()
        for closing in (lambda: self.sock.shutdown(2), self.sock.close, self.conn.close):
            try:  # the socket itself, not only the SDK's wrapper: the guest relay must see its stdin end
                closing()
            except (OSError, AttributeError, ValueError):
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


class SyncedContainer:
    """The container, with every signal sent after the relay has delivered what the host wrote before it (a
    branch request file, then SIGUSR1 to the supervisor). Everything else is the docker SDK's object."""

    def __init__(self, container: Any, transport: Any) -> None:
        object.__setattr__(self, "_container", container)
        object.__setattr__(self, "_transport", transport)

    def kill(self, signal: Any = None) -> Any:
        if signal not in (None, "SIGKILL", 9):
            self._transport.flush(5.0)
        return self._container.kill(signal=signal) if signal is not None else self._container.kill()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._container, name, value)
