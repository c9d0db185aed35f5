"""The CALL_API gateway: a host-side server on one unix socket per session that runs proxies for sandboxes.

```python
gateway = Gateway()                                   # or get_gateway(): one per process
session = gateway.open_session(sandbox.session_dir, ProxyManager(["fmp"]), session_id="s1",
                               tracer=tracer, token_owner=1000)
...                                                   # kernel code: CALL_API("fmp/price", {...})
session.close()                                       # socket and token gone; records flushed
```

`open_session` binds `<session_dir>/gateway.sock` (mode 0666) and writes a fresh random token to
`<session_dir>/gateway.token` (mode 0400, owned by `token_owner`: uid 1000 for a Docker sandbox, the current
user for a local one). Every request is checked, in this order: frame size, JSON and schema, token (a token
of another session is named as such), the session's token-bucket rate limit, the allowlist (the session's
`ProxyManager` holds only its activated proxies), then the proxy runs on the host in a worker thread under a
per-call timeout; the response is refused when over the size limit. A malformed or forged frame gets an error
reply; a frame whose length is over the limit closes that connection. Nothing a client sends stops the server.
Each request, refused or not, is reported as one `ApiCallRecord` to the session's tracer, from a reporter
thread so that a slow tracer does not slow calls down.
"""

from __future__ import annotations

import hmac
import json
import os
import queue
import secrets
import selectors
import socket
import stat
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.core.trace import ApiCallRecord, Tracer, null_tracer
from lllm.errors import (
    EndpointNotFound,
    GatewayAuthError,
    LLLMError,
    PayloadTooLarge,
    ProxyError,
    ProxyNotActivated,
    RateLimited,
    UsageError,
)
from lllm.proxies.base import to_json_bytes
from lllm.proxies.manager import ProxyManager
from lllm.proxies.wire import (
    ERROR_TYPES,
    HEADER,
    META_API_DOC,
    META_DIRECTORY,
    CallRequest,
    FrameError,
    encode_error,
    encode_ok,
)

__all__ = ["Gateway", "GatewayLimits", "GatewaySession", "get_gateway"]

SOCKET_NAME = "gateway.sock"
TOKEN_NAME = "gateway.token"

_STATUS = {
    "GatewayAuthError": "denied", "ProxyNotActivated": "denied", "EndpointNotFound": "not_found",
    "RateLimited": "rate_limited", "PayloadTooLarge": "too_large", "ProxyTimeout": "timeout",
    "BadRequest": "bad_request",
}


class GatewayLimits(BaseModel):
    """What one session may do through the gateway."""

    model_config = ConfigDict(extra="forbid")

    max_request_bytes: int = Field(default=256 * 1024, gt=0)
    """Largest request frame (token, path and params); a larger one closes the connection."""
    max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """Largest proxy result, as JSON; a larger one is refused with PayloadTooLarge."""
    rate: float = Field(default=1000.0, gt=0)
    """Sustained calls per second (token bucket refill)."""
    burst: int = Field(default=1000, gt=0)
    """Calls allowed at once above the sustained rate (bucket size)."""
    call_timeout: float = Field(default=30.0, gt=0)
    """Seconds one proxy call may run before the kernel gets a timeout error."""
    max_inflight: int = Field(default=8, gt=0)
    """Proxy calls of one session that may be running at once (hung calls included)."""
    max_connections: int = Field(default=16, gt=0)
    """Open connections per session."""
    frame_timeout: float = Field(default=10.0, gt=0)
    """Seconds to finish sending a frame once it has started."""


class _Bucket:
    """A token bucket; `take()` returns 0.0 when allowed, else the seconds until a token is there."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


class _DaemonPool:
    """Worker threads for proxy calls, started on demand up to `max_workers`. Daemon threads, unlike a
    ThreadPoolExecutor's, so that a proxy hanging forever cannot keep the process from exiting."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn))
        with self._lock:
            if self._idle == 0 and self._threads < self.max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"lllm-gw-proxy-{self._threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the waiting connection thread
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Ask every idle worker to stop (busy ones stop after their call)."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._queue.put(None)


class _Refused(Exception):
    """Internal: a refusal that exists only on the wire (ProxyTimeout, BadRequest)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class GatewaySession:
    """One session's socket, token, allowlist and limits. Made by `Gateway.open_session`."""

    def __init__(self, gateway: Gateway, session_dir: Path, manager: ProxyManager, *, session_id: str,
                 tracer: Tracer, limits: GatewayLimits, token_owner: int | None) -> None:
        self.gateway = gateway
        self.session_dir = session_dir
        self.manager = manager
        self.session_id = session_id
        self.tracer = tracer
        self.limits = limits
        self.token = secrets.token_urlsafe(32)
        self.socket_path = session_dir / SOCKET_NAME
        self.token_path = session_dir / TOKEN_NAME
        self.closed = False
        self.calls = 0
        """Requests answered (every status)."""
        self._bucket = _Bucket(limits.rate, limits.burst)
        self._inflight = threading.BoundedSemaphore(limits.max_inflight)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = _bind_unix(self.socket_path)
        try:
            _chmod_socket(self.socket_path, 0o666)
            self._write_token(token_owner)
        except BaseException:
            self._listener.close()
            _unlink(self.socket_path)
            _unlink(self.token_path)
            raise

    def _write_token(self, owner: int | None) -> None:
        _unlink(self.token_path)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        try:
            os.write(fd, self.token.encode())
            if owner is not None and owner != os.geteuid():
                os.fchown(fd, owner, owner)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ serving
    def _serve(self, conn: socket.socket) -> None:
        limits = self.limits
        try:
            while not self.closed:
                try:
                    payload = _recv_frame(conn, limits.max_request_bytes, limits.frame_timeout)
                except FrameError as exc:
                    self._report(None, None, "too_large", 0, 0, 0.0, str(exc))
                    _send(conn, encode_error(None, "PayloadTooLarge",
                                             f"{exc}; send smaller params (or raise the session's "
                                             "gateway limit max_request_bytes). The connection was closed."))
                    return
                if payload is None:
                    return
                _send(conn, self.handle(payload))
        except (OSError, EOFError):
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def handle(self, payload: bytes) -> bytes:
        """Answer one request payload (the JSON of a frame) with a whole reply frame; never raises."""
        t0 = time.perf_counter()
        call_id: Any = None
        proxy = endpoint = None
        try:
            try:
                obj = json.loads(payload)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise _Refused("BadRequest", f"the request is not UTF-8 JSON ({exc})") from None
            if isinstance(obj, dict):
                raw_id = obj.get("id")
                call_id = raw_id if isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool) else None
            try:
                req = CallRequest.model_validate(obj)
            except ValidationError as exc:
                problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                                    for e in exc.errors()[:3])
                raise _Refused("BadRequest", f"malformed CALL_API request: {problem}") from None
            call_id = req.id
            proxy, _, endpoint = req.path.partition("/")
            self._check_token(req.token)
            wait = self._bucket.take()
            if wait:
                raise RateLimited(
                    f"session {self.session_id!r} is over its CALL_API rate limit ({self.limits.rate:g} calls/s, "
                    f"burst {self.limits.burst}); retry after {wait:.3f}s, or batch your requests.",
                    retry_after=wait)
            if req.path.startswith("_meta/"):
                data = self._meta(req)
                proxy = endpoint = None
            else:
                _, proxy, endpoint = self.manager.resolve(req.path)
                data = self._run(req.path, req.params)
            if len(data) > self.limits.max_response_bytes:
                raise PayloadTooLarge(
                    f"the response of {req.path!r} is {len(data)} bytes, over the limit of "
                    f"{self.limits.max_response_bytes}; ask for less (a smaller limit or date range).",
                    size=len(data))
            frame = encode_ok(call_id, data)
            self._report(proxy, endpoint, "ok", len(payload), len(frame), time.perf_counter() - t0, None)
            return frame
        except _Refused as exc:
            return self._error(call_id, exc.error_type, str(exc), proxy, endpoint, len(payload), t0)
        except LLLMError as exc:
            name = type(exc).__name__
            return self._error(call_id, name if name in ERROR_TYPES else "ProxyError", str(exc), proxy,
                               endpoint, len(payload), t0)
        except Exception as exc:  # never let one request take the server down
            return self._error(call_id, "ProxyError", f"gateway error: {type(exc).__name__}: {exc}", proxy,
                               endpoint, len(payload), t0)

    def _error(self, call_id: Any, error_type: str, message: str, proxy: str | None, endpoint: str | None,
               request_bytes: int, t0: float) -> bytes:
        frame = encode_error(call_id, error_type, message)
        self._report(proxy, endpoint, _STATUS.get(error_type, "error"), request_bytes, len(frame),
                     time.perf_counter() - t0, f"{error_type}: {message}")
        return frame

    def _check_token(self, token: str) -> None:
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return
        if self.gateway._is_foreign_token(token, self):
            raise GatewayAuthError(
                "this request carries the token of another session; a sandbox may only call the gateway with "
                "its own session's token (read from $LLLM_RUN_DIR/gateway.token).")
        raise GatewayAuthError(
            "bad gateway token; CALL_API reads it from $LLLM_RUN_DIR/gateway.token at each call: do not pass "
            "your own, and do not edit that file.")

    def _meta(self, req: CallRequest) -> bytes:
        if req.path == META_DIRECTORY:
            return to_json_bytes(self.manager.directory())
        if req.path == META_API_DOC:
            name = (req.params or {}).get("name")
            if not isinstance(name, str):
                raise ProxyError(f"query_api_doc needs a proxy name (str), got {name!r}; activated: "
                                 f"{self.manager.available()!r}.")
            return to_json_bytes(self.manager.api_doc(name))
        raise EndpointNotFound(f"no gateway path {req.path!r}; reserved paths are "
                               f"{[META_API_DOC, META_DIRECTORY]!r}.")

    def _run(self, path: str, params: dict[str, Any] | None) -> bytes:
        if not self._inflight.acquire(blocking=False):
            raise ProxyError(
                f"{self.limits.max_inflight} CALL_API calls of this session are still running (hung proxies "
                "count until they return); wait for them, or call fewer at once.")
        manager = self.manager

        def work() -> bytes:
            try:
                return to_json_bytes(manager.call(path, params))
            finally:
                self._inflight.release()

        future = self.gateway._pool.submit(work)
        try:
            return future.result(timeout=self.limits.call_timeout)
        except FutureTimeout:
            raise _Refused("ProxyTimeout", f"{path!r} did not answer within {self.limits.call_timeout:g}s (the "
                                           "gateway's per-call timeout); try again later or ask for less.") from None

    def _report(self, proxy: str | None, endpoint: str | None, status: str, request_bytes: int,
                response_bytes: int, latency: float, error: str | None) -> None:
        self.calls += 1
        if self.tracer is null_tracer:
            return
        record = ApiCallRecord(session_id=self.session_id, proxy=(proxy or None) and proxy[:120],
                               endpoint=(endpoint or None) and endpoint[:120], status=status,  # type: ignore[arg-type]
                               request_bytes=request_bytes, response_bytes=response_bytes, latency_s=latency,
                               error=error[:2000] if error else None)
        self.gateway._reports.put((self.tracer, record))

    # ------------------------------------------------------------------ lifecycle
    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        conn.setblocking(True)
        with self._lock:
            if self.closed or len(self._conns) >= self.limits.max_connections:
                _send(conn, encode_error(None, "ProxyError", f"too many open gateway connections (limit "
                                                             f"{self.limits.max_connections}); reuse one."))
                conn.close()
                return
            self._conns.add(conn)
        threading.Thread(target=self._serve, args=(conn,), name=f"lllm-gw-{self.session_id}",
                         daemon=True).start()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every record of this gateway so far reached its tracer."""
        self.gateway.flush(timeout)

    def close(self) -> None:
        """Stop serving: close the socket and every connection, remove the socket and token files."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            conns = list(self._conns)
        self.gateway._forget(self)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        _unlink(self.socket_path)
        _unlink(self.token_path)
        self.flush()

    def __enter__(self) -> GatewaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Gateway:
    """The host-side CALL_API server: one acceptor thread for every session's socket, a thread per
    connection, and a shared worker pool in which proxies run.

    Args:
        limits: the default limits of new sessions.
        workers: threads in the proxy worker pool (shared by all sessions; each session is capped by
            `limits.max_inflight`).
    """

    def __init__(self, *, limits: GatewayLimits | None = None, workers: int = 64) -> None:
        self.limits = limits or GatewayLimits()
        self._pool = _DaemonPool(workers)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._sessions: dict[int, GatewaySession] = {}
        self._tokens: dict[str, GatewaySession] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reports: queue.Queue[Any] = queue.Queue()
        self.tracer_errors = 0
        """Tracer calls that raised (the gateway keeps going)."""
        self._acceptor = threading.Thread(target=self._accept_loop, name="lllm-gw-accept", daemon=True)
        self._acceptor.start()
        self._reporter = threading.Thread(target=self._report_loop, name="lllm-gw-report", daemon=True)
        self._reporter.start()

    def open_session(self, session_dir: str | os.PathLike[str], manager: ProxyManager, *,
                     session_id: str | None = None, tracer: Tracer | None = None,
                     limits: GatewayLimits | None = None, token_owner: int | None = None) -> GatewaySession:
        """Serve `manager`'s proxies on `<session_dir>/gateway.sock` with a fresh token.

        Args:
            session_dir: the sandbox's session directory (host side); it must exist.
            manager: the session's proxies: its activated proxies are the allowlist.
            session_id: names the session in records and messages.
            tracer: receives one ApiCallRecord per request.
            limits: this session's limits (default: the gateway's).
            token_owner: uid that owns gateway.token (1000 in a Docker sandbox; None: the current user).

        Raises:
            UsageError: the gateway is closed, or `session_dir` does not exist.
        """
        if self._closed:
            raise UsageError("this Gateway is closed; make a new one (or use get_gateway()).")
        path = Path(session_dir)
        if not path.is_dir():
            raise UsageError(f"session_dir {str(path)!r} is not a directory; start the sandbox first.")
        session = GatewaySession(self, path, manager, session_id=session_id or secrets.token_hex(6),
                                 tracer=tracer or null_tracer, limits=limits or self.limits,
                                 token_owner=token_owner)
        with self._lock:
            self._sessions[session._listener.fileno()] = session
            self._tokens[session.token] = session
            session._listener.setblocking(False)
            self._selector.register(session._listener, selectors.EVENT_READ, session)
        self._wake()
        return session

    def _forget(self, session: GatewaySession) -> None:
        with self._lock:
            self._tokens.pop(session.token, None)
            fd = session._listener.fileno()
            if fd >= 0 and self._sessions.pop(fd, None) is not None:
                try:
                    self._selector.unregister(session._listener)
                except (KeyError, ValueError):
                    pass
            session._listener.close()
        self._wake()

    def _is_foreign_token(self, token: str, session: GatewaySession) -> bool:
        other = self._tokens.get(token)
        return other is not None and other is not session

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                events = self._selector.select(timeout=1.0)
            except (OSError, ValueError):
                if self._closed:
                    return
                continue
            for key, _ in events:
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                session: GatewaySession = key.data
                if not session.closed:
                    session._accept()

    def _report_loop(self) -> None:
        while True:
            item = self._reports.get()
            try:
                if item is None:
                    return
                tracer, record = item
                try:
                    tracer(record)
                except Exception:  # a broken tracer must not break the gateway
                    self.tracer_errors += 1
            finally:
                self._reports.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout` s) until every queued record reached its tracer."""
        deadline = time.monotonic() + timeout
        while self._reports.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)

    @property
    def sessions(self) -> list[GatewaySession]:
        """The open sessions."""
        with self._lock:
            return list(self._sessions.values())

    def close(self) -> None:
        """Close every session and stop the threads."""
        for session in self.sessions:
            session.close()
        self._closed = True
        self._wake()
        self._reports.put(None)
        self._acceptor.join(timeout=5)
        self._reporter.join(timeout=5)
        self._pool.shutdown()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Gateway | None = None
_default_lock = threading.Lock()


def get_gateway() -> Gateway:
    """The process-wide gateway, started on first use (what run_python tools use)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Gateway()
        return _default


# ---------------------------------------------------------------------- socket helpers
def _chmod_socket(path: Path, mode: int) -> None:
    """chmod the socket we just bound, never what a symlink put in its place points to.

    Code in the sandbox can write to the session directory, so between bind() and chmod() it could swap the
    socket for a symlink to a host file; a plain chmod would follow it. Open the name without following links,
    check it is a socket, and change that inode through /proc/self/fd.
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ProxyError(f"{str(path)!r} is no longer the gateway's socket (something replaced it); the "
                             "session was not opened. Start a fresh sandbox.")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _bind_unix(path: Path) -> socket.socket:
    """Bind and listen on `path`; paths past the 107-byte AF_UNIX limit go through /proc/self/fd."""
    _unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        target = str(path)
        dirfd = None
        if len(os.fsencode(target)) > 100:
            dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            target = f"/proc/self/fd/{dirfd}/{path.name}"
        try:
            sock.bind(target)
        finally:
            if dirfd is not None:
                os.close(dirfd)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_frame(conn: socket.socket, max_bytes: int, frame_timeout: float) -> bytes | None:
    """One frame's payload, or None on EOF between frames; the body must arrive within `frame_timeout`."""
    head = conn.recv(4)
    if not head:
        return None
    conn.settimeout(frame_timeout)
    try:
        while len(head) < 4:
            more = conn.recv(4 - len(head))
            if not more:
                raise EOFError("connection closed mid-frame")
            head += more
        (length,) = HEADER.unpack(head)
        if length > max_bytes:
            raise FrameError(f"request frame of {length} bytes is over the gateway's limit of {max_bytes} bytes")
        buf = bytearray()
        while len(buf) < length:
            chunk = conn.recv(min(length - len(buf), 1 << 20))
            if not chunk:
                raise EOFError("connection closed mid-frame")
            buf += chunk
        return bytes(buf)
    except socket.timeout:
        raise EOFError(f"a frame was not completed within {frame_timeout}s") from None
    finally:
        conn.settimeout(None)


def _send(conn: socket.socket, frame: bytes) -> None:
    try:
        conn.sendall(frame)
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
