"""A second Docker engine for tests, on loopback TCP with TLS, sharing no files with the client.

`RemoteEngine.start()` makes a CA, a server certificate for 127.0.0.1 and a client certificate (openssl), then
runs `dockerd` with its own data root, exec root, pidfile and containerd namespaces, `--bridge=none
--iptables=false`, under `unshare --mount --net` with empty tmpfs over /tmp, /var/tmp and /dev/shm: the engine
cannot see the client's session directories, so a sandbox that worked through a bind mount would fail there.
Its own network namespace matters: a dockerd started with `--bridge=none` deletes the `docker0` interface it
finds (moby's removeDefaultBridgeInterface), which in the host's namespace is the main engine's bridge, and
every later `docker build` with a RUN step then fails with "could not find bridge docker0". A small forwarder
(`FORWARDER`) listens on the host's 127.0.0.1:PORT and carries each connection's bytes, TLS and all, to the
engine's 127.0.0.1:PORT inside its namespace. `load(image)` copies an image over with
`docker save | docker -H ... load`. `stop()` ends the engine (and the containers it ran) and removes its folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = Path("/var/lib/lllm-test-engines")
"""Not under /tmp: the engine's own mount namespace hides /tmp."""

FORWARDER = r"""
import ctypes, os, socket, sys, threading
port, netns = int(sys.argv[1]), sys.argv[2]
server = socket.create_server(("127.0.0.1", port))  # made before setns: it stays in the host's namespace
fd = os.open(netns, os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET (os.setns is 3.12+)
    sys.exit(f"setns {netns}: {os.strerror(ctypes.get_errno())}")
os.close(fd)  # threads started from now on connect inside the engine's namespace
print("ready", flush=True)

def pump(src, dst):
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)  # hijacked exec streams half-close: pass it on
    except OSError:
        pass

def serve(client):
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    for sock in (client, upstream):  # a relayed cell is many small writes: Nagle + delayed ACKs cost ~80 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()

while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
"""Host 127.0.0.1:PORT -> the engine's 127.0.0.1:PORT in its own network namespace (stdlib only)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificates(folder: Path) -> dict[str, Path]:
    """ca.pem, server (cert/key for 127.0.0.1) and client (cert.pem, key.pem) under `folder`, via openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=lllm test CA")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}-key.pem", "-out", f"{who}.csr",
            "-subj", f"/CN=lllm test {who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{who}-cert.pem", "-days", "2", "-extfile", f"{who}.ext")
    client = folder / "client"
    client.mkdir(exist_ok=True)
    shutil.copy(folder / "ca.pem", client / "ca.pem")
    shutil.copy(folder / "client-cert.pem", client / "cert.pem")
    shutil.copy(folder / "client-key.pem", client / "key.pem")
    return {"ca": folder / "ca.pem", "cert": folder / "server-cert.pem", "key": folder / "server-key.pem",
            "client": client}


class RemoteEngine:
    def __init__(self) -> None:
        BASE.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="engine-", dir=BASE))
        self.port = _free_port()
        self.host = f"tcp://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.forwarder: subprocess.Popen[str] | None = None
        self.certs: dict[str, Path] = {}

    @property
    def client_certs(self) -> Path:
        """The folder with ca.pem, cert.pem, key.pem for `tls=` / DOCKER_CERT_PATH."""
        return self.certs["client"]

    def cli(self, *args: str) -> list[str]:
        c = self.client_certs
        return ["docker", "-H", self.host, "--tlsverify", "--tlscacert", str(c / "ca.pem"), "--tlscert",
                str(c / "cert.pem"), "--tlskey", str(c / "key.pem"), *args]

    def start(self, timeout: float = 60.0) -> RemoteEngine:
        self.certs = make_certificates(self.root / "certs")
        (self.root / "daemon.json").write_text("{}")
        name = self.root.name
        dockerd = (f"dockerd --config-file {self.root}/daemon.json --data-root {self.root}/data "
                   f"--exec-root {self.root}/exec --pidfile {self.root}/exec/docker.pid -H {self.host} "
                   f"--tlsverify --tlscacert {self.certs['ca']} --tlscert {self.certs['cert']} "
                   f"--tlskey {self.certs['key']} --bridge=none --iptables=false --ip-masq=false "
                   f"--containerd-namespace {name} --containerd-plugins-namespace {name}-plugins")
        hide = ("mount -t tmpfs none /tmp && mount -t tmpfs none /var/tmp && mount -t tmpfs none /dev/shm "
                "&& ip link set lo up")
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - the engine's own log, kept with it
        self.proc = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
                                      f"{hide} && exec {dockerd}"], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        # unshare and sh exec in place: the engine's pid is this one, and its namespace is there from the start
        self.forwarder = subprocess.Popen([sys.executable, "-I", "-c", FORWARDER, str(self.port),
                                           f"/proc/{self.proc.pid}/ns/net"], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                          start_new_session=True)
        assert self.forwarder.stdout is not None
        ready = self.forwarder.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the test engine's forwarder did not start: {ready} {self.forwarder.stdout.read()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the test engine exited: {self.log_tail()}")
            if subprocess.run(self.cli("info", "--format", "{{.ServerVersion}}"), capture_output=True,
                              timeout=20).returncode == 0:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test engine did not answer within {timeout:g}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def load(self, image: str) -> None:
        """`docker save IMAGE | docker -H ... load`, unless the engine has it already."""
        if subprocess.run(self.cli("image", "inspect", image), capture_output=True, timeout=30).returncode == 0:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        loaded = subprocess.run(self.cli("load", "-q"), stdin=save.stdout, capture_output=True, timeout=600)
        save.wait(timeout=60)
        if loaded.returncode != 0 or save.returncode != 0:
            raise RuntimeError(f"loading {image} into the test engine failed: {loaded.stderr.decode()[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(self.cli("rm", "-f", *self.containers()), capture_output=True, timeout=60)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.kill()
            self.forwarder.wait(timeout=10)
        # The engine's mounts lived in its own namespace, gone with it: nothing of the data root is mounted here.
        shutil.rmtree(self.root, ignore_errors=True)

    def containers(self) -> list[str]:
        out = subprocess.run(self.cli("ps", "-aq"), capture_output=True, text=True, timeout=30)
        return out.stdout.split()
