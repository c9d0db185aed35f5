"""The guest side of CALL_API: the client that kernel code uses to reach the host's gateway (stdlib only).

Kernel start-up runs `import lllm_guest; lllm_guest.install(get_ipython().user_ns)`, which defines
`CALL_API(path, params=None)`, `query_api_doc(name)` and `CallAPIError` in the user namespace.

The client reads `$LLLM_RUN_DIR/gateway.sock` and `$LLLM_RUN_DIR/gateway.token` (LLLM_RUN_DIR defaults to
/run/lllm; a branch kernel's files are `<$LLLM_GATEWAY_NAME>.sock`/`.token` there) at call time, so a sandbox that was started before its gateway was attached (a pooled one) works as
soon as the host writes them. It keeps one connection per thread open and reconnects once if the gateway dropped it.
Wire format: a 4-byte big-endian length, then UTF-8 JSON (see lllm/proxies/wire.py on the host).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import threading
from typing import Any

__all__ = ["CALL_API", "CallAPIError", "GatewayClient", "install", "query_api_doc"]

_HEADER = struct.Struct(">I")
_MAX_REPLY = 64 * 1024 * 1024


class CallAPIError(Exception):
    """A CALL_API call was refused or failed; `type` says why (ProxyNotActivated, RateLimited, ...)."""

    def __init__(self, message: str, type: str = "CallAPIError", path: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.message = message
        self.type = type
        self.path = path

    def __str__(self) -> str:
        return f"[{self.type}] {self.message}"

    def __reduce__(self) -> Any:
        return (CallAPIError, (self.message, self.type, self.path))


class _Doc(str):
    """Docs text that shows as itself when it is a cell's last expression (not as a quoted repr)."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, pandas timestamps, dates: what analysis code tends to pass as params
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class GatewayClient:
    """One connection to the gateway of this sandbox's session."""

    def __init__(self, run_dir: str | None = None) -> None:
        self._run_dir = run_dir
        self._local = threading.local()  # one connection per thread: threads in a cell call in parallel
        self._ids = itertools.count(1)

    @property
    def _sock(self) -> socket.socket | None:
        return getattr(self._local, "sock", None)

    @_sock.setter
    def _sock(self, sock: socket.socket | None) -> None:
        self._local.sock = sock

    @property
    def run_dir(self) -> str:
        return self._run_dir or os.environ.get("LLLM_RUN_DIR") or "/run/lllm"

    def _read_token(self) -> str:
        path = os.path.join(self.run_dir, f"{_gateway_name()}.token")
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except FileNotFoundError:
            raise CallAPIError(
                f"CALL_API is not available: no gateway is attached to this sandbox ({path} does not exist). "
                "The agent needs a `proxy:` block with activate_proxies in its config.", "NoGateway") from None
        except OSError as exc:
            raise CallAPIError(f"CALL_API cannot read its token at {path}: {exc}", "NoGateway") from None

    def _connect(self) -> socket.socket:
        path = os.path.join(self.run_dir, f"{_gateway_name()}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dirfd = None
        try:
            target = path
            if len(os.fsencode(path)) > 100:  # AF_UNIX paths are limited to 107 bytes
                dirfd = os.open(self.run_dir, os.O_RDONLY)
                target = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
            sock.connect(target)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise CallAPIError(
                f"CALL_API is not available: no gateway listens at {path} ({exc.strerror}). The session may "
                "have ended, or the agent has no `proxy:` block.", "NoGateway") from None
        except OSError:
            sock.close()
            raise
        finally:
            if dirfd is not None:
                os.close(dirfd)
        return sock

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, path: str, params: Any = None) -> Any:
        """Send one request and return its `data`, or raise CallAPIError."""
        if not isinstance(path, str):
            raise CallAPIError(f"CALL_API path must be a str like 'fmp/price', got {type(path).__name__}",
                               "BadRequest")
        if params is not None and not isinstance(params, dict):
            raise CallAPIError(f"CALL_API params must be a dict, got {type(params).__name__}: "
                               f"CALL_API({path!r}, {{'name': value}})", "BadRequest", path)
        token = self._read_token()
        call_id = next(self._ids)
        try:
            body = json.dumps({"token": token, "path": path, "params": params, "id": call_id},
                              separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            raise CallAPIError(f"CALL_API params must be JSON-serialisable: {exc}", "BadRequest", path) from None
        frame = _HEADER.pack(len(body)) + body
        for attempt in (0, 1):
            fresh = self._sock is None
            if fresh:
                self._sock = self._connect()
            try:
                self._sock.sendall(frame)
                while True:  # skip any stale reply (a call interrupted earlier on this connection)
                    reply = self._recv()
                    obj = _decode(reply, path)
                    if obj.get("id") in (call_id, None):
                        break
                break
            except (OSError, EOFError) as exc:
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                if attempt or fresh:
                    raise CallAPIError(f"the gateway connection broke during {path!r}: {exc}. The session "
                                       "may have ended.", "GatewayGone", path) from None
            except BaseException:
                # interrupted mid-call (KeyboardInterrupt from a cell timeout): the reply may still come, so
                # this connection is out of step; the next call opens a fresh one
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                raise
        if obj.get("ok") is True:
            return obj.get("data")
        err = obj.get("error") or {}
        raise CallAPIError(str(err.get("message", "unknown error")), str(err.get("type", "ProxyError")), path)

    def _recv(self) -> bytes:
        assert self._sock is not None
        head = self._recv_exact(4)
        (length,) = _HEADER.unpack(head)
        if length > _MAX_REPLY:
            raise EOFError(f"reply frame of {length} bytes is too large")
        return self._recv_exact(length)

    def _recv_exact(self, n: int) -> bytes:
        assert self._sock is not None
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the gateway closed the connection")
            buf += chunk
        return bytes(buf)


def _decode(reply: bytes, path: str) -> dict:
    try:
        obj = json.loads(reply)
    except ValueError as exc:
        raise CallAPIError(f"the gateway sent a reply that is not JSON: {exc}", "BadReply", path) from None
    if not isinstance(obj, dict):
        raise CallAPIError(f"the gateway sent a reply that is not an object: {obj!r:.100}", "BadReply", path)
    return obj


_client = GatewayClient()


def _gateway_name() -> str:
    """The base name of this kernel's gateway files: `gateway`, or a branch kernel's own (`LLLM_GATEWAY_NAME`)."""
    name = os.environ.get("LLLM_GATEWAY_NAME") or "gateway"
    return name if "/" not in name else "gateway"


def forget_connections() -> None:
    """Drop the open gateway connection (a branch kernel: the one it inherited belongs to its parent's session)."""
    _client._local = threading.local()


def CALL_API(path: str, params: dict | None = None) -> Any:  # noqa: N802 (the name the docs use)
    """Call an API endpoint through the host's gateway: `CALL_API("fmp/price", {"symbol": "AAPL"})`.

    Returns the endpoint's JSON result (lists and dicts). Raises CallAPIError when the call is refused
    (proxy not activated, unknown endpoint, bad parameters, rate limit, size limit) or fails (the API's
    error, a timeout); the message says what to change.
    """
    return _client.request(path, params)


def query_api_doc(name: str) -> str:
    """The full docs of one activated proxy: its endpoints, their parameters and response shapes."""
    return _Doc(_client.request("_meta/api_doc", {"name": name}))


def api_directory() -> str:
    """The one-line-per-proxy directory of this session's proxies."""
    return _Doc(_client.request("_meta/directory"))


def install(namespace: dict) -> None:
    """Define CALL_API, query_api_doc and CallAPIError in `namespace` (the kernel's user namespace)."""
    namespace["CALL_API"] = CALL_API
    namespace["query_api_doc"] = query_api_doc
    namespace["CallAPIError"] = CallAPIError
