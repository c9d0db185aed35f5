"""Issue 9, item 2: a hostile cell floods its CALL_API gateway socket before authentication.

Two real sandboxes share one gateway: A floods its own socket (bad tokens, pipelined, from several threads,
reconnecting whenever it is dropped; a slow frame; an idle connection) while B makes ordinary calls. Every
frame and connection is charged to A's limits before it is parsed, a connection that keeps sending refused
frames is closed, refusals become a few tallied records (not a row each) on a bounded queue, a frame has one
deadline as a whole and an idle connection is closed; B's CALL_API p50 stays within 2x of its idle p50.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from lllm.core.trace import ApiCallRecord
from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.gateway import Gateway, GatewayLimits
from lllm.sandbox import DockerSandbox
from lllm.sandbox._rundir import container_user

pytestmark = pytest.mark.docker


class Ping(BaseProxy):
    _proxy_name = "Ping"
    _proxy_description = "A trivial endpoint."

    @BaseProxy.endpoint(category="p", endpoint="ping", description="Returns its input.", params={"i": (int, 1)})
    def ping(self, i: int = 0) -> dict:
        return {"i": i}


FLOOD = """
import json, socket, struct, threading, time
body = json.dumps({{"token": "x" * 43, "path": "ping/ping", "id": 1}}).encode()
frame = struct.pack(">I", len(body)) + body
stop_at = time.monotonic() + {seconds}
stats = {{"answered": 0, "connects": 0, "closed_by_gateway": 0}}
lock = threading.Lock()

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf

def worker():
    answered = connects = closed = 0
    s = None
    while time.monotonic() < stop_at:
        if s is None:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect("/run/lllm/gateway.sock")
                connects += 1
            except OSError:
                s.close(); s = None
                continue
        try:
            s.sendall(frame * 64)
            for _ in range(64):
                (n,) = struct.unpack(">I", recv_exact(s, 4))
                recv_exact(s, n)
                answered += 1
        except (OSError, EOFError):
            s.close(); s = None; closed += 1
    if s is not None:
        s.close()
    with lock:
        stats["answered"] += answered; stats["connects"] += connects; stats["closed_by_gateway"] += closed

t0 = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
stats["seconds"] = time.monotonic() - t0
print(json.dumps(stats))
"""

VICTIM = """
import json, time
lat = []
for i in range({calls}):
    t0 = time.perf_counter(); CALL_API("ping/ping", {{"i": i}}); lat.append(time.perf_counter() - t0)
    time.sleep(0.002)
lat.sort()
print(json.dumps(lat[len(lat) // 2]))
"""


def run_json(sb: DockerSandbox, code: str) -> object:
    result = sb.run_cell(code, timeout=120)
    assert result.status == "ok", result.text
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def pair(sandbox_image: str) -> Iterator[tuple[DockerSandbox, DockerSandbox]]:
    a = DockerSandbox(image=sandbox_image, cell_timeout=120)
    b = DockerSandbox(image=sandbox_image, cell_timeout=120)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_flooding_session_is_throttled_tallied_and_leaves_another_sessions_p50_within_2x(pair) -> None:
    a, b = pair
    owner = container_user()[0]
    flood_records: list = []
    with Gateway() as gateway:
        flooder = gateway.open_session(a.session_dir, ProxyManager(proxies={"ping": Ping()}), session_id="flooder",
                                       tracer=flood_records.append, token_owner=owner)
        victim = gateway.open_session(b.session_dir, ProxyManager(proxies={"ping": Ping()}), session_id="victim",
                                      token_owner=owner)
        run_json(b, VICTIM.format(calls=50))  # connect and warm up
        idle_before = run_json(b, VICTIM.format(calls=300))
        stats: dict = {}
        thread = threading.Thread(target=lambda: stats.update(run_json(a, FLOOD.format(seconds=6))))
        thread.start()
        time.sleep(1.0)
        under = run_json(b, VICTIM.format(calls=300))
        thread.join(60)
        idle_after = run_json(b, VICTIM.format(calls=300))
        queued_peak = gateway.queued_records_peak
        flooder.close()
        victim.close()
    idle = (idle_before + idle_after) / 2
    rate = stats["answered"] / stats["seconds"]
    # before the fix: ~21,000 refused frames a second were answered, every one a row, and B's p50 was 6x idle
    assert under <= 2 * idle, f"B's p50 under flood {under * 1e3:.3f} ms vs idle {idle * 1e3:.3f} ms ({stats})"
    assert rate < 2_000, f"the flooder got {rate:,.0f} refused frames a second answered ({stats})"
    assert stats["closed_by_gateway"] >= 1, stats
    # refusals are tallied: a few records, each with a count, that add up to what the gateway refused
    assert all(isinstance(r, ApiCallRecord) for r in flood_records)
    assert 1 <= len(flood_records) <= 20, f"{len(flood_records)} records for one flood"
    denied = [r for r in flood_records if r.status == "denied"]
    assert denied and "GatewayAuthError" in denied[0].error
    assert sum(r.count for r in flood_records) == sum(flooder.refusals.values()) >= stats["answered"]
    assert queued_peak <= gateway.max_queued_records


SLOW_AND_IDLE = """
import json, socket, struct, time
def closed_after(sock, trickle):
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < 8:
        try:
            if trickle:
                sock.send(b" ")
            if sock.recv(1) == b"":
                return round(time.monotonic() - t0, 2)
        except socket.timeout:
            continue
        except OSError:
            return round(time.monotonic() - t0, 2)
    return None
slow = socket.socket(socket.AF_UNIX); slow.connect("/run/lllm/gateway.sock")
slow.send(struct.pack(">I", 200) + b"{")   # a frame that never completes: one byte every 0.2 s
idle = socket.socket(socket.AF_UNIX); idle.connect("/run/lllm/gateway.sock")
out = {"slow": closed_after(slow, True), "idle": closed_after(idle, False)}
out["after"] = CALL_API("ping/ping", {"i": 5})["i"]
print(json.dumps(out))
"""


def test_a_frame_has_one_deadline_and_an_idle_connection_is_closed(sandbox_image: str) -> None:
    limits = GatewayLimits(frame_timeout=1.5, idle_timeout=1.5)
    with Gateway(limits=limits) as gateway, DockerSandbox(image=sandbox_image, cell_timeout=60) as sb:
        with gateway.open_session(sb.session_dir, ProxyManager(proxies={"ping": Ping()}),
                                  token_owner=container_user()[0]) as session:
            out = run_json(sb, SLOW_AND_IDLE)
            # before the fix each read had its own timeout (a byte every 0.2 s kept the frame open forever)
            # and a silent connection was never closed
            assert out["slow"] is not None and out["slow"] < 4, out
            assert out["idle"] is not None and out["idle"] < 4, out
            assert out["after"] == 5
            assert session.refusals.get("FrameTimeout") == 1
