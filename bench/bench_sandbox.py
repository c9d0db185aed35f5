"""Sandbox benchmark: each figure printed next to a baseline measured in the same run, as a ratio.

    .venv/bin/python bench/bench_sandbox.py [--quick]

- cold start (create -> kernel ready) p50, DockerSandbox vs a plain local ipykernel (jupyter_client
  `start_new_kernel`), target ratio <= 1.5;
- pool `acquire()` p50 (target <= 25 ms) vs the cold start it replaces;
- `run_cell("1+1")` p50 on DockerSandbox vs the same on a plain local ipykernel driven by jupyter_client's
  `execute_interactive` (target ratio <= 1.15); LocalSandbox too, for the cost of lllm's cell loop alone;
- 20 sandboxes at once, 20 cells each: all must succeed; p50/p99 of a cell vs one sandbox alone;
- the same fleet driven by one asyncio event loop (`AsyncDockerSandbox`, no thread per sandbox): cell p50 vs
  one sandbox alone, and its wall time vs the threaded fleet's;
- `run_command(["true"])` p50 (a supervised process beside the kernel) vs a bare `docker exec` of the same
  command through the Docker SDK (`exec_run`), and the first piece of a streamed cell's output vs the cell's end;
- memory per idle sandbox (the container's cgroup usage) vs a plain local ipykernel's RSS.

`--runtime runsc` measures the same under gVisor (registered with dockerd; see lllm/sandbox/docker.py).

`--remote` measures the relay transport instead (`lllm.sandbox.remote`, issue 15): it starts a second Docker
engine on loopback TCP with TLS (tests/remote_engine.py; needs root, loads the image into it, about a minute),
then, in rounds that take turns so the machine's load hits all alike, `run_cell("1+1")` p50 and the p50 of a
CALL_API round trip timed inside the kernel, for a sandbox on the local engine with the bind-mounted session
directory (the baseline), the same local engine over the relay, and the remote engine over the relay (target:
<= 2 ms added per round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lllm.sandbox import AsyncDockerSandbox, DockerSandbox, LocalSandbox, SandboxLimits, SandboxPool  # noqa: E402
from lllm.sandbox.image import ensure_image  # noqa: E402

LIMITS = SandboxLimits(memory="512m", pids=128)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def row(name: str, value: str, baseline_name: str, baseline: str, ratio: float, target: str = "") -> None:
    print(f"{name:<38} {value:>12}   vs {baseline_name:<30} {baseline:>12}   ratio {ratio:6.2f}  {target}")


def plain_kernel() -> tuple[object, object]:
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name="python3")


def plain_cell_times(client: object, n: int, *, interactive: bool = False) -> list[float]:
    """The baseline: execute, read IOPub until this request's idle, then its reply (the lean loop), or
    jupyter_client's own `execute_interactive`."""
    kc: Any = client
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if interactive:
            kc.execute_interactive("1+1", timeout=10, output_hook=lambda msg: None, allow_stdin=False)
        else:
            msg_id = kc.execute("1+1", allow_stdin=False)
            while True:
                msg = kc.get_iopub_msg(timeout=10)
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"):
                    break
            while kc.get_shell_msg(timeout=10)["parent_header"].get("msg_id") != msg_id:
                pass
        times.append(time.perf_counter() - t0)
    return times


def sandbox_cell_times(sb: object, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = sb.run_cell("1+1")  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
        assert res.result == "2", res.text
    return times


def command_times(sb: DockerSandbox, n: int) -> tuple[list[float], list[float]]:
    """`run_command(["true"])` and, as the baseline, the SDK's `exec_run` of the same command as the same user."""
    ours, bare = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        res = sb.run_command(["true"])
        ours.append(time.perf_counter() - t0)
        assert res.ok, res
        t0 = time.perf_counter()
        code, _ = sb.container.exec_run(["true"], user="1000:1000")
        bare.append(time.perf_counter() - t0)
        assert code == 0
    return ours, bare


def streaming_times(sb: DockerSandbox, n: int) -> tuple[list[float], list[float]]:
    """When a cell that prints, sleeps 1 s and prints again hands its first piece to `on_stdout`, and when it ends."""
    firsts, ends = [], []
    for _ in range(n):
        seen: list[float] = []
        t0 = time.perf_counter()
        sb.run_cell("import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')",
                    on_stdout=lambda _text: seen.append(time.perf_counter() - t0))
        ends.append(time.perf_counter() - t0)
        firsts.append(seen[0])
    return firsts, ends


async def async_fleet(image: str, fleet: int, per: int) -> tuple[list[float], float, list[str]]:
    """`fleet` AsyncDockerSandboxes, `per` cells each, all driven by one event loop."""
    sandboxes = [AsyncDockerSandbox(image=image, limits=LIMITS) for _ in range(fleet)]
    await asyncio.gather(*(sb.start() for sb in sandboxes))
    times: list[float] = []
    failures: list[str] = []

    async def work(sb: AsyncDockerSandbox) -> None:
        for i in range(per):
            t = time.perf_counter()
            res = await sb.run_cell(f"n{i} = {i} * 2\nn{i} + 1")
            times.append(time.perf_counter() - t)
            if res.result != str(i * 2 + 1):
                failures.append(res.text)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(work(sb) for sb in sandboxes))
        return times, time.perf_counter() - t0, failures
    finally:
        await asyncio.gather(*(sb.close() for sb in sandboxes))


def cgroup_memory(container_id: str) -> int | None:
    for path in (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current"):
        try:
            return int(Path(path).read_text())
        except OSError:
            continue
    return None


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def os_cpus() -> int:
    import os

    return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--runtime", default=None, help="OCI runtime for the sandboxes (runc, runsc)")
    parser.add_argument("--remote", action="store_true", help="the relay transport and a remote TLS engine "
                                                              "against the bind-mounted local transport")
    args = parser.parse_args()
    if args.remote:
        remote_main(quick=args.quick)
        return
    if args.runtime:
        import os

        os.environ["LLLM_SANDBOX_RUNTIME"] = args.runtime
    starts, cells, fleet, fleet_cells = (3, 100, 10, 10) if args.quick else (7, 300, 20, 20)
    image = ensure_image()
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]} on {os_cpus()} cores")
    print(f"image {image}; {starts} cold starts, {cells} cells, {fleet} sandboxes x {fleet_cells} cells\n")

    # -- baselines: a plain local ipykernel -------------------------------------------------------------------
    plain_starts = []
    for _ in range(starts):
        t0 = time.perf_counter()
        km, kc = plain_kernel()
        plain_starts.append(time.perf_counter() - t0)
        kc.stop_channels()  # type: ignore[attr-defined]
        km.shutdown_kernel(now=True)  # type: ignore[attr-defined]
    km, kc = plain_kernel()
    plain_cell_times(kc, 20)
    plain_cells = plain_cell_times(kc, cells)
    interactive_cells = plain_cell_times(kc, cells, interactive=True)
    plain_rss = rss_of(km.provisioner.process.pid)  # type: ignore[attr-defined]

    # -- cold start ---------------------------------------------------------------------------------------------
    cold = []
    for _ in range(starts):
        sb = DockerSandbox(image=image, limits=LIMITS)
        t0 = time.perf_counter()
        sb.start()
        cold.append(time.perf_counter() - t0)
        sb.close()
    cold_ratio = statistics.median(cold) / statistics.median(plain_starts)
    row("cold start p50 (DockerSandbox)", ms(statistics.median(cold)), "plain ipykernel start p50",
        ms(statistics.median(plain_starts)), cold_ratio, f"target <= 1.5: {'met' if cold_ratio <= 1.5 else 'MISSED'}")

    # -- pool acquire -----------------------------------------------------------------------------------------
    acquires = []
    with SandboxPool(size=2, image=image, limits=LIMITS, reap=False) as pool:
        for _ in range(starts + 3):
            pool.wait_ready(120)
            t0 = time.perf_counter()
            sb = pool.acquire()
            acquires.append(time.perf_counter() - t0)
            pool.release(sb)
    acq = statistics.median(acquires)
    row("pool acquire() p50", ms(acq), "cold start p50", ms(statistics.median(cold)),
        acq / statistics.median(cold), f"target <= 25 ms: {'met' if acq <= 0.025 else 'MISSED'}")

    # -- run_cell("1+1") --------------------------------------------------------------------------------------
    with DockerSandbox(image=image, limits=LIMITS) as sb:
        sandbox_cell_times(sb, 20)
        docker_cells = sandbox_cell_times(sb, cells)
        idle_mem = cgroup_memory(sb.container.id)
        commands, execs = command_times(sb, max(10, cells // 10))
        first_piece, cell_end = streaming_times(sb, 3)
    with LocalSandbox() as lsb:
        sandbox_cell_times(lsb, 20)
        local_cells = sandbox_cell_times(lsb, cells)
    base = statistics.median(plain_cells)
    ratio = statistics.median(docker_cells) / base
    row('run_cell("1+1") p50, DockerSandbox', ms(statistics.median(docker_cells)), "plain local ipykernel p50",
        ms(base), ratio, f"target <= 1.15: {'met' if ratio <= 1.15 else 'MISSED'}")
    row('run_cell("1+1") p90, DockerSandbox', ms(p(docker_cells, 0.9)), "plain local ipykernel p90",
        ms(p(plain_cells, 0.9)), p(docker_cells, 0.9) / p(plain_cells, 0.9))
    row('run_cell("1+1") p50, DockerSandbox', ms(statistics.median(docker_cells)),
        "jupyter_client execute_interactive", ms(statistics.median(interactive_cells)),
        statistics.median(docker_cells) / statistics.median(interactive_cells))
    row('run_cell("1+1") p50, LocalSandbox', ms(statistics.median(local_cells)), "plain local ipykernel p50",
        ms(base), statistics.median(local_cells) / base)
    row('run_command(["true"]) p50', ms(statistics.median(commands)), "bare docker exec (SDK) p50",
        ms(statistics.median(execs)), statistics.median(commands) / statistics.median(execs))
    row("first streamed output of a 1 s cell", ms(statistics.median(first_piece)), "the cell's end",
        ms(statistics.median(cell_end)), statistics.median(first_piece) / statistics.median(cell_end))
    kc.stop_channels()  # type: ignore[attr-defined]
    km.shutdown_kernel(now=True)  # type: ignore[attr-defined]

    # -- a fleet at once --------------------------------------------------------------------------------------
    sandboxes = [DockerSandbox(image=image, limits=LIMITS) for _ in range(fleet)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=fleet) as ex:
        list(ex.map(lambda s: s.start(), sandboxes))
    fleet_start = time.perf_counter() - t0
    lock = threading.Lock()
    fleet_times: list[float] = []
    failures: list[str] = []

    def work(sb: DockerSandbox) -> None:
        for i in range(fleet_cells):
            t = time.perf_counter()
            res = sb.run_cell(f"n{i} = {i} * 2\nn{i} + 1")
            dt = time.perf_counter() - t
            with lock:
                fleet_times.append(dt)
                if res.result != str(i * 2 + 1):
                    failures.append(res.text)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=fleet) as ex:
        list(ex.map(work, sandboxes))
    fleet_wall = time.perf_counter() - t0
    mems = [m for m in (cgroup_memory(sb.container.id) for sb in sandboxes) if m is not None]
    with ThreadPoolExecutor(max_workers=8) as ex:
        list(ex.map(lambda s: s.close(), sandboxes))
    ok = len(fleet_times) - len(failures)
    print(f"\n{fleet} sandboxes at once: started in {fleet_start:.1f} s; {ok}/{len(fleet_times)} cells succeeded "
          f"in {fleet_wall:.2f} s")
    row(f"cell p50, {fleet} sandboxes at once", ms(statistics.median(fleet_times)), "one sandbox alone p50",
        ms(statistics.median(docker_cells)), statistics.median(fleet_times) / statistics.median(docker_cells))
    row(f"cell p99, {fleet} sandboxes at once", ms(p(fleet_times, 0.99)), "one sandbox alone p99",
        ms(p(docker_cells, 0.99)), p(fleet_times, 0.99) / p(docker_cells, 0.99))

    # -- the same fleet from one event loop ---------------------------------------------------------------------
    async_times, async_wall, async_failures = asyncio.run(async_fleet(image, fleet, fleet_cells))
    print(f"{fleet} async sandboxes, one event loop: {len(async_times) - len(async_failures)}/{len(async_times)} "
          f"cells succeeded in {async_wall:.2f} s")
    row(f"cell p50, {fleet} async sandboxes", ms(statistics.median(async_times)), "one sandbox alone p50",
        ms(statistics.median(docker_cells)), statistics.median(async_times) / statistics.median(docker_cells))
    row("fleet wall time, async", f"{async_wall:9.2f} s ", "threads, one per sandbox", f"{fleet_wall:9.2f} s ",
        async_wall / fleet_wall)
    failures += async_failures

    # -- memory -----------------------------------------------------------------------------------------------
    if mems and idle_mem:
        per = statistics.median(mems)
        row("memory per idle sandbox (cgroup)", f"{per / 2**20:8.1f} MiB", "plain ipykernel RSS",
            f"{plain_rss / 2**20:8.1f} MiB", per / plain_rss)
    else:
        print("memory per idle sandbox: cgroup memory files not found on this host")
    if failures:
        raise SystemExit(f"{len(failures)} cells failed in the fleet run, first: {failures[0][:300]}")



CALL_API_LOOP = """
import time
lat = []
for i in range({n}):
    t0 = time.perf_counter(); CALL_API("bench/ping", {{"i": i}}); lat.append(time.perf_counter() - t0)
lat.sort()
print(lat[len(lat) // 2])
"""


def remote_main(*, quick: bool) -> None:
    """`--remote`: cell and CALL_API round trips over the relay (local and remote TLS engine) vs the bind mount."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from remote_engine import RemoteEngine

    from lllm.proxies import BaseProxy, ProxyManager
    from lllm.proxies.gateway import Gateway
    from lllm.sandbox._rundir import container_user

    class Bench(BaseProxy):
        _proxy_name = "Bench"
        _proxy_description = "A trivial endpoint."

        @BaseProxy.endpoint(category="b", endpoint="ping", description="Returns its input.", params={"i": (int, 1)})
        def ping(self, i: int = 0) -> dict:
            return {"i": i}

    rounds, cells, calls = (3, 50, 100) if quick else (5, 100, 300)
    image = ensure_image()
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]} on {os_cpus()} cores")
    t0 = time.perf_counter()
    engine = RemoteEngine().start()
    print(f"second engine {engine.host} (TLS) up in {time.perf_counter() - t0:.1f} s", end="; ", flush=True)
    t0 = time.perf_counter()
    try:
        engine.load(image)
        print(f"image loaded in {time.perf_counter() - t0:.1f} s")
        print(f"{rounds} rounds x ({cells} cells + {calls} CALL_APIs) per transport, taking turns\n")
        made = {"mount (local engine)": DockerSandbox(image=image, limits=LIMITS, transport="mount"),
                "relay (local engine)": DockerSandbox(image=image, limits=LIMITS, transport="relay"),
                "relay (remote TLS engine)": DockerSandbox(limits=LIMITS, docker_host=engine.host,
                                                           tls=str(engine.client_certs))}
        starts: dict[str, float] = {}
        cell_t: dict[str, list[float]] = {k: [] for k in made}
        call_t: dict[str, list[float]] = {k: [] for k in made}
        with Gateway() as gateway:
            sessions = []
            for name, sb in made.items():
                t0 = time.perf_counter()
                sb.start()
                starts[name] = time.perf_counter() - t0
                sessions.append(gateway.open_session(sb.session_dir, ProxyManager(proxies={"bench": Bench()}),
                                                     session_id=f"bench-{len(sessions)}",
                                                     token_owner=container_user()[0]))
                sandbox_cell_times(sb, 20)  # warm
            try:
                for _ in range(rounds):
                    for name, sb in made.items():
                        cell_t[name] += sandbox_cell_times(sb, cells)
                        out = sb.run_cell(CALL_API_LOOP.format(n=calls))
                        assert out.status == "ok", out.text
                        call_t[name].append(float(out.stdout.strip()))
            finally:
                for session in sessions:
                    session.close()
                for sb in made.values():
                    sb.close()
        base = "mount (local engine)"
        for name in made:
            row(f"start, {name}", f"{starts[name]:8.2f} s", base, f"{starts[base]:8.2f} s",
                starts[name] / starts[base])
        for name in made:
            c, b = p(cell_t[name], 0.5), p(cell_t[base], 0.5)
            row(f"run_cell p50, {name}", ms(c), base, ms(b), c / b, f"added {1000 * (c - b):+.2f} ms (target <= 2)")
        for name in made:
            c, b = statistics.median(call_t[name]), statistics.median(call_t[base])
            row(f"CALL_API p50, {name}", ms(c), base, ms(b), c / b, f"added {1000 * (c - b):+.2f} ms (target <= 2)")
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
