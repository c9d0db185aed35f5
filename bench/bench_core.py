"""Benchmark of the agent core: `import lllm` wall time, and the per-turn overhead of `Agent.respond()`.

Run: `.venv/bin/python bench/bench_core.py` (about 20 s). Every figure is printed next to a baseline measured
in the same run:

1. `import lllm` (and `from lllm import Agent, Prompt`) in a fresh interpreter, against a fresh interpreter
   that imports nothing. Target: `import lllm` <= 0.3 s.
2. One turn (`receive(text)` + `respond()`) on the scripted model, against calling the same scripted invoker
   directly with the same growing message list. The difference is the agent's own overhead. Target:
   <= 0.5 ms a turn. Measured plain, with a DefaultTagParser, and with a tracer (list.append).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

os.environ.setdefault("LLLM_ALLOW_MODEL_REQUESTS", "0")

TURNS_PER_DIALOG = 20
DIALOGS = 25
REPEATS = 5


def _fresh_interpreter(code: str, runs: int = 10) -> tuple[float, float]:
    """(best, median) wall time of `python -c code` in a fresh process (interpreter start included).

    The best of the runs is the figure (other processes on a shared machine only ever add time); the median
    is printed beside it to show the noise.
    """
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench_import() -> None:
    base, base_med = _fresh_interpreter("pass")
    plain, plain_med = _fresh_interpreter("import lllm")
    agent, agent_med = _fresh_interpreter("from lllm import Agent, Prompt")
    _fresh_interpreter(
        "import sys, lllm; from lllm import Agent, Prompt; "
        "bad = [m for m in ('litellm', 'docker', 'playwright') if m in sys.modules]; assert not bad, bad", runs=1
    )
    print("== import time (fresh interpreter, best of 10; median in brackets) ==")
    print(f"baseline `python -c pass`            {base * 1000:8.1f} ms [{base_med * 1000:6.1f}]")
    print(f"`import lllm`                        {plain * 1000:8.1f} ms [{plain_med * 1000:6.1f}]   own cost "
          f"{(plain - base) * 1000:6.1f} ms   ratio {plain / base:5.2f}x   target <= 300 ms: "
          f"{'ok' if plain <= 0.3 else 'MISSED'}")
    print(f"`from lllm import Agent, Prompt`     {agent * 1000:8.1f} ms [{agent_med * 1000:6.1f}]   own cost "
          f"{(agent - base) * 1000:6.1f} ms   ratio {agent / base:5.2f}x")
    print("  (checked: neither imports litellm, docker or playwright)")


def _time(fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_turns() -> None:
    from lllm import Agent, Prompt
    from lllm.core.prompt import DefaultTagParser
    from lllm.invokers.base import InvokeContext
    from lllm.invokers.scripted import ScriptedInvoker

    answer = "<step>check the data</step> All good, carry on."
    question = "What should I do next with the quarterly numbers?"
    system_text = "You are a careful planner."
    turns = TURNS_PER_DIALOG * DIALOGS

    def responder(messages: list[dict[str, Any]]) -> str:
        return answer

    def direct() -> None:
        inv = ScriptedInvoker(responder=responder)
        for _ in range(DIALOGS):
            messages: list[dict[str, Any]] = [{"role": "system", "content": system_text}]
            ctx = InvokeContext(agent="a", dialog="d")
            for _ in range(TURNS_PER_DIALOG):
                messages.append({"role": "user", "content": question})
                result = inv.call(list(messages), model="gpt-4o", context=ctx)
                messages.append({"role": "assistant", "content": result.content})

    def via_agent(parser: Any = None, tracer: Any = None) -> Callable[[], None]:
        system = Prompt(path="bench/system", prompt=system_text, parser=parser)

        def run() -> None:
            inv = ScriptedInvoker(responder=responder)
            agent = Agent(name="a", system_prompt=system, model="gpt-4o", llm_invoker=inv, tracer=tracer)
            for i in range(DIALOGS):
                agent.open(f"d{i}")
                for _ in range(TURNS_PER_DIALOG):
                    agent.receive(question)
                    agent.respond()
                agent.close(f"d{i}")

        return run

    records: list[Any] = []
    base = _time(direct)
    variants = {
        "Agent.respond() plain": via_agent(),
        "  + DefaultTagParser": via_agent(parser=DefaultTagParser(xml_tags=["step"], required_xml_tags=["step"])),
        "  + parser + tracer": via_agent(parser=DefaultTagParser(xml_tags=["step"]), tracer=records.append),
    }
    print(f"\n== per-turn cost on the scripted model ({turns} turns, {TURNS_PER_DIALOG} a dialog, best of {REPEATS}) ==")
    per_base = base / turns * 1000
    print(f"baseline: invoker.call() directly     {per_base:7.3f} ms/turn")
    for label, fn in variants.items():
        records.clear()
        per = _time(fn) / turns * 1000
        over = per - per_base
        print(f"{label:<37} {per:7.3f} ms/turn   overhead {over:6.3f} ms/turn   ratio {per / per_base:5.2f}x"
              f"   target overhead <= 0.5 ms: {'ok' if over <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    bench_import()
    bench_turns()
