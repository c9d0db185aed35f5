"""Packages without opening the network: a relay from a sandbox's pip to the package index the host uses.

`DockerSandbox(packages="index")` keeps `--network none`. This module serves HTTP on a unix socket in the
sandbox's session directory (`packages.sock`, bridged like the CALL_API gateway's); inside the container a
forwarder (`sandbox/lllm_pkgforward.py`) joins `127.0.0.1:3141` to it, and pip is pointed there with
`PIP_INDEX_URL`. The relay fetches on the host, with the host's index and trust settings, and it forwards only:

- GET (and HEAD) requests, with no header of the sandbox's but a fixed `Accept`;
- the index's own pages: its root and one project page below it (`<index path>/<name>/`), on the index's host;
- files that a page the relay served linked to (exactly those URLs, and their PEP 658 `.metadata`), on
  whatever host the index sent them to (`files.pythonhosted.org` for PyPI).

Everything else is refused with 403 and recorded. Pages are rewritten so that their links lead back through
the relay: URL `/<n>/<path>` means origin number n (0 is the index). Credentials in the index URL stay on the
host. Each file fetched is one `PackageRecord` (package, version, file, bytes) to the sandbox's tracer, and so
to the LogStore; a project the index does not have is one record with status `not_found`.

Which index: `$LLLM_PACKAGE_INDEX`, else `$PIP_INDEX_URL`, else pip's own configuration (`pip config list`:
`global.index-url` or `install.index-url`), else PyPI. A CA bundle comes from `$PIP_CERT` or pip's `cert`
setting, else the usual environment (`SSL_CERT_FILE`). What the sandbox can still do through it: ask the index
for any project name and fetch any file the index lists, so a page name can carry data out to the index's
logs; that is the price of `packages="index"`, which is off by default.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import posixpath
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from lllm.errors import SandboxStartError, UsageError
from lllm.records import PackageRecord

__all__ = ["GUEST_PORT", "PackageIndex", "PackageRelay", "SOCKET_NAME", "host_index", "split_filename"]

SOCKET_NAME = "packages.sock"
GUEST_PORT = 3141
"""The port of the forwarder on the container's loopback."""
PYPI = "https://pypi.org/simple/"
MAX_ORIGINS = 16
MAX_FILES = 500_000
MAX_PAGE_BYTES = 64 << 20
MAX_REFUSAL_RECORDS = 50
_PROJECT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,200}[A-Za-z0-9])?/?")
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.I | re.S)
_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_ACCEPT_JSON = f"{_JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_ACCEPT_HTML = "application/vnd.pypi.simple.v1+html, text/html;q=0.1"
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg")


@dataclass(frozen=True)
class PackageIndex:
    """The package index the host uses (see the module docstring for where it is found)."""

    url: str
    """The simple index URL, as configured (it may carry credentials: never shown, never sent to a sandbox)."""
    source: str
    """Where it came from: `LLLM_PACKAGE_INDEX`, `PIP_INDEX_URL`, `pip config (global.index-url)`, `default`."""
    verify: str | bool = True
    """A CA bundle path (`PIP_CERT`, pip's `cert`), or True for the environment's defaults."""

    @property
    def parts(self) -> Any:
        return urlsplit(self.url)

    @property
    def origin(self) -> str:
        p = self.parts
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{p.scheme}://{host}" + (f":{p.port}" if p.port else "")

    @property
    def path(self) -> str:
        """The index's path, ending in `/` (`/simple/`)."""
        path = self.parts.path or "/"
        return path if path.endswith("/") else path + "/"

    @property
    def auth(self) -> tuple[str, str] | None:
        p = self.parts
        return (unquote(p.username or ""), unquote(p.password or "")) if p.username or p.password else None

    @property
    def display(self) -> str:
        """The URL without credentials (what messages and records show)."""
        return self.origin + self.path


def _pip_config() -> dict[str, str]:
    """`pip config list` of the pip next to this interpreter ({} when there is none)."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip().strip("'\"")
    return found


_config_lock = threading.Lock()
_config_cache: dict[str, str] | None = None


def host_index() -> PackageIndex:
    """The package index this host is configured with (see the module docstring).

    Raises:
        UsageError: the configured URL is not an http(s) URL.
    """
    global _config_cache
    cert = os.environ.get("PIP_CERT")
    url, source = os.environ.get("LLLM_PACKAGE_INDEX"), "LLLM_PACKAGE_INDEX"
    if not url:
        url, source = os.environ.get("PIP_INDEX_URL"), "PIP_INDEX_URL"
    if not url or not cert:
        with _config_lock:
            if _config_cache is None:
                _config_cache = _pip_config()
            config = _config_cache
        if not url:
            for key in ("global.index-url", "install.index-url", "download.index-url"):
                if config.get(key):
                    url, source = config[key], f"pip config ({key})"
                    break
        cert = cert or config.get("global.cert") or config.get("install.cert")
    if not url:
        url, source = PYPI, "default"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the package index {source}={_without_credentials(url)!r} is not an http(s) URL; set "
                         "LLLM_PACKAGE_INDEX to your index's simple API, like https://pypi.org/simple/")
    return PackageIndex(url=url, source=source, verify=cert or True)


def _without_credentials(url: str) -> str:
    p = urlsplit(url)
    if not (p.username or p.password):
        return url
    host = p.hostname or ""
    return urlunsplit((p.scheme, host + (f":{p.port}" if p.port else ""), p.path, p.query, p.fragment))


def split_filename(filename: str) -> tuple[str | None, str | None]:
    """(normalised project name, version) of a wheel or sdist file name; (None, None) when it is neither."""
    name = filename
    if name.endswith(".whl"):
        parts = name[:-4].split("-")
        if len(parts) >= 5:
            return _normalise(parts[0]), parts[1]
        return None, None
    for suffix in (".tar.gz", ".zip", ".tar.bz2", ".tgz"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            project, sep, version = stem.rpartition("-")
            return (_normalise(project), version) if sep else (None, None)
    return None, None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, package: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.package = package


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _client(verify: str | bool) -> Any:
    """One httpx client per trust setting, shared by every relay of this process (it is thread-safe)."""
    key = str(verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import httpx

            client = httpx.Client(verify=verify, timeout=httpx.Timeout(60.0, connect=15.0), trust_env=True,
                                  headers={"User-Agent": "lllm-package-relay (pip in an lllm sandbox)"},
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
            _clients[key] = client
        return client


class PackageRelay:
    """Serve one sandbox's pip on `<session_dir>/packages.sock` (see the module docstring).

    Args:
        session_dir: the sandbox's session directory (the socket goes there, mode 0666 like the gateway's).
        index: the host's package index (`host_index()`).
        report: receives each `PackageRecord` (from the relay's threads).
        sandbox_id: written into the records.
        max_connections: connections served at once; more get 503.
        max_bytes: bytes of files the sandbox may fetch in all; past it, 403.
        idle_timeout: seconds a connection may stay silent.
    """

    def __init__(self, session_dir: Path, index: PackageIndex, *, report: Callable[[PackageRecord], None],
                 sandbox_id: str = "", max_connections: int = 16, max_bytes: int = 4 << 30,
                 idle_timeout: float = 120.0) -> None:
        self.session_dir = Path(session_dir)
        self.socket_path = self.session_dir / SOCKET_NAME
        self.index = index
        self.report = report
        self.sandbox_id = sandbox_id
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.origins: list[str] = [index.origin]
        self.files: dict[str, str] = {}
        """Files the relay's pages linked to: their URL with the path unquoted (pip re-quotes what it requests)
        -> the URL as the index wrote it (what is fetched)."""
        self.bytes_served = 0
        self.refusals = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._handler = type("_BoundHandler", (_Handler,), {"relay": self})

    def guest_index_url(self, port: int = GUEST_PORT) -> str:
        """The `PIP_INDEX_URL` for the container: the forwarder on its loopback, origin 0, the index's path."""
        return f"http://127.0.0.1:{port}/0{self.index.path}"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> PackageRelay:
        """Bind the socket and serve in a background thread.

        Raises:
            SandboxStartError: the socket could not be made (the session directory is not usable).
        """
        try:
            from lllm._unixsock import bind_unix

            self._listener = bind_unix(self.socket_path)
            _chmod_socket(self.socket_path, 0o666)  # the kernel's uid must connect; the directory is mode 700
        except OSError as exc:
            if self._listener is not None:
                self._listener.close()
            raise SandboxStartError(f"the package relay could not listen on {str(self.socket_path)!r}: {exc}",
                                    path=str(self.socket_path)) from exc
        self._thread = threading.Thread(target=self._accept_loop, name=f"lllm-pkgrelay-{self.sandbox_id}",
                                         daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: the socket goes, open connections are cut, a summary of refusals is recorded."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        if self.refusals > MAX_REFUSAL_RECORDS:
            self._record(status="refused", error="more refused requests (not recorded one by one)",
                         count=self.refusals - MAX_REFUSAL_RECORDS)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                try:
                    conn.sendall(b"HTTP/1.1 503 Too many connections\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass
                conn.close()
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            conn.settimeout(self.idle_timeout)
            self._handler(conn, "sandbox", None)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the relay
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass
            self._slots.release()

    # -- records -------------------------------------------------------------------------------------------
    def _record(self, *, status: str, package: str | None = None, version: str | None = None,
                filename: str | None = None, size: int = 0, duration: float = 0.0, error: str | None = None,
                count: int = 1, url: str | None = None) -> None:
        try:
            self.report(PackageRecord(sandbox_id=self.sandbox_id, package=package, version=version,
                                      filename=filename, index_url=self.index.display, status=status,
                                      bytes=size, duration_s=duration, error=error, count=count,
                                      url=_without_credentials(url) if url else None))
        except Exception:  # noqa: BLE001 - a tracer that fails must not break pip's download
            pass

    def _refused(self, refusal: _Refused, path: str) -> None:
        with self._lock:
            self.refusals += 1
            over = self.refusals > MAX_REFUSAL_RECORDS
        if refusal.status == 404:
            self._record(status="not_found", package=refusal.package, error=refusal.message)
        elif not over:
            self._record(status="refused", package=refusal.package, error=f"{refusal.message} ({path[:200]!r})")

    # -- requests ------------------------------------------------------------------------------------------
    def resolve(self, path: str) -> tuple[str, str]:
        """The upstream URL of a relay path and what it is (`page`, `file`, `metadata`).

        Raises:
            _Refused: it is none of what the relay forwards.
        """
        match = re.fullmatch(r"/(\d{1,3})(/[^?#]*)(\?[^#]*)?", path)
        if not match:
            raise _Refused(403, "not a relay URL")
        number, rest, query = int(match.group(1)), match.group(2), match.group(3) or ""
        if any(seg in (".", "..") for seg in unquote(rest).split("/")) or "//" in rest:
            raise _Refused(403, "a path with . or .. segments")
        if number >= len(self.origins):
            raise _Refused(403, "an unknown host number")
        if number == 0 and not query and rest.startswith(self.index.path):
            below = rest[len(self.index.path):]
            if below == "" or _PROJECT.fullmatch(below):
                return self.origins[0] + rest, "page"
        key = self.origins[number] + unquote(rest) + query
        with self._lock:
            if key in self.files:
                return self.files[key], "file"
            if key.endswith(".metadata") and key[: -len(".metadata")] in self.files:
                return self.files[key[: -len(".metadata")]] + ".metadata", "metadata"
        raise _Refused(403, "not a page of the package index, nor a file one of its pages links to")

    def _relay_link(self, link: str, base: str) -> str:
        """A link of an index page, made to lead through the relay (and its file allowed)."""
        absolute = urljoin(base, link)
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "#"
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            try:
                number = self.origins.index(origin)
            except ValueError:
                if len(self.origins) >= MAX_ORIGINS:
                    return "#"
                self.origins.append(origin)
                number = len(self.origins) - 1
            if len(self.files) < MAX_FILES:
                key = origin + unquote(parts.path) + (f"?{parts.query}" if parts.query else "")
                self.files[key] = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        path = parts.path if parts.path.startswith("/") else "/" + parts.path
        return f"/{number}{path}" + (f"?{parts.query}" if parts.query else "") + \
            (f"#{parts.fragment}" if parts.fragment else "")

    def rewrite_page(self, body: bytes, content_type: str, base: str) -> bytes:
        """An index page (PEP 503 HTML or PEP 691 JSON) with its file links leading through the relay."""
        if _JSON_TYPE in content_type:
            data = json.loads(body)
            for entry in data.get("files") or []:
                if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                    entry["url"] = self._relay_link(entry["url"], base)
            return json.dumps(data).encode()
        text = body.decode("utf-8", errors="replace")

        def swap(m: re.Match[str]) -> str:
            new = self._relay_link(html.unescape(m.group(3)), base)
            return f"{m.group(1)}{m.group(2)}{html.escape(new, quote=True)}{m.group(2)}"

        return _HREF.sub(swap, text).encode()

    def serve(self, handler: _Handler, *, head: bool) -> None:
        """Answer one request of pip (see the module docstring)."""
        started = time.monotonic()
        path = handler.path
        try:
            if self._closed:
                raise _Refused(503, "the sandbox is closing")
            url, what = self.resolve(path)
            if what == "page":
                self._serve_page(handler, url, head=head)
            else:
                self._serve_file(handler, url, what, head=head, started=started)
        except _Refused as refusal:
            self._refused(refusal, path)
            handler.reply(refusal.status, refusal.message)

    def _auth_for(self, url: str) -> tuple[str, str] | None:
        return self.index.auth if url.startswith(self.index.origin + "/") else None

    def _serve_page(self, handler: _Handler, url: str, *, head: bool) -> None:
        accept = _ACCEPT_JSON if _JSON_TYPE in (handler.headers.get("Accept") or "") else _ACCEPT_HTML
        project = url[len(self.index.origin + self.index.path):].strip("/") or None
        current = url
        try:
            for _ in range(6):
                status, headers, content = self._fetch_page(current, accept)
                if 300 <= status < 400 and headers.get("location"):
                    nxt = urljoin(current, headers["location"])
                    if not (nxt.startswith(self.index.origin + self.index.path)):
                        raise _Refused(502, "the index redirected outside itself")
                    current = nxt
                    continue
                break
            else:
                raise _Refused(502, "the index redirected too often")
        except _Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary to the network: say what failed
            self._record(status="error", package=_normalise(project) if project else None,
                         error=f"the index did not answer: {type(exc).__name__}: {exc}"[:500], url=url)
            handler.reply(502, f"the package index {self.index.display} did not answer: {type(exc).__name__}")
            return
        if status == 404:
            raise _Refused(404, f"the package index {self.index.display} has no project {project!r}",
                           package=_normalise(project) if project else None)
        if status != 200:
            self._record(status="error", package=_normalise(project) if project else None,
                         error=f"the index answered {status}", url=url)
            handler.reply(502, f"the package index answered {status}")
            return
        content_type = headers.get("content-type", "text/html")
        try:
            body = self.rewrite_page(content, content_type, current)
        except ValueError as exc:
            handler.reply(502, f"the index page could not be read: {exc}")
            return
        out_type = _JSON_TYPE if _JSON_TYPE in content_type else "text/html; charset=utf-8"
        handler.send_response(200)
        handler.send_header("Content-Type", out_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "max-age=0")
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _fetch_page(self, url: str, accept: str) -> tuple[int, dict[str, str], bytes]:
        """One GET of an index page, read up to `MAX_PAGE_BYTES` (a larger one is refused, not held)."""
        body = bytearray()
        with _client(self.index.verify).stream("GET", url, headers={"Accept": accept}, auth=self._auth_for(url),
                                               follow_redirects=False) as response:
            if response.status_code == 200:
                for chunk in response.iter_bytes(65536):
                    body += chunk
                    if len(body) > MAX_PAGE_BYTES:
                        raise _Refused(502, "the index page is too large")
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, bytes(body)

    def _serve_file(self, handler: _Handler, url: str, what: str, *, head: bool, started: float) -> None:
        filename = posixpath.basename(unquote(urlsplit(url).path))
        package, version = split_filename(filename) if what == "file" else (None, None)
        with self._lock:
            if self.bytes_served >= self.max_bytes:
                raise _Refused(403, f"this sandbox fetched {self.bytes_served} bytes of packages, its limit",
                               package=package)
        client = _client(self.index.verify)
        sent = 0
        try:
            with client.stream("HEAD" if head else "GET", url, auth=self._auth_for(url),
                               follow_redirects=True) as response:
                if response.status_code != 200:
                    handler.reply(404 if response.status_code == 404 else 502,
                                  f"the file host answered {response.status_code}")
                    if what == "file":
                        self._record(status="error", package=package, version=version, filename=filename,
                                     error=f"the file host answered {response.status_code}", url=url,
                                     duration=time.monotonic() - started)
                    return
                length = response.headers.get("content-length")
                handler.send_response(200)
                handler.send_header("Content-Type", response.headers.get("content-type",
                                                                         "application/octet-stream"))
                if response.headers.get("content-encoding"):
                    handler.send_header("Content-Encoding", response.headers["content-encoding"])
                if length is not None and length.isdigit():
                    handler.send_header("Content-Length", length)
                else:
                    handler.send_header("Connection", "close")
                    handler.close_connection = True
                handler.end_headers()
                if not head:
                    for chunk in response.iter_raw(65536):
                        with self._lock:
                            if self._closed or self.bytes_served + len(chunk) > self.max_bytes:
                                raise _Cut("over the sandbox's package budget" if not self._closed else "closed")
                            self.bytes_served += len(chunk)
                        handler.wfile.write(chunk)
                        sent += len(chunk)
        except _Cut as cut:
            handler.close_connection = True
            if what == "file":
                self._record(status="error", package=package, version=version, filename=filename, size=sent,
                             error=f"cut off: {cut}", url=url, duration=time.monotonic() - started)
            return
        except OSError as exc:  # pip went away mid-file, or the upstream failed
            handler.close_connection = True
            if what == "file":
                self._record(status="error", package=package, version=version, filename=filename, size=sent,
                             error=f"{type(exc).__name__}: {exc}"[:500], url=url,
                             duration=time.monotonic() - started)
            return
        except Exception as exc:  # noqa: BLE001 - httpx errors: the file host did not answer
            handler.close_connection = True
            if sent == 0:
                try:
                    handler.reply(502, f"the file host did not answer: {type(exc).__name__}")
                except OSError:
                    pass
            if what == "file":
                self._record(status="error", package=package, version=version, filename=filename, size=sent,
                             error=f"{type(exc).__name__}: {exc}"[:500], url=url,
                             duration=time.monotonic() - started)
            return
        if what == "file" and not head and filename.endswith(_ARCHIVES):
            self._record(status="ok", package=package, version=version, filename=filename, size=sent,
                         duration=time.monotonic() - started, url=url)


class _Cut(Exception):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 over the relay's unix socket (keep-alive: pip reuses its connections)."""

    protocol_version = "HTTP/1.1"
    server_version = "lllm-package-relay"
    sys_version = ""
    relay: PackageRelay

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def address_string(self) -> str:
        return "sandbox"

    def reply(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.relay.serve(self, head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self.relay.serve(self, head=True)

    def _refuse(self) -> None:
        self.close_connection = True  # whatever body it sent is not read
        self.relay._refused(_Refused(405, f"method {self.command} is not relayed (GET only)"), self.path)
        self.reply(405, "the package relay forwards GET requests only")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_CONNECT = do_TRACE = _refuse  # noqa: N815


# -- socket helpers (the relay's and the gateway's: the container can write to the session directory) ---------
def _chmod_socket(path: Path, mode: int) -> None:
    """chmod the socket just bound, never what a symlink the container put in its place points to."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{str(path)!r} is no longer the relay's socket")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
