"""The egress proxy: every byte a browser context sends goes through it, and it enforces the `UrlPolicy`.

Playwright's routing does not see redirects (the browser follows them on its own), and it does not see
WebSocket handshakes or requests a service worker makes. So each `BrowserSession` starts one of these on
the driver's loop, bound to 127.0.0.1 on a free port, and creates its browser context with it as the HTTP
proxy (with loopback included, `<-loopback>`). It understands the two forms a browser sends a proxy:

- `CONNECT host:port` (HTTPS, WSS): the host and port are checked; the tunnel connects to the checked
  address, so DNS cannot be re-pointed between the check and the connection;
- `GET http://host:port/path` (plain HTTP, WS): checked the same way, forwarded in origin form with
  `Connection: close`, so one proxy connection carries one request and every request is checked.

A refused request gets `403` with a short page that says why (the model sees it in the snapshot), and
`on_blocked(url, reason)` is called so the session can report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from typing import Callable
from urllib.parse import urlsplit

from lllm.tools.cua.safety import UrlPolicy, Verdict

__all__ = ["EgressProxy"]

_MAX_HEAD = 64 * 1024
_HOP_HEADERS = {"proxy-connection", "connection", "keep-alive", "proxy-authorization", "te", "trailer"}


class EgressProxy:
    """An HTTP/HTTPS forward proxy that applies a `UrlPolicy`. Start and close it on the driver's loop.

    Args:
        policy: The session's URL policy.
        on_blocked: Called with `(url, reason)` for every refused request.
        connect_timeout: Seconds to connect upstream.
    """

    def __init__(self, policy: UrlPolicy, *, on_blocked: Callable[[str, str], None], connect_timeout: float = 10.0) -> None:
        self.policy = policy
        self.on_blocked = on_blocked
        self.connect_timeout = connect_timeout
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests = 0
        """How many requests (tunnels or plain) it handled, allowed or not."""

    async def start(self) -> int:
        """Listen on 127.0.0.1 on a free port; returns the port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def server_url(self) -> str:
        """The proxy URL for Playwright's `proxy={"server": ...}`."""
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        for task in list(self._tasks):
            task.cancel()

    async def _check(self, host: str, port: int, url: str) -> Verdict:
        loop = asyncio.get_running_loop()
        if url:
            return await loop.run_in_executor(None, self.policy.check_url, url)
        return await loop.run_in_executor(None, lambda: self.policy.check_host(host, port))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._refuse(writer, "", "malformed proxy request", status="400 Bad Request")
            return
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            try:
                port = int(port_text)
            except ValueError:
                await self._refuse(writer, target, f"bad CONNECT target {target!r}", status="400 Bad Request")
                return
            host = host.strip("[]")
            scheme = "https" if port != 80 else "http"
            verdict = await self._check(host, port, "")
            shown = f"{scheme}://{target}/"
            if not verdict.allowed:
                await self._refuse(writer, shown, verdict.reason)
                return
            upstream = await self._connect(verdict, port)
            if upstream is None:
                await self._refuse(writer, shown, f"could not connect to {target}", status="502 Bad Gateway")
                return
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await self._pipe_both(reader, writer, *upstream)
            return
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("http", "ws") or not parts.hostname:
            await self._refuse(writer, target, f"the proxy only forwards http:// URLs, got {target!r}",
                               status="400 Bad Request")
            return
        check_url = target if parts.scheme.lower() == "http" else "http" + target[2:]
        verdict = await self._check(parts.hostname, parts.port or 80, check_url)
        if not verdict.allowed:
            await self._refuse(writer, target, verdict.reason)
            return
        upstream = await self._connect(verdict, parts.port or 80)
        if upstream is None:
            await self._refuse(writer, target, f"could not connect to {parts.netloc}", status="502 Bad Gateway")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        upgrade = any(line.lower().startswith("upgrade:") for line in lines[1:])
        out = [f"{method} {path} {version}"]
        for line in lines[1:]:
            if not line:
                continue
            name = line.split(":", 1)[0].strip().lower()
            if name in _HOP_HEADERS and not (upgrade and name == "connection"):
                continue
            out.append(line)
        if not upgrade:
            out.append("Connection: close")
        up_reader, up_writer = upstream
        up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        await up_writer.drain()
        await self._pipe_both(reader, writer, up_reader, up_writer)

    async def _connect(self, verdict: Verdict, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for addr in verdict.addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(addr, port), self.connect_timeout)
            except (OSError, asyncio.TimeoutError):
                continue
        return None

    async def _refuse(self, writer: asyncio.StreamWriter, url: str, reason: str, *, status: str = "403 Forbidden") -> None:
        if status.startswith("403"):
            self.on_blocked(url, reason)
        body = (
            "<!doctype html><title>Blocked by the browser policy</title>"
            f"<h1>Blocked by the browser policy</h1><p>{html.escape(url)}</p><p>{html.escape(reason)}</p>"
        ).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        with contextlib.suppress(Exception):
            await writer.drain()

    async def _pipe_both(
        self,
        c_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        u_reader: asyncio.StreamReader,
        u_writer: asyncio.StreamWriter,
    ) -> None:
        self._writers.add(u_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

        tasks = [asyncio.ensure_future(pipe(c_reader, u_writer)), asyncio.ensure_future(pipe(u_reader, c_writer))]
        try:
            # The upstream's answer ending (or the browser hanging up) ends the exchange: close both sides.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(u_writer)
            with contextlib.suppress(Exception):
                u_writer.close()
