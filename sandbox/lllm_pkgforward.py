"""The guest end of the package relay: a TCP listener on the container's loopback that pipes to the host.

The container has no network (`--network none` leaves only `lo`). With `DockerSandbox(packages="index")` the
host serves a package-index relay on the unix socket `$LLLM_RUN_DIR/packages.sock` (the session directory,
bind-mounted like the gateway's socket) and starts the container with `PIP_INDEX_URL` pointing at
`http://127.0.0.1:$LLLM_PACKAGE_PORT/...`. pip cannot speak to a unix socket, so the kernel supervisor starts
this forwarder: every TCP connection it accepts on that port is joined byte for byte to a new connection to
the host's socket. It knows nothing of HTTP; the host's relay decides what is fetched (GETs to the configured
index and the file hosts its pages link to, nothing else).

Run as `python3 -I lllm_pkgforward.py` (stdlib only). Kernel code can kill it or take its port: the supervisor
starts it again if it dies; either way nothing more than the relay allows can reach the host.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

RUN_DIR = os.environ.get("LLLM_RUN_DIR", "/run/lllm")
SOCKET_PATH = os.path.join(RUN_DIR, "packages.sock")
MAX_CONNECTIONS = 32
_slots = threading.BoundedSemaphore(MAX_CONNECTIONS)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _join(client: socket.socket) -> None:
    try:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(SOCKET_PATH)
        except OSError:
            upstream.close()
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        upstream.close()
    except OSError:
        pass
    finally:
        client.close()
        _slots.release()


def serve(port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    while True:
        client, _ = listener.accept()
        if not _slots.acquire(blocking=False):
            client.close()  # pip retries; a flood from kernel code gets nothing more than this
            continue
        threading.Thread(target=_join, args=(client,), daemon=True).start()


def main() -> None:
    port = int(os.environ.get("LLLM_PACKAGE_PORT", "3141"))
    try:
        serve(port)
    except OSError as exc:
        sys.stderr.write(f"lllm_pkgforward: cannot listen on 127.0.0.1:{port}: {exc}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
