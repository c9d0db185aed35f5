"""Benchmark: CALL_API through the gateway, from inside a Docker sandbox, against an in-process ProxyManager call.

Prints, each next to its baseline measured in the same run:
- the round trip of CALL_API for a trivial endpoint from kernel code in a real container (p50, p90), against a
  direct `ProxyManager.call` on the host (what the same call costs without a sandbox, socket or JSON);
- sustained calls per second from one session (a tight loop for a few seconds), against the same direct calls;
- the same loop under the gateway's default limits (1000 calls/s per session), to show what a session gets.
Targets (issue 5): p50 <= 2 ms, >= 500 calls/s.

Run: .venv/bin/python bench/bench_gateway.py [--calls 3000] [--seconds 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="round trips timed one by one")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the sustained loop")
    args = parser.parse_args()

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
