"""Fork and snapshot benchmark: each figure printed next to a baseline measured in the same run, as a ratio.

    .venv/bin/python bench/bench_fork.py [--quick]

- fork -> first reply from the branch, p50 (target <= 150 ms) for a kernel holding 250 MB of data, vs a fresh
  sandbox's cold start (create -> first reply) p50;
- memory per idle branch (target <= 20 MB): the container cgroup's usage with 20 live branches minus without,
  over 20, vs the cgroup usage of a fresh idle sandbox (what a separate sandbox per branch would cost);
- 20 live branches in one sandbox: each answers a cell (all must);
- save + resume of a 100 MB namespace, p50 of 3 (target <= 5 s), vs the cold start it includes;
- where the fork's time goes: the host's fork() call, the guest's fork and the branch's set-up by phase (as the
  parent kernel measured them), the first cell.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lllm.sandbox import DockerSandbox, SandboxLimits  # noqa: E402
from lllm.sandbox.image import ensure_image  # noqa: E402

BIG = SandboxLimits(memory="3g", pids=512, workspace_size="512m")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def row(name: str, value: str, baseline_name: str, baseline: str, ratio: float, target: str = "") -> None:
    print(f"{name:<44} {value:>12}   vs {baseline_name:<32} {baseline:>12}   ratio {ratio:6.3f}  {target}")


def cgroup_memory(container_id: str) -> int | None:
    """The container's memory use without the page cache (tmpfs files are cache; this is the kernels')."""
    for path in (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.stat",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.stat"):
        try:
            stats = dict(line.split() for line in Path(path).read_text().splitlines())
        except OSError:
            continue
        if "total_rss" in stats:
            return int(stats["total_rss"]) + int(stats.get("total_mapped_file", 0))
        return int(stats.get("anon", 0)) + int(stats.get("file_mapped", 0))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    image = ensure_image()
    starts, forks, branches, snapshots = (3, 5, 20, 1) if args.quick else (5, 11, 20, 3)
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]}; image {image}")

    # -- baseline: a fresh sandbox, create -> first reply ----------------------------------------------------------
    cold: list[float] = []
    fresh_mem: list[int] = []
    for _ in range(starts):
        t = time.perf_counter()
        sb = DockerSandbox(image=image, limits=BIG)
        sb.start()
        sb.run_cell("1")
        cold.append(time.perf_counter() - t)
        time.sleep(0.5)
        mem = cgroup_memory(sb.container.id)
        if mem is not None:
            fresh_mem.append(mem)
        sb.close()
    cold_p50 = statistics.median(cold)

    with DockerSandbox(image=image, limits=BIG, max_branches=branches + 2, cell_timeout=300) as sb:
        res = sb.run_cell("import numpy as np\nbig = np.ones(250 * 2**20 // 8)\nbig[::512] = 2.0\n"
                          "helper = lambda: float(big[:4].sum())\nprint(helper())")
        assert res.status == "ok", res.text

        # -- fork -> first reply ----------------------------------------------------------------------------------
        times: list[float] = []
        parts: dict[str, list[float]] = {}
        for _ in range(forks):
            t = time.perf_counter()
            branch = sb.fork()
            t_forked = time.perf_counter()
            out = branch.run_cell("helper()")
            times.append(time.perf_counter() - t)
            assert out.result == "5.0", out.text
            parts.setdefault("fork() on the host", []).append(t_forked - t)
            parts.setdefault("first cell", []).append(times[-1] - (t_forked - t))
            for phase, seconds in branch.fork_timing.items():
                parts.setdefault(f"guest {phase}", []).append(seconds)
            branch.close()
        fork_p50 = statistics.median(times)
        row("fork -> first reply p50 (250 MB kernel)", ms(fork_p50), "fresh sandbox cold start p50", ms(cold_p50),
            fork_p50 / cold_p50, "target <= 150 ms")
        print("  where it goes (p50 each): " + ", ".join(f"{name} {statistics.median(v) * 1000:.1f} ms"
                                                         for name, v in parts.items()))

        # -- 20 live branches, memory per idle branch ------------------------------------------------------------
        time.sleep(0.5)
        before = cgroup_memory(sb.container.id)
        live = [sb.fork() for _ in range(branches)]
        answers = [b.run_cell(f"x_{i} = {i}; helper() + {i}").result for i, b in enumerate(live)]
        ok = sum(1 for i, a in enumerate(answers) if a == str(5.0 + i))
        time.sleep(0.5)
        after = cgroup_memory(sb.container.id)
        print(f"{branches} live branches in one sandbox: {ok}/{branches} answered a cell; "
              f"{len(sb.branches)} listed in sb.branches")
        if before is not None and after is not None and fresh_mem:
            per = (after - before) / branches
            base = statistics.median(fresh_mem)
            row("memory per idle branch (cgroup rss)", f"{per / 2**20:8.1f} MiB", "fresh idle sandbox (cgroup rss)",
                f"{base / 2**20:8.1f} MiB", per / base, "target <= 20 MiB")
        else:
            print("memory per idle branch: cgroup memory files not found on this host")
        for b in live:
            b.close()
        if ok != branches:
            raise SystemExit(f"only {ok}/{branches} branches answered")

        # -- save + resume of a 100 MB namespace --------------------------------------------------------------------
        sb.run_cell("del big, helper\nimport numpy as np\nframe = np.random.rand(100 * 2**20 // 8)\n"
                    "total = float(frame.sum())")
        save_s: list[float] = []
        resume_s: list[float] = []
        for _ in range(snapshots):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "ns.snapshot"
                t = time.perf_counter()
                info = sb.save(path)
                save_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                resumed = DockerSandbox.resume(path)
                try:
                    check = resumed.run_cell("print(float(frame.sum()) == total)")
                    resume_s.append(time.perf_counter() - t)
                    assert check.stdout.strip().endswith("True"), check.text
                finally:
                    resumed.close()
        saved, resumed_p50 = statistics.median(save_s), statistics.median(resume_s)
        total = statistics.median([a + b for a, b in zip(save_s, resume_s)])
        print(f"snapshot: {info.meta.namespace_bytes / 1e6:.1f} MB namespace; p50 of {snapshots}: save {saved:.2f} s, "
              f"resume (start + restore + first reply) {resumed_p50:.2f} s, of which the container's cold start is "
              f"about {cold_p50:.2f} s")
        row("save + resume p50, 100 MB namespace", f"{total:8.2f} s", "fresh sandbox cold start p50",
            f"{cold_p50:8.2f} s", total / cold_p50, "target <= 5 s")


if __name__ == "__main__":
    main()
