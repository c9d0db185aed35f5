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
user for a local one). The socket is reachable only from that session's sandbox, so everything that arrives on
it is charged to that session, before it is parsed or authenticated: each new connection and each frame takes
a token from the session's bucket (`rate`, `burst`), a frame over the bucket is answered `RateLimited` without
being parsed. Then, in this order: frame size, JSON and schema, token (a token of another session is named as
such), the allowlist (the session's `ProxyManager` holds only its activated proxies, and their budgets), then
the proxy runs on the host in a worker thread under a per-call timeout; the response is refused when over the
size limit. A frame has one deadline as a whole (`frame_timeout`), a silent connection is closed after
`idle_timeout`, and a connection whose refused frames (bad token, malformed, over the rate) outnumber its
answered ones by `max_refused` is closed; the session then accepts no new connection for `refusal_backoff` seconds (doubling while
it goes on), so a flooding cell costs the host little and other sessions nothing. Nothing a client sends stops
the server.

Records: every call that ran a proxy is one `ApiCallRecord` for the session's tracer; refusals are tallied per
session and reason and written as one record per reason (with `count`) every `summary_interval` seconds and
when the session closes. Records reach the tracer from a reporter thread, through a bounded queue: when a
tracer falls that far behind, records are dropped and counted (`records_dropped`, and a `dropped` record).
"""

from __future__ import annotations

import hmac
import json
import os
import queue
import re
import secrets
import select
import selectors
import socket
import stat
import threading
import time
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.records import PAYLOAD_CHARS, ApiCallRecord, Tracer, cap, null_tracer
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
from lllm.proxies.redact import scrub
from lllm.proxies.wire import (
    ERROR_TYPES,
    HEADER,
    META_API_DOC,
    META_DIRECTORY,
    CallRequest,
    FrameError,
    FrameTimeout,
    encode_error,
    encode_ok,
)

__all__ = ["Gateway", "GatewayLimits", "GatewaySession", "get_gateway"]

SOCKET_NAME = "gateway.sock"
TOKEN_NAME = "gateway.token"

_STATUS = {
    "GatewayAuthError": "denied", "ProxyNotActivated": "denied", "EndpointNotFound": "not_found",
    "RateLimited": "rate_limited", "PayloadTooLarge": "too_large", "ProxyTimeout": "timeout",
    "BadRequest": "bad_request", "ApiBudgetExceeded": "over_budget", "FrameTimeout": "bad_request",
    "TooManyConnections": "denied",
}
_TALLIED = frozenset({"ProxyNotActivated", "EndpointNotFound", "ApiBudgetExceeded"})
"""Refusals of authenticated requests: tallied like the refusals before authentication, but no strike."""
_STRIKES = frozenset({"GatewayAuthError", "BadRequest"})
"""Refusals before authentication (the rate limit, a frame too large or too slow are handled where read)."""
_MAX_TALLY_KEYS = 64
"""Distinct (reason, proxy, endpoint) tallies per session; beyond that, tallies are per reason only."""


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
    """Seconds to receive one whole frame from its first byte (one deadline for the frame, not per read), and to
    send a reply; a late frame is refused and its connection closed."""
    idle_timeout: float = Field(default=120.0, gt=0)
    """Seconds a connection may stay silent between frames; then it is closed (the guest reconnects)."""
    max_refused: int = Field(default=32, gt=0)
    """A connection is closed when its refused frames (bad token, malformed, over the rate) outnumber its
    answered ones by this many (32 refusals in a row, or mostly refusals for longer)."""
    refusal_backoff: float = Field(default=0.5, ge=0)
    """Seconds the session accepts no new connection after one was closed for refusals; doubles while the
    refusals go on (up to 16x) and is back to this after an accepted call."""
    summary_interval: float = Field(default=5.0, gt=0)
    """Seconds between the records that tally the session's refusals (one per reason, with a count); they are
    also written when the session closes or is flushed."""


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


class _Tally:
    """Refusals of one reason (and path) since the session's last summary record."""

    __slots__ = ("status", "error", "proxy", "endpoint", "count", "request_bytes", "response_bytes", "latency",
                 "started_at")

    def __init__(self, status: str, error: str, proxy: str | None, endpoint: str | None) -> None:
        self.status, self.error, self.proxy, self.endpoint = status, error, proxy, endpoint
        self.count = self.request_bytes = self.response_bytes = 0
        self.latency = 0.0
        self.started_at = time.time()


class GatewaySession:
    """One session's socket, token, allowlist and limits. Made by `Gateway.open_session`."""

    def __init__(self, gateway: Gateway, session_dir: Path, manager: ProxyManager, *, session_id: str,
                 tracer: Tracer, limits: GatewayLimits, token_owner: int | None, agent: str | None = None,
                 name: str = "gateway") -> None:
        self.gateway = gateway
        self.agent = agent
        self.session_dir = session_dir
        self.manager = manager
        self.session_id = session_id
        self.tracer = tracer
        self.limits = limits
        self.token = secrets.token_urlsafe(32)
        self.socket_path = session_dir / (SOCKET_NAME if name == "gateway" else f"{name}.sock")
        self.token_path = session_dir / (TOKEN_NAME if name == "gateway" else f"{name}.token")
        self.closed = False
        self.calls = 0
        """Requests answered (every status)."""
        self.refusals: Counter[str] = Counter()
        """Refused requests and connections since the session opened, by reason (`GatewayAuthError`,
        `RateLimited`, `BadRequest`, `FrameTimeout`, `TooManyConnections`, `ProxyNotActivated`, ...)."""
        self.connections_closed = 0
        """Connections the gateway closed for refusals (mostly refused frames, a bad or late frame)."""
        self.records_dropped = 0
        """Records of this session the bounded queue had no room for."""
        self._bucket = _Bucket(limits.rate, limits.burst)
        self._inflight = threading.BoundedSemaphore(limits.max_inflight)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str | None, str | None], _Tally] = {}
        self._tally_lock = threading.Lock()
        self._dropped_unreported = 0
        self._next_summary = time.monotonic() + limits.summary_interval
        self._backoff_level = 0
        self._penalty_until = 0.0
        from lllm._unixsock import bind_unix

        self._listener = bind_unix(self.socket_path)
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
        strikes = 0
        reader = _FrameReader(conn, limits)
        try:
            while not self.closed:
                try:
                    frame = self._read_frame(reader)
                except FrameTimeout as exc:
                    self._tally("FrameTimeout", f"{exc}; the connection was closed.")
                    self._close_for_refusals()
                    return
                except FrameError as exc:
                    message = (f"{exc}; send smaller params (or raise the session's gateway limit "
                               "max_request_bytes). The connection was closed.")
                    self._tally("PayloadTooLarge", message)
                    _send(conn, encode_error(None, "PayloadTooLarge", message), limits.frame_timeout)
                    self._close_for_refusals()
                    return
                if frame is None:
                    return
                payload, wait = frame
                if wait:  # over the rate: answered without being parsed or authenticated
                    message = (f"session {self.session_id!r} is over its CALL_API rate limit ({limits.rate:g} "
                               f"calls/s, burst {limits.burst}); retry after {wait:.3f}s, or batch your requests.")
                    self._tally("RateLimited", message, request_bytes=len(payload))
                    reply, strike, ok = encode_error(None, "RateLimited", message), True, False
                else:
                    reply, strike, ok = self._answer(payload)
                if not _send(conn, reply, limits.frame_timeout):
                    return
                # refusals count up and answered calls count down: a connection whose frames are mostly
                # refused is closed, even when an allowed call slips in between (a token refilled)
                if strike:
                    strikes += 1
                    if strikes >= limits.max_refused or self._penalized():
                        self._close_for_refusals()
                        return
                else:
                    strikes = max(0, strikes - 1)
                    if ok:
                        self._backoff_level = 0
        except (OSError, EOFError):
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _read_frame(self, reader: _FrameReader) -> tuple[bytes, float] | None:
        """The next frame's payload and the rate limit's verdict on it (0.0: allowed, else seconds to wait), or
        None when the client closed the connection or stayed silent for `idle_timeout` between frames.

        The frame is charged to the session's bucket as soon as it is in: before it is parsed or authenticated.
        """
        payload = reader.next_frame()
        if payload is None:
            return None
        return payload, self._bucket.take()

    def handle(self, payload: bytes) -> bytes:
        """Answer one request payload (the JSON of a frame) with a whole reply frame, charged to the session's
        rate limit as if it came over the socket; never raises."""
        wait = self._bucket.take()
        if wait:
            message = f"session {self.session_id!r} is over its CALL_API rate limit; retry after {wait:.3f}s."
            self._tally("RateLimited", message, request_bytes=len(payload))
            return encode_error(None, "RateLimited", message)
        return self._answer(payload)[0]

    def _answer(self, payload: bytes) -> tuple[bytes, bool, bool]:
        """(reply frame, refused before authentication, ok) for one request payload that the rate allowed."""
        t0 = time.perf_counter()
        call_id: Any = None
        proxy = endpoint = None
        params: Any = None
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
            params = req.params
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
            self._report(proxy, endpoint, "ok", len(payload), len(frame), time.perf_counter() - t0, None,
                         params=params, answer=data)
            return frame, False, True
        except _Refused as exc:
            error_type, message = exc.error_type, str(exc)
        except LLLMError as exc:
            name = type(exc).__name__
            error_type, message = (name if name in ERROR_TYPES else "ProxyError"), str(exc)
        except Exception as exc:  # never let one request take the server down
            error_type, message = "ProxyError", f"gateway error: {type(exc).__name__}: {exc}"
        message = scrub(message)
        frame = encode_error(call_id, error_type, message)
        latency = time.perf_counter() - t0
        if error_type in _STRIKES or error_type in _TALLIED:
            # a bad token names no trustworthy path: tally it by reason only
            trusted = error_type in _TALLIED
            self._tally(error_type, message, proxy=proxy if trusted else None,
                        endpoint=endpoint if trusted else None, request_bytes=len(payload),
                        response_bytes=len(frame), latency=latency)
        else:
            self._report(proxy, endpoint, _STATUS.get(error_type, "error"), len(payload), len(frame), latency,
                         f"{error_type}: {message}", params=params)
        return frame, error_type in _STRIKES, False

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

    # ------------------------------------------------------------------ refusals
    def _penalized(self) -> bool:
        return time.monotonic() < self._penalty_until

    def _close_for_refusals(self) -> None:
        """A connection is being closed for its refusals: accept no new one for a while (backpressure on the
        listen backlog costs the host nothing, whatever the client does meanwhile)."""
        with self._lock:
            self.connections_closed += 1
            backoff = self.limits.refusal_backoff * (2 ** min(self._backoff_level, 4))
            self._backoff_level += 1
            self._penalty_until = max(self._penalty_until, time.monotonic() + backoff)
            until = self._penalty_until
        if backoff > 0:
            self.gateway._pause(self, until)

    def _tally(self, reason: str, message: str, *, proxy: str | None = None, endpoint: str | None = None,
               request_bytes: int = 0, response_bytes: int = 0, latency: float = 0.0) -> None:
        """Count one refusal; the session's next summary record carries it (not a record of its own)."""
        self.calls += 1
        key = (reason, proxy and proxy[:120], endpoint and endpoint[:120])
        with self._tally_lock:
            self.refusals[reason] += 1
            tally = self._tallies.get(key)
            if tally is None:
                if len(self._tallies) >= _MAX_TALLY_KEYS:
                    key = (reason, None, None)
                    tally = self._tallies.get(key)
                if tally is None:
                    tally = self._tallies[key] = _Tally(_STATUS.get(reason, "error"), f"{reason}: {message}"[:2000],
                                                        key[1], key[2])
            tally.count += 1
            tally.request_bytes += request_bytes
            tally.response_bytes += response_bytes
            tally.latency += latency

    def _summaries(self) -> list[ApiCallRecord]:
        """The records of the refusals tallied (and records dropped) since the last summary; resets them."""
        with self._tally_lock:
            tallies, self._tallies = self._tallies, {}
            dropped, self._dropped_unreported = self._dropped_unreported, 0
            self._next_summary = time.monotonic() + self.limits.summary_interval
        records = [ApiCallRecord(session_id=self.session_id, proxy=t.proxy, endpoint=t.endpoint,
                                 status=t.status, request_bytes=t.request_bytes,
                                 response_bytes=t.response_bytes, latency_s=t.latency / t.count, error=t.error,
                                 count=t.count, started_at=t.started_at) for t in tallies.values()]
        if dropped:
            records.append(ApiCallRecord(
                session_id=self.session_id, status="dropped", count=dropped,
                error=f"RecordsDropped: {dropped} records of this session were dropped: its tracer fell more than "
                      f"{self.gateway.max_queued_records} records behind."))
        return records

    def _report(self, proxy: str | None, endpoint: str | None, status: str, request_bytes: int,
                response_bytes: int, latency: float, error: str | None, *, params: Any = None,
                answer: bytes | None = None) -> None:
        """One record for a call that got as far as its proxy: its params and answer (JSON text, secrets
        scrubbed, capped), built only when someone listens."""
        self.calls += 1
        if self.tracer is null_tracer:
            return
        params_text = None if params is None else cap(scrub(json.dumps(params, ensure_ascii=False, default=str)))
        # the answer's secrets were scrubbed by the proxy; cut before decoding (it may be megabytes)
        answer_text = None if answer is None else cap(answer[:PAYLOAD_CHARS * 4].decode("utf-8", "replace"))
        record = ApiCallRecord(session_id=self.session_id, agent=self.agent, proxy=(proxy or None) and proxy[:120],
                               endpoint=(endpoint or None) and endpoint[:120], status=status,
                               request_bytes=request_bytes, response_bytes=response_bytes, latency_s=latency,
                               error=error[:2000] if error else None, params=params_text, answer=answer_text)
        if not self.gateway._enqueue(self.tracer, record):
            with self._tally_lock:
                self.records_dropped += 1
                self._dropped_unreported += 1

    # ------------------------------------------------------------------ lifecycle
    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        wait = self._bucket.take()  # a connection is charged like a frame
        with self._lock:
            too_many = len(self._conns) >= self.limits.max_connections
            admitted = not (self.closed or too_many or wait)
            if admitted:
                self._conns.add(conn)
        if not admitted:
            if not self.closed:
                if wait:
                    reason, error_type = "RateLimited", "RateLimited"
                    message = (f"session {self.session_id!r} opens gateway connections faster than its rate limit "
                               f"({self.limits.rate:g}/s); keep one open, and retry after {wait:.3f}s.")
                else:
                    reason, error_type = "TooManyConnections", "ProxyError"
                    message = f"too many open gateway connections (limit {self.limits.max_connections}); reuse one."
                self._tally(reason, message)
                conn.setblocking(False)
                _send(conn, encode_error(None, error_type, message), 0)
                self._close_for_refusals()
            conn.close()
            return
        threading.Thread(target=self._serve, args=(conn,), name=f"lllm-gw-{self.session_id}",
                         daemon=True).start()

    def flush(self, timeout: float = 5.0) -> None:
        """Write this session's tallied refusals now, then wait until every record so far reached its tracer."""
        self.gateway._enqueue_summaries(self)
        self.gateway.flush(timeout)

    def close(self) -> None:
        """Stop serving: close the socket and every connection, remove the socket and token files, write the
        tallied refusals and wait for the records to reach the tracer."""
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
    connection, a shared worker pool in which proxies run, and a reporter thread for the records.

    Args:
        limits: the default limits of new sessions.
        workers: threads in the proxy worker pool (shared by all sessions; each session is capped by
            `limits.max_inflight`).
        max_queued_records: records waiting for their tracers, at most; past it they are dropped and counted.
    """

    def __init__(self, *, limits: GatewayLimits | None = None, workers: int = 64,
                 max_queued_records: int = 10_000) -> None:
        self.limits = limits or GatewayLimits()
        self.max_queued_records = max_queued_records
        self._pool = _DaemonPool(workers)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._sessions: dict[int, GatewaySession] = {}
        self._tokens: dict[str, GatewaySession] = {}
        self._paused: dict[GatewaySession, float] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reports: queue.Queue[Any] = queue.Queue(maxsize=max_queued_records)
        self.tracer_errors = 0
        """Tracer calls that raised (the gateway keeps going)."""
        self.records_dropped = 0
        """Records the bounded queue had no room for (every session)."""
        self.queued_records_peak = 0
        """The most records that were ever waiting for their tracers at once."""
        self._acceptor = threading.Thread(target=self._accept_loop, name="lllm-gw-accept", daemon=True)
        self._acceptor.start()
        self._reporter = threading.Thread(target=self._report_loop, name="lllm-gw-report", daemon=True)
        self._reporter.start()

    def open_session(self, session_dir: str | os.PathLike[str], manager: ProxyManager, *,
                     session_id: str | None = None, tracer: Tracer | None = None,
                     limits: GatewayLimits | None = None, token_owner: int | None = None,
                     agent: str | None = None, name: str = "gateway") -> GatewaySession:
        """Serve `manager`'s proxies on `<session_dir>/gateway.sock` with a fresh token.

        Args:
            session_dir: the sandbox's session directory (host side); it must exist.
            manager: the session's proxies: its activated proxies are the allowlist.
            session_id: names the session in records and messages.
            tracer: receives one ApiCallRecord per call that ran a proxy, and the tallies of refusals.
            limits: this session's limits (default: the gateway's).
            token_owner: uid that owns gateway.token (1000 in a Docker sandbox; None: the current user).
            agent: the agent whose sandbox this is (its name goes into the records).
            name: the base name of the socket and token files (`<name>.sock`, `<name>.token`); a branch kernel
                (`sb.fork()`) has its own, `gateway-<branch id>`, in the same session directory.

        Raises:
            UsageError: the gateway is closed, or `session_dir` does not exist.
        """
        if self._closed:
            raise UsageError("this Gateway is closed; make a new one (or use get_gateway()).")
        path = Path(session_dir)
        if not re.fullmatch(r"gateway(-[A-Za-z0-9]{1,32})?", name):
            raise UsageError(f"gateway file name {name!r} must be 'gateway' or 'gateway-<letters and digits>'")
        if not path.is_dir():
            raise UsageError(f"session_dir {str(path)!r} is not a directory; start the sandbox first.")
        session = GatewaySession(self, path, manager, session_id=session_id or secrets.token_hex(6),
                                 tracer=tracer or null_tracer, limits=limits or self.limits,
                                 token_owner=token_owner, agent=agent, name=name)
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
            self._paused.pop(session, None)
            fd = session._listener.fileno()
            if fd >= 0 and self._sessions.pop(fd, None) is not None:
                try:
                    self._selector.unregister(session._listener)
                except (KeyError, ValueError):
                    pass
            session._listener.close()
        self._wake()

    def _pause(self, session: GatewaySession, until: float) -> None:
        """Stop accepting `session`'s connections until `until` (monotonic): they wait in the listen backlog."""
        with self._lock:
            if session.closed or session._listener.fileno() < 0:
                return
            if session in self._paused:
                self._paused[session] = max(self._paused[session], until)
                return
            self._paused[session] = until
            try:
                self._selector.unregister(session._listener)
            except (KeyError, ValueError):
                pass
        self._wake()

    def _resume_due(self) -> float:
        """Accept again on the sessions whose pause is over; the seconds until the next one is (at most 1)."""
        now = time.monotonic()
        nearest = 1.0
        with self._lock:
            for session, until in list(self._paused.items()):
                if until > now:
                    nearest = min(nearest, until - now)
                    continue
                del self._paused[session]
                if not session.closed and session._listener.fileno() >= 0:
                    self._selector.register(session._listener, selectors.EVENT_READ, session)
        return nearest

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
                events = self._selector.select(timeout=self._resume_due())
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

    # ------------------------------------------------------------------ records
    def _enqueue(self, tracer: Tracer, record: Any) -> bool:
        """Queue a record for the reporter thread; False when the queue is full (the record is dropped)."""
        try:
            self._reports.put_nowait((tracer, record))
        except queue.Full:
            self.records_dropped += 1
            return False
        size = self._reports.qsize()
        if size > self.queued_records_peak:
            self.queued_records_peak = size
        return True

    def _enqueue_summaries(self, session: GatewaySession, timeout: float = 5.0) -> None:
        """Queue a session's tally records, waiting for room (they are few, and they carry the counts)."""
        if session.tracer is null_tracer:
            session._summaries()
            return
        for record in session._summaries():
            try:
                self._reports.put((session.tracer, record), timeout=timeout)
            except queue.Full:
                self.records_dropped += 1

    def _deliver(self, tracer: Tracer, record: Any) -> None:
        try:
            tracer(record)
        except Exception:  # a broken tracer must not break the gateway
            self.tracer_errors += 1

    def _report_loop(self) -> None:
        while True:
            try:
                item = self._reports.get(timeout=0.25)
            except queue.Empty:
                item = ()
            try:
                if item is None:
                    return
                if item:
                    self._deliver(*item)
            finally:
                if item != ():
                    self._reports.task_done()
            now = time.monotonic()
            for session in self.sessions:  # due tallies go straight to their tracers, never into the queue
                if session._next_summary <= now and not session.closed:
                    records = session._summaries()
                    if session.tracer is not null_tracer:
                        for record in records:
                            self._deliver(session.tracer, record)

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
        try:
            self._reports.put(None, timeout=5)
        except queue.Full:  # a tracer that hangs: its daemon reporter thread is left behind
            pass
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


class _FrameReader:
    """Frames from one connection, kept non-blocking: a read takes whatever is there (usually a whole frame in
    one call), and the thread waits in poll() only when there is nothing to read. That is fewer system calls a
    call than blocking reads with a timeout each, and it gives a frame one deadline for all its reads."""

    def __init__(self, conn: socket.socket, limits: GatewayLimits) -> None:
        conn.setblocking(False)
        self.conn = conn
        self.limits = limits
        self.buf = bytearray()
        self.poller = select.poll()
        self.poller.register(conn, select.POLLIN)

    def next_frame(self) -> bytes | None:
        """The next payload; None when the client closed the connection or stayed silent for `idle_timeout`
        between frames.

        Raises:
            FrameError: the declared length is over `max_request_bytes`.
            FrameTimeout: the frame did not arrive whole within `frame_timeout` of its first byte.
            EOFError: the connection closed in the middle of a frame.
        """
        limits = self.limits
        if not self.buf:
            try:
                # between frames the next request is rarely there yet: wait first
                if not self._fill(limits.idle_timeout, wait_first=True):
                    return None
            except EOFError:
                return None
        deadline = time.monotonic() + limits.frame_timeout
        while len(self.buf) < 4:
            self._fill_before(deadline)
        (length,) = HEADER.unpack_from(self.buf)
        if length > limits.max_request_bytes:
            raise FrameError(f"request frame of {length} bytes is over the gateway's limit of "
                             f"{limits.max_request_bytes} bytes")
        while len(self.buf) < 4 + length:
            self._fill_before(deadline)
        payload = bytes(self.buf[4:4 + length])
        del self.buf[:4 + length]
        return payload

    def _fill_before(self, deadline: float) -> None:
        if not self._fill(deadline - time.monotonic(), wait_first=False):
            raise FrameTimeout(f"a frame was not completed within {self.limits.frame_timeout:g}s of its first byte")

    def _fill(self, timeout: float, *, wait_first: bool) -> bool:
        """Read what is there into the buffer, waiting up to `timeout` s; False when nothing came in time."""
        while True:
            if wait_first and (timeout <= 0 or not self.poller.poll(max(1, int(timeout * 1000 + 0.999)))):
                return False
            try:
                chunk = self.conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                wait_first = True
                continue
            if not chunk:
                raise EOFError("the connection was closed")
            self.buf += chunk
            return True


def _send(conn: socket.socket, frame: bytes, timeout: float) -> bool:
    """Send a whole reply within `timeout` s (0: only what fits now) on a non-blocking socket; False when the
    connection is unusable (the reply could not be sent whole)."""
    view = memoryview(frame)
    deadline = time.monotonic() + timeout
    poller = None
    while view:
        try:
            view = view[conn.send(view):]
        except (BlockingIOError, InterruptedError):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if poller is None:
                poller = select.poll()
                poller.register(conn, select.POLLOUT)
            poller.poll(max(1, int(left * 1000 + 0.999)))
        except OSError:
            return False
    return True


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
