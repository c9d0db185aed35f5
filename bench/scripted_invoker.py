"""Throughput of the scripted model in a batch: 1,000 tasks on 50 worker threads, as `Tactic.bcall` runs them.

Compares, in the same run:
  baseline      the thread pool alone (each task returns a constant string);
  in-process    ScriptedInvoker's default path (shared normalisation, usage, cost);
  through       ScriptedInvoker(through_litellm=True): every step through litellm.completion(mock_response=...).
Each task is one model call with a 3-message request. Run: .venv/bin/python bench/scripted_invoker.py
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("LLLM_ALLOW_MODEL_REQUESTS", "0")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lllm.invokers import FunctionInvoker  # noqa: E402

TASKS = 1000
WORKERS = 50


def messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You classify support tickets into billing, bug or other."},
        {"role": "user", "content": f"Ticket {i}: I was charged twice for my subscription this month."},
        {"role": "assistant", "content": "<label>billing</label>"},
    ]


def run(task) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(task, range(TASKS)))
    elapsed = time.perf_counter() - start
    assert len(results) == TASKS
    return elapsed


def main() -> None:
    baseline = run(lambda i: "<label>billing</label>")
    fast = FunctionInvoker(lambda msgs: "<label>billing</label>")
    in_process = run(lambda i: fast.call(messages(i), model="gpt-4o").content)
    slow = FunctionInvoker(lambda msgs: "<label>billing</label>", through_litellm=True)
    slow.call(messages(0), model="gpt-4o")  # import litellm and warm it up outside the timing
    through = run(lambda i: slow.call(messages(i), model="gpt-4o").content)
    print(f"{TASKS} tasks on {WORKERS} threads, one scripted model call each")
    print(f"  baseline (thread pool only):   {TASKS / baseline:10.0f} tasks/s")
    print(f"  scripted, in-process:          {TASKS / in_process:10.0f} tasks/s  "
          f"({in_process / TASKS * 1e6:.0f} us/task; {in_process / baseline:.1f}x the baseline's time)")
    print(f"  scripted, through litellm:     {TASKS / through:10.0f} tasks/s  "
          f"({through / TASKS * 1e6:.0f} us/task; {through / in_process:.1f}x the in-process time)")


if __name__ == "__main__":
    main()
