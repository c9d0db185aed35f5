"""`bench/bench_batch.py --ray`: the same batches on a local Ray cluster and on threads, in the same run.

1. 1,000 trivial tasks (the scripted classifier of bench_batch.py, SQLite log store) with threads, then as Ray
   tasks; the figure is the overhead per task on Ray, (Ray's wall time - threads' wall time) / tasks, plus the
   batch's start (shipping, the hub) measured apart.
2. 100 tasks with one run_python cell each (a Docker sandbox per task), threads against Ray at the same number
   of tasks at once, in the order threads, Ray, Ray, threads (half the tasks each time).

Ray starts a local cluster on 127.0.0.1 (`--ray-address` joins one instead); its tasks reserve a CPU share so that
both executors run the same number of tasks at once.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.invokers import override
from lllm.invokers.scripted import ScriptedInvoker
from lllm.logging import sqlite_store


class BenchCells(Tactic, register=False):
    name = "bench_cells"
    agent_group = ["coder"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["coder"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def cell_config() -> dict[str, Any]:
    return {"tactic_type": "bench_cells", "invoker": "scripted",
            "agent_configs": [{"name": "coder", "model_name": "scripted", "system_prompt": "Compute it.",
                               "proxy": {"activate_proxies": [], "exec_env": "interpreter",
                                         "sandbox": {"backend": "docker"}}}]}


def cell_scripts(tasks: list[str]) -> dict[str, list[Any]]:
    code = "print(6 * 7)"
    return {t: [{"tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}, f"42 for {t}"] for t in tasks}


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def main_ray(args: Any, classifier: type, config: Callable[[], dict[str, Any]], responder: Any) -> None:
    from ray import cloudpickle

    from lllm.executors import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module is not on the workers' path
    cpus = os.cpu_count() or 2
    executor = RayExecutor(address=args.ray_address, log_to_driver=False)
    started, _ = timed(executor.connect)
    print(f"Ray: {'joined ' + args.ray_address if args.ray_address else 'local cluster started'} in {started:.1f}s "
          f"({cpus} CPUs here)")
    tasks = [f"review {i}: {'bad' if i % 2 else 'good'} product" for i in range(args.tasks)]
    with tempfile.TemporaryDirectory() as tmp:

        def trivial(executor_or_none: Any, n: int) -> float:
            store = sqlite_store(Path(tmp) / f"trivial-{n}.db")
            tactic = classifier(config(), log_store=store, runtime=Runtime("bench"))
            seconds, results = timed(lambda: tactic.bcall(tasks, max_workers=args.workers, progress=False,
                                                          executor=executor_or_none))
            assert not results.errors and results[1] == "<label>negative</label>"
            assert store.count("sessions") == len(tasks) and store.count("model_calls") == len(tasks)
            store.close()
            return seconds

        threads = [trivial(None, r) for r in range(args.repeat)]
        on_ray = [trivial(executor, 100 + r) for r in range(args.repeat)]
        # the fixed cost of a batch on Ray (ship, hub), apart from its tasks: a batch of one
        one = min(trivial_one(classifier, config, executor) for _ in range(args.repeat))
        t, r = min(threads), min(on_ray)
        n = len(tasks)
        print(f"bcall of {n} trivial tasks, {args.workers} in flight, SQLite log store (best of {args.repeat}):")
        print(f"  threads:          {t:7.2f} s  {n / t:8.0f} tasks/s  (baseline, 1.00)")
        print(f"  Ray (local):      {r:7.2f} s  {n / r:8.0f} tasks/s  ({t / r:.2f} of baseline)")
        print(f"  Ray overhead per task: {(r - t) / n * 1000:.2f} ms  (first Ray batch, with worker start-up: "
              f"{on_ray[0]:.2f} s); a batch of one task on Ray: {one:.2f} s (ship + hub + one task)")

        if args.cells:
            cell_tasks = [f"cell {i}" for i in range(args.cells)]
            halves = [cell_tasks[: len(cell_tasks) // 2], cell_tasks[len(cell_tasks) // 2:]]
            width = args.cell_workers

            def cells(executor_or_none: Any, tag: str, part: list[str]) -> float:
                store = sqlite_store(Path(tmp) / f"cells-{tag}.db")
                with override(ScriptedInvoker(scripts=cell_scripts(part))):
                    tactic = BenchCells(cell_config(), log_store=store, runtime=Runtime("bench-cells"))
                seconds, results = timed(lambda: tactic.bcall(part, max_workers=width, progress=False,
                                                              executor=executor_or_none))
                assert not results.errors and results[0] == f"42 for {part[0]}", results[:3]
                assert store.count("cells") == len(part)
                store.close()
                return seconds

            # threads, Ray, Ray, threads (half the tasks each time): a load that drifts during the run (others
            # share this machine) weighs on both alike
            shared = RayExecutor(address=args.ray_address, num_cpus=cpus / width, log_to_driver=False)
            load_before = os.getloadavg()[0]
            ct = cells(None, "threads-1", halves[0])
            cr = cells(shared, "ray-1", halves[0])
            cr += cells(shared, "ray-2", halves[1])
            ct += cells(None, "threads-2", halves[1])
            m = len(cell_tasks)
            print(f"bcall of {m} tasks with one run_python cell each (a Docker sandbox per task), {width} at once:")
            print(f"  threads:          {ct:7.2f} s  {m / ct:8.2f} tasks/s  (baseline, 1.00)")
            print(f"  Ray (local):      {cr:7.2f} s  {m / cr:8.2f} tasks/s  ({ct / cr:.2f} of baseline)")
            print(f"  Ray overhead per task: {(cr - ct) / m * 1000:.0f} ms  (this machine's load average: "
                  f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    executor.close()


def trivial_one(classifier: type, config: Callable[[], dict[str, Any]], executor: Any) -> float:
    tactic = classifier(config(), runtime=Runtime("bench"))
    seconds, _ = timed(lambda: tactic.bcall(["one good task"], progress=False, executor=executor))
    return seconds
