"""Benchmark: CALL_API through the gateway, from inside a Docker sandbox, against an in-process ProxyManager call.

Prints, each next to its baseline measured in the same run:
- the round trip of CALL_API for a trivial endpoint from kernel code in a real container (p50, p90), against a
  direct `ProxyManager.call` on the host (what the same call costs without a sandbox, socket or JSON);
- sustained calls per second from one session (a tight loop for a few seconds), against the same direct calls;
- the same loop under the gateway's default limits (1000 calls/s per session), to show what a session gets.
Targets (issue 5): p50 <= 2 ms, >= 500 calls/s.

With `--flood`, it measures instead what one hostile session does to the gateway (issue 9, item 2): sandbox A
floods its gateway socket from several threads with frames carrying a bad token (pipelined, reconnecting when
closed) while sandbox B makes ordinary CALL_API calls. It prints the refused frames per second A gets answered,
the record rows and record-queue growth per minute of flood (the gateway's tracer writes into a real LogStore),
and B's round trip p50 under the flood against B's idle p50 measured in the same run, before and after.
Target: B's p50 under flood <= 2x idle.

Run: .venv/bin/python bench/bench_gateway.py [--calls 3000] [--seconds 3]
     .venv/bin/python bench/bench_gateway.py --flood [--flood-seconds 10] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lllm.proxies import BaseProxy, ProxyManager  # noqa: E402
from lllm.proxies.gateway import Gateway, GatewayLimits  # noqa: E402


class Bench(BaseProxy):
    _proxy_name = "Bench"
    _proxy_description = "A trivial endpoint."

    @BaseProxy.endpoint(category="b", endpoint="ping", description="Returns its input.", params={"i": (int, 1)})
    def ping(self, i: int = 0) -> dict:
        return {"i": i}


KERNEL_CODE = """
import json, time
lat = []
for i in range({calls}):
    t0 = time.perf_counter(); CALL_API("bench/ping", {{"i": i}}); lat.append(time.perf_counter() - t0)
n = limited = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    try:
        CALL_API("bench/ping", {{"i": n}}); n += 1
    except CallAPIError as e:
        if e.type != "RateLimited":
            raise
        limited += 1
rate = n / (time.perf_counter() - t0)
lat.sort()
print(json.dumps({{"p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)], "rate": rate, "limited": limited}}))
"""


def direct(manager: ProxyManager, calls: int, seconds: float) -> dict:
    lat = []
    for i in range(calls):
        t0 = time.perf_counter()
        manager.call("bench/ping", {"i": i})
        lat.append(time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        manager.call("bench/ping", {"i": n})
        n += 1
    lat.sort()
    return {"p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)], "rate": n / (time.perf_counter() - t0)}


def in_container(sandbox, calls: int, seconds: float) -> dict:
    result = sandbox.run_cell(KERNEL_CODE.format(calls=calls, seconds=seconds), timeout=120)
    if result.status != "ok":
        raise SystemExit(f"benchmark cell failed: {result.text}")
    return json.loads(result.stdout.strip().splitlines()[-1])


FLOOD_CODE = """
import json, socket, struct, threading, time
body = json.dumps({{"token": "x" * 43, "path": "bench/ping", "id": 1}}).encode()
frame = struct.pack(">I", len(body)) + body
BATCH = 64
stop_at = time.monotonic() + {seconds}
stats = {{"answered": 0, "connects": 0, "closed_by_gateway": 0, "connect_failures": 0}}
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
    answered = connects = closed = failures = 0
    s = None
    while time.monotonic() < stop_at:
        if s is None:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect("/run/lllm/gateway.sock")
                connects += 1
            except OSError:
                s.close(); s = None; failures += 1
                continue
        try:
            s.sendall(frame * BATCH)  # pipelined: the gateway reads them one after another
            for _ in range(BATCH):
                (n,) = struct.unpack(">I", recv_exact(s, 4))
                recv_exact(s, n)
                answered += 1
        except (OSError, EOFError):
            s.close(); s = None; closed += 1
    if s is not None:
        s.close()
    with lock:
        for key, value in (("answered", answered), ("connects", connects), ("closed_by_gateway", closed),
                           ("connect_failures", failures)):
            stats[key] += value

t0 = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range({threads})]
for t in threads: t.start()
for t in threads: t.join()
stats["seconds"] = time.monotonic() - t0
print(json.dumps(stats))
"""

VICTIM_CODE = """
import json, time
lat = []
for i in range({calls}):
    t0 = time.perf_counter(); CALL_API("bench/ping", {{"i": i}}); lat.append(time.perf_counter() - t0)
    time.sleep(0.002)
lat.sort()
print(json.dumps({{"p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)]}}))
"""


def run_json(sandbox, code: str, timeout: float = 300) -> dict:
    result = sandbox.run_cell(code, timeout=timeout)
    if result.status != "ok":
        raise SystemExit(f"benchmark cell failed: {result.text}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def flood(args: argparse.Namespace) -> None:
    """Sandbox A floods its gateway socket with refused frames; sandbox B's CALL_API latency is measured."""
    import tempfile
    import threading

    from lllm.logging import LogStore
    from lllm.sandbox._rundir import container_user
    from lllm.sandbox.docker import DockerSandbox

    owner = container_user()[0]
    with tempfile.TemporaryDirectory() as tmp, LogStore(Path(tmp) / "log.db") as store, Gateway() as gateway, \
            DockerSandbox(cell_timeout=300) as a, DockerSandbox(cell_timeout=300) as b:
        sa = gateway.open_session(a.session_dir, ProxyManager(proxies={"bench": Bench()}), session_id="flooder",
                                  tracer=store.record, token_owner=owner)
        sb = gateway.open_session(b.session_dir, ProxyManager(proxies={"bench": Bench()}), session_id="victim",
                                  token_owner=owner)
        run_json(b, VICTIM_CODE.format(calls=50))  # warm up: connect, code paths
        idle_before = run_json(b, VICTIM_CODE.format(calls=args.calls // 3))
        rows0, size0 = store.count("api_calls"), os.path.getsize(store.path)
        queue = getattr(gateway, "_reports", None)
        q0 = queue.qsize() if queue is not None else 0
        out: dict = {}
        flooder = threading.Thread(target=lambda: out.update(run_json(a, FLOOD_CODE.format(
            seconds=args.flood_seconds, threads=args.threads))))
        flooder.start()
        time.sleep(1.0)  # let the flood get going
        under = run_json(b, VICTIM_CODE.format(calls=args.calls // 3))
        qmax = queue.qsize() if queue is not None else 0
        flooder.join()
        q1 = queue.qsize() if queue is not None else 0
        minutes = out["seconds"] / 60
        rows1, size1 = store.count("api_calls"), os.path.getsize(store.path)
        idle_after = run_json(b, VICTIM_CODE.format(calls=args.calls // 3))
        sa.close()
        sb.close()
        rows2 = store.count("api_calls")
        dropped = getattr(gateway, "records_dropped", None)

    idle_p50 = (idle_before["p50"] + idle_after["p50"]) / 2

    def ms(x: float) -> str:
        return f"{x * 1e3:.3f} ms"

    print(f"Flood: sandbox A, {args.threads} threads, bad-token frames pipelined {64} at a time for "
          f"{out['seconds']:.1f} s; sandbox B calls CALL_API meanwhile ({args.calls // 3} calls per phase)")
    print(f"{'figure':<52}{'value':>16}{'baseline':>16}{'ratio':>10}")
    print(f"{'B round trip p50 under flood vs idle (target <= 2x)':<52}{ms(under['p50']):>16}{ms(idle_p50):>16}"
          f"{under['p50'] / idle_p50:>9.2f}x")
    print(f"{'B round trip p90 under flood vs idle':<52}{ms(under['p90']):>16}"
          f"{ms((idle_before['p90'] + idle_after['p90']) / 2):>16}"
          f"{under['p90'] / ((idle_before['p90'] + idle_after['p90']) / 2):>9.2f}x")
    print(f"{'refused frames answered to A, per second':<52}{out['answered'] / out['seconds']:>16,.0f}")
    print(f"{'connections A opened / closed by the gateway':<52}{out['connects']:>8,} / {out['closed_by_gateway']:<6,}")
    print(f"{'record rows written per minute of flood':<52}{(rows1 - rows0) / minutes:>16,.0f}")
    print(f"{'log file growth per minute of flood':<52}{(size1 - size0) / minutes / 1e6:>13,.1f} MB")
    print(f"{'record queue growth per minute of flood':<52}{(q1 - q0) / minutes:>16,.0f}   (peak seen {max(qmax, q1):,})")
    print(f"rows after the sessions closed: {rows2:,}; records dropped by the gateway: "
          f"{'n/a' if dropped is None else f'{dropped:,}'}; idle p50 before/after: {ms(idle_before['p50'])} / "
          f"{ms(idle_after['p50'])}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    ok = under["p50"] <= 2 * idle_p50
    print(f"target {'met' if ok else 'NOT met'}: B's p50 under flood {under['p50'] / idle_p50:.2f}x idle (<= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="round trips timed one by one")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the sustained loop")
    parser.add_argument("--flood", action="store_true", help="measure one session flooding the gateway instead")
    parser.add_argument("--flood-seconds", type=float, default=10.0, help="how long sandbox A floods")
    parser.add_argument("--threads", type=int, default=8, help="flooding threads (connections) in sandbox A")
    args = parser.parse_args()
    if args.flood:
        flood(args)
        return

    from lllm.sandbox._rundir import container_user
    from lllm.sandbox.docker import DockerSandbox

    manager = ProxyManager(proxies={"bench": Bench()})
    base = direct(manager, args.calls, args.seconds)
    with Gateway() as gateway, DockerSandbox(cell_timeout=120) as sandbox:
        owner = container_user()[0]
        unlimited = GatewayLimits(rate=1e9, burst=10**9)
        with gateway.open_session(sandbox.session_dir, manager, limits=unlimited, token_owner=owner):
            sandbox.run_cell('CALL_API("bench/ping")')  # connect once
            fast = in_container(sandbox, args.calls, args.seconds)
        with gateway.open_session(sandbox.session_dir, manager, token_owner=owner) as session:
            sandbox.run_cell("import lllm_guest; lllm_guest._client.close()")
            limited = in_container(sandbox, 200, args.seconds)
            default_rate = session.limits.rate

    def ms(x: float) -> str:
        return f"{x * 1e3:.3f} ms"

    print(f"CALL_API from a Docker sandbox, trivial endpoint ({args.calls} calls, then {args.seconds:g} s loops)")
    print(f"{'figure':<44}{'gateway':>14}{'direct call':>16}{'ratio':>10}")
    rows = [
        ("round trip p50 (target <= 2 ms)", ms(fast["p50"]), ms(base["p50"]), fast["p50"] / base["p50"]),
        ("round trip p90", ms(fast["p90"]), ms(base["p90"]), fast["p90"] / base["p90"]),
        ("sustained calls/s, one session (>= 500)", f"{fast['rate']:,.0f}", f"{base['rate']:,.0f}",
         fast["rate"] / base["rate"]),
        (f"calls/s under default limits ({default_rate:g}/s)", f"{limited['rate']:,.0f}", f"{base['rate']:,.0f}",
         limited["rate"] / base["rate"]),
    ]
    for name, a, b, ratio in rows:
        print(f"{name:<44}{a:>14}{b:>16}{ratio:>9.{1 if ratio >= 1 else 3}f}x")
    print(f"rate-limited calls in the default-limits loop: {limited['limited']:,}; load average during the run: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine skews these figures)")
    ok = fast["p50"] <= 0.002 and fast["rate"] >= 500
    print(f"targets {'met' if ok else 'NOT met'}: p50 {ms(fast['p50'])} <= 2 ms, {fast['rate']:,.0f} >= 500 calls/s")


if __name__ == "__main__":
    main()
