"""Benchmark: `Tactic.bcall` of 1,000 tasks on the scripted model with 50 workers, with and without the
SQLite log store, against a bare ThreadPoolExecutor making the same invoker calls in the same run.

    .venv/bin/python bench/bench_batch.py [--tasks 1000] [--workers 50] [--repeat 3]

Prints tasks/s for each and the ratio to the bare pool (the best of --repeat runs each). Target: with the
store, at least 500 tasks a second on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
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


def tactic_run(tasks: list[str], workers: int, store_path: Path | None) -> float:
    store = sqlite_store(store_path) if store_path is not None else None
    tactic = BenchClassifier(config(), log_store=store, runtime=Runtime("bench"))
    start = time.perf_counter()
    results = tactic.bcall(tasks, max_workers=workers, tags={"bench": "batch"}, progress=False)
    elapsed = time.perf_counter() - start
    assert results[1] == "<label>negative</label>" and not results.errors
    if store is not None:
        assert store.count("sessions") == len(tasks) and store.count("model_calls") == len(tasks)
        store.close()
    return len(tasks) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tasks = [f"review {i}: {'bad' if i % 2 else 'good'} product" for i in range(args.tasks)]
    bare: list[float] = []
    plain: list[float] = []
    stored: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            bare.append(bare_pool(tasks, args.workers))
            plain.append(tactic_run(tasks, args.workers, None))
            stored.append(tactic_run(tasks, args.workers, Path(tmp) / f"runs{r}.db"))
    b, p, s = max(bare), max(plain), max(stored)
    print(f"bcall of {args.tasks} tasks, {args.workers} workers, scripted model (best of {args.repeat}):")
    print(f"  bare ThreadPoolExecutor, same invoker calls: {b:8.0f} tasks/s  (baseline, 1.00)")
    print(f"  bcall, no log store:                         {p:8.0f} tasks/s  ({p / b:.2f} of baseline)")
    print(f"  bcall, SQLite log store (WAL, file):         {s:8.0f} tasks/s  ({s / b:.2f} of baseline)"
          f"  target >= 500: {'met' if s >= 500 else 'NOT met'}")


if __name__ == "__main__":
    main()
