"""The CALL_API gateway over real unix sockets, with the guest client (sandbox/lllm_guest.py) in a subprocess.

Covers the hostile cases of issue 5: bad and foreign tokens, a proxy not activated, forged and malformed
frames, oversize params and responses, 10,000 calls in a tight loop (rate-limited, gateway healthy, another
session unaffected), raising and hanging proxies, an unknown endpoint, and the records each call leaves.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lllm.core.trace import ApiCallRecord
from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.gateway import Gateway, GatewayLimits

GUEST_DIR = Path(__file__).resolve().parents[2] / "sandbox"


class Toy(BaseProxy):
    _proxy_name = "Toy"
    _proxy_description = "Endpoints for gateway tests."

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echo.", params={"x": (int, 1), "pad": (str, "")})
    def echo(self, x: int = 0, pad: str = "") -> dict:
        return {"x": x, "pad_len": len(pad)}

    @BaseProxy.endpoint(category="t", endpoint="big", description="A large answer.", params={"n*": (int, 10)})
    def big(self, n: int) -> str:
        return "y" * n

    @BaseProxy.endpoint(category="t", endpoint="raise", description="Raises.")
    def raise_(self) -> None:
        raise KeyError("no such row")

    @BaseProxy.endpoint(category="t", endpoint="slow", description="Takes 0.3 s, like a real API.")
    def slow(self) -> str:
        time.sleep(0.3)
        return "done"

    @BaseProxy.endpoint(category="t", endpoint="hang", description="Hangs until released.")
    def hang(self) -> str:
        self.release.wait(30)
        return "late"


def guest(run_dir: Path | str, code: str, timeout: float = 120) -> dict:
    """Run `code` with CALL_API installed in a fresh Python process; it fills the dict `out`."""
    script = "import json, time, lllm_guest\nns = {}\nlllm_guest.install(ns)\nglobals().update(ns)\nout = {}\n"
    script += textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    env = {**os.environ, "PYTHONPATH": str(GUEST_DIR), "LLLM_RUN_DIR": str(run_dir)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_call(path: Path, payload: bytes, *, header: bytes | None = None) -> dict | None:
    """Send one raw frame; return the decoded reply, or None when the gateway closed the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path / "gateway.sock"))
        try:
            s.sendall((header if header is not None else struct.pack(">I", len(payload))) + payload)
        except BrokenPipeError:  # refused on accept: its reply is waiting
            pass
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                return None
            head += chunk
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            body += s.recv(n - len(body))
        return json.loads(body)


@pytest.fixture
def gateway():
    with Gateway(limits=GatewayLimits(call_timeout=1.0, max_request_bytes=4096, max_response_bytes=10_000)) as gw:
        yield gw


@pytest.fixture
def toy() -> Toy:
    return Toy()


@pytest.fixture
def session(gateway: Gateway, toy: Toy, tmp_path: Path):
    records: list = []
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), session_id="s-main", tracer=records.append)
    s.records = records
    yield s
    toy.release.set()
    s.close()


def test_call_api_round_trip_and_records(session, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        out["echo"] = CALL_API("toy/echo", {"x": 7})
        out["doc"] = query_api_doc("toy")
        out["doc_repr"] = repr(query_api_doc("toy"))[:5]
    """)
    assert out["echo"] == {"x": 7, "pad_len": 0}
    assert "### toy/echo" in out["doc"] and out["doc_repr"] == "# Toy"
    session.flush()
    ok = [r for r in session.records if r.status == "ok"]
    assert len(ok) == 3
    first = ok[0]
    assert isinstance(first, ApiCallRecord)
    assert (first.session_id, first.proxy, first.endpoint) == ("s-main", "toy", "echo")
    assert first.request_bytes > 0 and first.response_bytes > 0 and 0 < first.latency_s < 1
    # what was asked and answered, as JSON text (no token: only the params)
    assert (first.params, first.answer) == ('{"x": 7}', '{"x":7,"pad_len":0}')
    assert session.token not in json.dumps([r.model_dump() for r in session.records])


def test_files_modes_and_owner(session, tmp_path: Path) -> None:
    sock, tok = tmp_path / "gateway.sock", tmp_path / "gateway.token"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o666
    assert stat.S_IMODE(tok.stat().st_mode) == 0o400 and tok.stat().st_uid == os.geteuid()
    assert tok.read_text() == session.token and len(session.token) >= 40


def test_token_owned_by_the_sandbox_user(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        with gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), token_owner=1000):
            assert (tmp_path / "gateway.token").stat().st_uid == 1000
    else:  # only root may give the token away; a failed open leaves nothing behind
        with pytest.raises(PermissionError):
            gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), token_owner=1000)
        assert not (tmp_path / "gateway.sock").exists()


def test_closing_removes_files_and_the_guest_says_no_gateway(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}))
    assert guest(tmp_path, 'out["x"] = CALL_API("toy/echo", {"x": 1})["x"]') == {"x": 1}
    s.close()
    assert not (tmp_path / "gateway.sock").exists() and not (tmp_path / "gateway.token").exists()
    out = guest(tmp_path, """
        try:
            CALL_API("toy/echo")
        except CallAPIError as e:
            out["type"], out["msg"] = e.type, str(e)
    """)
    assert out["type"] == "NoGateway" and "no gateway is attached" in out["msg"]


def test_refusals_reach_the_kernel_as_call_api_errors(session, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        for key, path, params in [("inactive", "fmp/price", {"symbol": "AAPL"}), ("unknown", "toy/ech0", {}),
                                  ("badparam", "toy/echo", {"x": "seven"}), ("raises", "toy/raise", None),
                                  ("nodoc", "_meta/api_doc", {"name": "fred"}), ("badpath", "toy", None)]:
            try:
                CALL_API(path, params)
                out[key] = "no error"
            except CallAPIError as e:
                out[key] = [e.type, e.message]
        out["after"] = CALL_API("toy/echo", {"x": 2})["x"]
    """)
    assert out["inactive"][0] == "ProxyNotActivated" and "['toy']" in out["inactive"][1]
    assert out["unknown"][0] == "EndpointNotFound"
    assert "'echo', 'big', 'raise', 'slow', 'hang'" in out["unknown"][1]
    assert out["badparam"][0] == "ProxyError" and "must be int" in out["badparam"][1]
    assert out["raises"][0] == "ProxyError" and "KeyError" in out["raises"][1]
    assert out["nodoc"][0] == "ProxyNotActivated"
    assert out["badpath"][0] == "ProxyError"
    assert out["after"] == 2
    session.flush()
    # calls that ran a proxy are a record each; refusals are tallied (one record per reason and path, counted)
    assert [r.status for r in session.records if r.count == 1 and r.status in ("ok", "error")] == \
        ["error", "error", "error", "ok"]
    tallies = {(r.status, r.proxy, r.endpoint): r.count for r in session.records if r.status not in ("ok", "error")}
    assert tallies == {("denied", "fmp", "price"): 1, ("denied", "_meta", "api_doc"): 1,
                       ("not_found", "toy", "ech0"): 1}
    assert session.refusals == {"ProxyNotActivated": 2, "EndpointNotFound": 1}


def test_bad_and_foreign_tokens(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    rec_a: list = []
    a = gateway.open_session(a_dir, ProxyManager(proxies={"toy": toy}), session_id="A", tracer=rec_a.append)
    b = gateway.open_session(b_dir, ProxyManager(proxies={"toy": toy}), session_id="B")
    try:
        bad = raw_call(a_dir, json.dumps({"token": "x" * 43, "path": "toy/echo", "id": 1}).encode())
        assert bad["ok"] is False and bad["error"]["type"] == "GatewayAuthError" and bad["id"] == 1
        assert "bad gateway token" in bad["error"]["message"]
        foreign = raw_call(a_dir, json.dumps({"token": b.token, "path": "toy/echo", "id": 2}).encode())
        assert foreign["error"]["type"] == "GatewayAuthError" and "another session" in foreign["error"]["message"]
        # the guest in session B, pointed at A's directory with B's token, is refused the same way
        b_token = (b_dir / "gateway.token").read_text()
        os.chmod(a_dir / "gateway.token", 0o600)
        (a_dir / "gateway.token").write_text(b_token)
        out = guest(a_dir, """
            try:
                CALL_API("toy/echo")
            except CallAPIError as e:
                out["type"] = e.type
        """)
        assert out["type"] == "GatewayAuthError"
        ok = raw_call(a_dir, json.dumps({"token": a.token, "path": "toy/echo", "id": 3}).encode())
        assert ok == {"id": 3, "ok": True, "data": {"x": 0, "pad_len": 0}}
        a.flush()
        assert [(r.status, r.count) for r in rec_a] == [("ok", 1), ("denied", 3)]
        assert rec_a[1].error.startswith("GatewayAuthError: bad gateway token") and rec_a[1].proxy is None
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"\xff\xfe\xfd", b"[1, 2, 3]", b'"token"', b"{}", b'{"token": "t"}',
    b'{"token": 5, "path": "toy/echo"}', b'{"token": "t", "path": "toy/echo", "params": [1]}',
    b'{"token": "t", "path": "toy/echo", "extra": true}', b'{"token": "t", "path": "", "id": 1}',
    b'{"token": "t", "path": "toy/echo", "id": {"a": 1}}', b'{"token": "t", "path": "toy/echo", "id": 1.5}',
    b"{" * 3000, b"[" * 2000 + b"]" * 2000,
])
def test_malformed_frames_get_an_error_and_the_gateway_stays_up(session, tmp_path: Path, payload: bytes) -> None:
    reply = raw_call(tmp_path, payload)
    assert reply is not None and reply["ok"] is False and reply["error"]["type"] == "BadRequest"
    ok = raw_call(tmp_path, json.dumps({"token": session.token, "path": "toy/echo", "id": 9}).encode())
    assert ok["ok"] is True


def test_forged_lengths_and_half_frames(session, tmp_path: Path) -> None:
    # a declared length over the limit: an error, then the connection is closed (the stream cannot be trusted)
    reply = raw_call(tmp_path, b"", header=struct.pack(">I", 2**31))
    assert reply["error"]["type"] == "PayloadTooLarge"
    # a frame cut short, then EOF; and a connection that sends half a header and closes
    for junk in (struct.pack(">I", 100) + b"{", b"\x00\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "gateway.sock"))
            s.sendall(junk)
    assert guest(tmp_path, 'out["x"] = CALL_API("toy/echo", {"x": 5})["x"]') == {"x": 5}


def test_a_stalled_frame_times_out_without_blocking_others(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    limits = GatewayLimits(frame_timeout=0.3)
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), limits=limits)
    try:
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.connect(str(tmp_path / "gateway.sock"))
        stalled.sendall(struct.pack(">I", 50) + b"{")
        assert guest(tmp_path, 'out["x"] = CALL_API("toy/echo", {"x": 1})["x"]') == {"x": 1}
        stalled.settimeout(5)
        assert stalled.recv(10) == b""  # dropped after frame_timeout
        stalled.close()
    finally:
        s.close()


def test_oversize_params_and_response(session, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        for key, path, params in [("params", "toy/echo", {"pad": "p" * 10_000}), ("response", "toy/big", {"n": 20_000})]:
            try:
                CALL_API(path, params)
            except CallAPIError as e:
                out[key] = [e.type, e.message]
        out["after"] = CALL_API("toy/big", {"n": 100})
    """)
    assert out["params"][0] == "PayloadTooLarge" and "4096" in out["params"][1]
    assert out["response"][0] == "PayloadTooLarge" and "10000" in out["response"][1]
    assert out["after"] == "y" * 100
    session.flush()
    assert [r.status for r in session.records].count("too_large") == 2


def test_raising_and_hanging_proxies_leave_the_session_usable(session, toy: Toy, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        t0 = time.monotonic()
        try:
            CALL_API("toy/hang")
        except CallAPIError as e:
            out["hang"] = [e.type, e.message, time.monotonic() - t0]
        out["after"] = CALL_API("toy/echo", {"x": 3})["x"]
    """)
    kind, message, waited = out["hang"]
    assert kind == "ProxyTimeout" and "1s" in message and 0.9 < waited < 5
    assert out["after"] == 3
    session.flush()
    assert [r.status for r in session.records] == ["timeout", "ok"]


def test_hung_calls_are_capped_per_session(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    limits = GatewayLimits(call_timeout=0.2, max_inflight=2)
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), limits=limits)
    try:
        out = guest(tmp_path, """
            out["types"] = []
            for _ in range(3):
                try:
                    CALL_API("toy/hang")
                except CallAPIError as e:
                    out["types"].append(e.type)
            out["doc"] = len(query_api_doc("toy")) > 0
        """)
        assert out["types"] == ["ProxyTimeout", "ProxyTimeout", "ProxyError"]
        assert out["doc"] is True  # docs need no worker
        toy.release.set()
        time.sleep(0.2)
        assert guest(tmp_path, 'out["x"] = CALL_API("toy/echo", {"x": 4})["x"]') == {"x": 4}
    finally:
        s.close()


def test_a_tight_loop_is_rate_limited_and_throttled_and_other_sessions_unaffected(gateway: Gateway,
                                                                                   tmp_path: Path) -> None:
    loud_dir, quiet_dir = tmp_path / "loud", tmp_path / "quiet"
    loud_dir.mkdir()
    quiet_dir.mkdir()
    loud_records: list = []
    loud = gateway.open_session(loud_dir, ProxyManager(proxies={"toy": Toy()}), session_id="loud",
                                tracer=loud_records.append,
                                limits=GatewayLimits(rate=200, burst=50, max_refused=32, refusal_backoff=0.05))
    quiet = gateway.open_session(quiet_dir, ProxyManager(proxies={"toy": Toy()}), session_id="quiet",
                                 limits=GatewayLimits(rate=200, burst=50))
    results: dict = {}

    def run_loud() -> None:
        results["loud"] = guest(loud_dir, """
            ok = limited = 0
            t0 = time.monotonic()
            for i in range(3_000):
                try:
                    CALL_API("toy/echo", {"x": i})
                    ok += 1
                except CallAPIError as e:
                    assert e.type == "RateLimited", e
                    limited += 1
            out.update(ok=ok, limited=limited, elapsed=time.monotonic() - t0)
        """)

    thread = threading.Thread(target=run_loud)
    thread.start()
    time.sleep(0.3)
    quiet_out = guest(quiet_dir, """
        out["xs"] = []
        for i in range(40):
            out["xs"].append(CALL_API("toy/echo", {"x": i})["x"])
            time.sleep(0.01)
    """)
    thread.join(120)
    loud_out = results["loud"]
    assert quiet_out["xs"] == list(range(40))  # never limited while the loud session hammers
    # every call got an answer (the guest reconnects when its connection is closed for refusals) ...
    assert loud_out["ok"] + loud_out["limited"] == 3_000
    allowed = 50 + 200 * loud_out["elapsed"]
    assert loud_out["limited"] > 1_000 and loud_out["ok"] <= allowed * 1.1 + 5
    # ... and 32 refusals in a row closed the connection, so the loop was slowed down instead of answered
    # at full speed: the session waited (refusal_backoff) before its next connection was accepted
    assert loud.connections_closed >= 10 and loud_out["elapsed"] > 0.05 * 10
    assert guest(loud_dir, 'time.sleep(0.3); out["x"] = CALL_API("toy/echo", {"x": 1})["x"]') == {"x": 1}
    assert loud.calls >= 3_001 and quiet.calls == 40
    loud.close()
    quiet.close()
    limited = [r for r in loud_records if r.status == "rate_limited"]
    assert 1 <= len(limited) <= 3 and sum(r.count for r in limited) == loud_out["limited"]


def test_a_broken_tracer_does_not_break_calls(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    def tracer(record: object) -> None:
        raise RuntimeError("log store down")

    with gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), tracer=tracer) as s:
        assert guest(tmp_path, 'out["x"] = [CALL_API("toy/echo", {"x": i})["x"] for i in range(3)]') == {"x": [0, 1, 2]}
        s.flush()
    assert gateway.tracer_errors == 3


def test_long_session_dirs_beyond_the_unix_path_limit(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "gateway.sock")) > 108
    with gateway.open_session(deep, ProxyManager(proxies={"toy": toy})):
        assert guest(deep, 'out["x"] = CALL_API("toy/echo", {"x": 8})["x"]') == {"x": 8}


def test_guest_side_argument_errors(session, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        for key, args in [("params", ("toy/echo", [1])), ("json", ("toy/echo", {"x": object()})), ("path", (3,))]:
            try:
                CALL_API(*args)
            except CallAPIError as e:
                out[key] = e.type
        import datetime
        out["dates"] = CALL_API("toy/echo", {"pad": datetime.date(2025, 1, 2)})["pad_len"]
    """)
    assert out == {"params": "BadRequest", "json": "BadRequest", "path": "BadRequest", "dates": 10}


def test_open_session_needs_a_directory_and_an_open_gateway(tmp_path: Path, toy: Toy) -> None:
    gw = Gateway()
    with pytest.raises(Exception, match="not a directory"):
        gw.open_session(tmp_path / "missing", ProxyManager(proxies={"toy": toy}))
    gw.close()
    with pytest.raises(Exception, match="closed"):
        gw.open_session(tmp_path, ProxyManager(proxies={"toy": toy}))


def test_threads_in_a_cell_call_in_parallel(session, tmp_path: Path) -> None:
    out = guest(tmp_path, """
        from concurrent.futures import ThreadPoolExecutor
        t0 = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            out["results"] = list(pool.map(lambda _: CALL_API("toy/slow"), range(6)))
        out["elapsed"] = time.monotonic() - t0
    """)
    assert out["results"] == ["done"] * 6
    assert out["elapsed"] < 1.2  # six 0.3 s calls at once, not one after another (1.8 s)


def test_a_proxy_that_never_returns_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(GUEST_DIR)!r})
        import lllm_guest
        from lllm.proxies import BaseProxy, ProxyManager
        from lllm.proxies.gateway import Gateway, GatewayLimits

        class Stuck(BaseProxy):
            @BaseProxy.endpoint(category="t", endpoint="stuck", description="Never returns.")
            def stuck(self):
                threading.Event().wait()

        gw = Gateway(limits=GatewayLimits(call_timeout=0.2))
        gw.open_session({str(tmp_path)!r}, ProxyManager(proxies={{"stuck": Stuck()}}))
        try:
            lllm_guest.GatewayClient({str(tmp_path)!r}).request("stuck/stuck")
        except lllm_guest.CallAPIError as e:
            print(e.type)
        gw.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ProxyTimeout"


def test_wire_frames_round_trip_through_the_models() -> None:
    from lllm.proxies.wire import HEADER, CallRequest, ErrorReply, OkReply, ReplyAdapter, encode_error, encode_ok

    frame = encode_ok(7, b'{"a":[1,2]}')
    (n,) = HEADER.unpack(frame[:4])
    ok = ReplyAdapter.validate_json(frame[4:])
    assert n == len(frame) - 4 and isinstance(ok, OkReply) and ok.data == {"a": [1, 2]} and ok.id == 7
    err = ReplyAdapter.validate_json(encode_error("x", "RateLimited", "slow down")[4:])
    assert isinstance(err, ErrorReply) and (err.error.type, err.error.message, err.id) == ("RateLimited", "slow down", "x")
    req = CallRequest.model_validate({"token": "t", "path": "fmp/price", "params": {"symbol": "A"}, "id": 1})
    assert req.params == {"symbol": "A"}


def test_socket_permissions_never_follow_a_swapped_in_symlink(tmp_path) -> None:
    import os
    import socket as _socket

    from lllm.errors import ProxyError
    from lllm.proxies.gateway import _chmod_socket

    victim = tmp_path / "host-file"
    victim.write_text("secret")
    victim.chmod(0o600)
    link = tmp_path / "gateway.sock"
    link.symlink_to(victim)
    with pytest.raises((ProxyError, OSError)):
        _chmod_socket(link, 0o666)
    assert (victim.stat().st_mode & 0o777) == 0o600
    real = tmp_path / "real.sock"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.bind(str(real))
    try:
        _chmod_socket(real, 0o666)
        assert (os.lstat(real).st_mode & 0o777) == 0o666
    finally:
        sock.close()


# ------------------------------------------------------------------------------ issue 9: flooding before auth
def bad_frames(n: int) -> bytes:
    body = json.dumps({"token": "x" * 43, "path": "toy/echo", "id": 1}).encode()
    return (struct.pack(">I", len(body)) + body) * n


def read_replies(sock: socket.socket) -> int:
    """Replies read until the gateway closes the connection."""
    got = 0
    buf = b""
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return got
        if not chunk:
            return got
        buf += chunk
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            buf = buf[4 + struct.unpack(">I", buf[:4])[0]:]
            got += 1


def test_refused_frames_close_the_connection_and_pause_the_session(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    records: list = []
    limits = GatewayLimits(max_refused=5, refusal_backoff=0.6)
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), limits=limits, tracer=records.append)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as flood:
            flood.connect(str(tmp_path / "gateway.sock"))
            flood.sendall(bad_frames(50))
            assert read_replies(flood) == 5  # five refusals answered, then the connection was closed
        assert s.connections_closed == 1 and s.refusals["GatewayAuthError"] == 5
        # the session accepts no new connection for refusal_backoff: a call made now waits, then succeeds
        t0 = time.monotonic()
        assert guest(tmp_path, 'out["x"] = CALL_API("toy/echo", {"x": 3})["x"]') == {"x": 3}
        assert time.monotonic() - t0 > 0.3
        s.flush()
        assert [(r.status, r.count, r.error.split(":")[0]) for r in records if r.status != "ok"] == \
            [("denied", 5, "GatewayAuthError")]
    finally:
        s.close()


def test_refusals_are_tallied_every_interval_without_a_flush(gateway: Gateway, toy: Toy, tmp_path: Path) -> None:
    records: list = []
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), tracer=records.append,
                             limits=GatewayLimits(summary_interval=0.3))
    try:
        for _ in range(3):
            raw_call(tmp_path, b"not json")
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r.status, r.count) for r in records] == [("bad_request", 3)]
        assert records[0].error.startswith("BadRequest: the request is not UTF-8 JSON")
    finally:
        s.close()
    assert len(records) == 1  # nothing new to tally at close


def test_the_record_queue_is_bounded_and_counts_what_it_drops(toy: Toy, tmp_path: Path) -> None:
    release = threading.Event()
    records: list = []

    def slow_tracer(record: object) -> None:
        release.wait(10)
        records.append(record)

    with Gateway(max_queued_records=5) as gw:
        s = gw.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), tracer=slow_tracer)
        out = guest(tmp_path, 'out["n"] = len([CALL_API("toy/echo", {"x": i}) for i in range(30)])')
        assert out == {"n": 30}  # calls never wait for the tracer
        assert gw.queued_records_peak <= 5 and gw.records_dropped >= 20 and s.records_dropped == gw.records_dropped
        release.set()
        s.close()
    ok = [r for r in records if r.status == "ok"]
    dropped = [r for r in records if r.status == "dropped"]
    assert len(dropped) == 1 and dropped[0].count == s.records_dropped and "RecordsDropped" in dropped[0].error
    assert len(ok) + dropped[0].count == 30


def test_a_connection_over_the_rate_or_the_connection_limit_is_charged_and_refused(gateway: Gateway, toy: Toy,
                                                                                   tmp_path: Path) -> None:
    limits = GatewayLimits(rate=1, burst=2, max_connections=1, refusal_backoff=0)
    s = gateway.open_session(tmp_path, ProxyManager(proxies={"toy": toy}), limits=limits)
    try:
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.connect(str(tmp_path / "gateway.sock"))  # takes a token and the one connection slot
        time.sleep(0.2)
        assert raw_call(tmp_path, b"{}")["error"]["message"].startswith("too many open gateway connections")
        held.close()
        time.sleep(0.2)
        replies = [raw_call(tmp_path, b"{}") for _ in range(3)]  # the bucket (2 tokens) is spent by now
        assert any(r is not None and r["error"]["type"] == "RateLimited" for r in replies)
        assert s.refusals["TooManyConnections"] == 1 and s.refusals["RateLimited"] >= 1
    finally:
        s.close()
