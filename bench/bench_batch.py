"""Benchmark: `Tactic.bcall` of 1,000 tasks on the scripted model with 50 workers, with and without the
SQLite log store, against a bare ThreadPoolExecutor making the same invoker calls, and against lllm-core (the
LLLM framework's own package) running the same trivial tactic with its SQLite store, all in the same run.

    .venv/bin/python bench/bench_batch.py [--tasks 1000] [--workers 50] [--repeat 5] [--no-core]
    .venv/bin/python bench/bench_batch.py --ray [--cells 100] [--ray-address HOST:PORT]   # threads vs Ray

lllm-core is installed by this script (pip, from the package registry) into its own venv under
`$LLLM_BENCH_CACHE` (default ~/.cache/lllm-bench), once; its half runs in `bench/_lllm_core_side.py`.
Prints tasks/s for each (the best of --repeat runs, and every run with the machine's load average) and the
ratios the targets are about: with the store, at least 50% of our own throughput without a store (also run by
run, each store run against the no-store run just before it), and at least 3x lllm-core's throughput with its
store. With the store, a batch's log writes are committed by the store's writer process (the default
`writer="auto"`); the CPU line counts this process only, not the writer process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's lllm, whatever the editable finder says
os.environ.setdefault("LLLM_ALLOW_MODEL_REQUESTS", "0")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lllm import Prompt, Tactic  # noqa: E402
from lllm.core.runtime import Runtime  # noqa: E402
from lllm.invokers import build_invoker  # noqa: E402
from lllm.logging import sqlite_store  # noqa: E402

SYSTEM = "You are a sentiment classifier. Answer with <label>positive</label> or <label>negative</label>."


def responder(messages: list[dict]) -> str:
    text = messages[-1]["content"]
    return "<label>negative</label>" if "bad" in text else "<label>positive</label>"


class BenchClassifier(Tactic, register=False):
    name = "bench_classifier"
    agent_group = ["classifier"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["classifier"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def config() -> dict:
    return {
        "tactic_type": "bench_classifier",
        "invoker": "scripted",
        "invoker_config": {"responder": responder},
        "agent_configs": [{"name": "classifier", "model_name": "gpt-4o", "system_prompt": SYSTEM}],
    }


def bare_pool(tasks: list[str], workers: int) -> float:
    invoker = build_invoker({"invoker": "scripted", "responder": responder})

    def one(task: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
        return invoker.call(messages, model="gpt-4o").content

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(one, tasks))
    elapsed = time.perf_counter() - start
    assert len(out) == len(tasks) and out[1] == "<label>negative</label>"
    return len(tasks) / elapsed


WAITS: list[float] = []
"""Per run with the store: the longest a log write waited for its commit (what a crash could lose), seconds."""
CPU: dict[bool, list[float]] = {False: [], True: []}
"""Per run, without (False) and with (True) the store: this process's CPU seconds (user + system). Less
sensitive to other processes than wall time: on a saturated machine the throughput ratio tends to the CPU one."""


def tactic_run(tasks: list[str], workers: int, store_path: Path | None) -> float:
    store = sqlite_store(store_path) if store_path is not None else None
    tactic = BenchClassifier(config(), log_store=store, runtime=Runtime("bench"))
    cpu = time.process_time()
    start = time.perf_counter()
    results = tactic.bcall(tasks, max_workers=workers, tags={"bench": "batch"}, progress=False)
    elapsed = time.perf_counter() - start
    CPU[store is not None].append(time.process_time() - cpu)
    assert results[1] == "<label>negative</label>" and not results.errors
    if store is not None:
        assert store.count("sessions") == len(tasks) and store.count("model_calls") == len(tasks)
        WAITS.append(store.writer_stats["max_wait_s"])
        store.close()
    return len(tasks) / elapsed


CORE_VERSION = "0.1.1.1"  # the lllm-core release with the Tactic/bcall/LogStore API that lllm follows


def core_python() -> Path:
    """The python of a venv holding lllm-core (made on first use)."""
    cache = Path(os.environ.get("LLLM_BENCH_CACHE") or Path.home() / ".cache" / "lllm-bench")
    venv = cache / f"lllm-core-{CORE_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        print(f"installing lllm-core {CORE_VERSION} into {venv} (once) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"lllm-core=={CORE_VERSION}"], check=True)
        (venv / ".installed").touch()
    return python


def core_run(tasks: int, workers: int, repeat: int, tmp: str) -> dict:
    """lllm-core's bcall with its SQLite store, in its own venv: {"tasks_per_s": [...], "sessions_kept": [...]}."""
    side = Path(__file__).resolve().parent / "_lllm_core_side.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(core_python()), str(side), "--tasks", str(tasks), "--workers", str(workers),
                          "--repeat", str(repeat), "--db-dir", tmp], check=True, capture_output=True, text=True,
                         env=env, cwd=tmp)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (50 threads on a shared 2-core machine "
                                                                 "vary by up to 2x from run to run)")
    parser.add_argument("--no-core", action="store_true", help="skip lllm-core (no venv, no install)")
    parser.add_argument("--ray", action="store_true", help="threads vs a local Ray cluster (bench/_batch_ray.py)")
    parser.add_argument("--ray-address", help="with --ray: join this cluster instead of starting a local one")
    parser.add_argument("--cells", type=int, default=100, help="with --ray: tasks with one run_python cell (0: none)")
    parser.add_argument("--cell-workers", type=int, default=8, help="with --ray: cell tasks at once, both executors")
    args = parser.parse_args()
    if args.ray:
        from _batch_ray import main_ray

        main_ray(args, BenchClassifier, config, responder)
        return
    tasks = [f"review {i}: {'bad' if i % 2 else 'good'} product" for i in range(args.tasks)]
    bare: list[float] = []
    plain: list[float] = []
    stored: list[float] = []
    core: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            bare.append(bare_pool(tasks, args.workers))
            plain.append(tactic_run(tasks, args.workers, None))
            stored.append(tactic_run(tasks, args.workers, Path(tmp) / f"runs{r}.db"))
        if not args.no_core:
            core = core_run(args.tasks, args.workers, args.repeat, tmp)
    load = os.getloadavg()
    b, p, s = max(bare), max(plain), max(stored)
    print(f"bcall of {args.tasks} tasks, {args.workers} workers, scripted model (best of {args.repeat}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
    print(f"  bare ThreadPoolExecutor, same invoker calls: {b:8.0f} tasks/s  (baseline, 1.00)")
    print(f"  bcall, no log store:                         {p:8.0f} tasks/s  ({p / b:.2f} of baseline)")
    print(f"  bcall, SQLite log store (WAL, file):         {s:8.0f} tasks/s  ({s / b:.2f} of baseline)")
    if core:
        c = max(core["tasks_per_s"])
        kept = core["sessions_kept"]
        print(f"  lllm-core {core['version']} bcall, its SQLite store:  {c:8.0f} tasks/s  ({c / b:.2f} of baseline; "
              f"sessions kept per run: {kept} of {args.tasks})")
    pairs = sorted(x / y for x, y in zip(stored, plain))  # each run with the store against the run just before it
    print(f"  every run, tasks/s: bare {[round(x) for x in bare]}, no store {[round(x) for x in plain]}, "
          f"store {[round(x) for x in stored]}")
    print(f"  with the store / without, run by run: {[round(x, 2) for x in pairs]} "
          f"(median {pairs[len(pairs) // 2]:.2f})")
    print(f"  longest wait of a log write for its commit, run by run (what a crash could lose): "
          f"{[f'{1000 * w:.0f} ms' for w in WAITS]}")
    cpu_plain, cpu_store = sorted(CPU[False])[len(CPU[False]) // 2], sorted(CPU[True])[len(CPU[True]) // 2]
    per_1000 = 1_000_000 / args.tasks  # CPU seconds of a run -> ms per 1,000 tasks
    print(f"  CPU of this process per 1,000 tasks (median): no store {cpu_plain * per_1000:.0f} ms, store "
          f"{cpu_store * per_1000:.0f} ms ({cpu_plain / cpu_store:.2f}: about what the ratio comes to when no "
          f"core is free)")
    print(f"with the store / without:   {s / p:.2f}  (target >= 0.50: {'met' if s / p >= 0.5 else 'NOT met'})")
    if core:
        print(f"ours / lllm-core, stores:   {s / c:.1f}x (target >= 3x: {'met' if s / c >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
