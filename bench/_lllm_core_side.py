"""The lllm-core (the LLLM framework's own package) half of bench_batch.py, run in the separate venv the bench
makes: the same trivial classifier tactic, `bcall` of N tasks on W threads with lllm-core's SQLite log store.

The model is an invoker that answers from the same responder as our scripted model (no provider, no litellm
call), built the way lllm-core's own invokers build their answer (a `Message` with usage). Prints one JSON
line: {"version", "tasks_per_s": [...], "sessions_kept": [...]} (how many sessions reached the file).

    <venv>/bin/python bench/_lllm_core_side.py --tasks 1000 --workers 50 --repeat 3 --db-dir DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import time
import warnings
from importlib.metadata import version

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)  # its store logs every "database is locked" with a traceback; we count instead

from lllm import Tactic  # noqa: E402  (lllm-core's lllm, in its own venv)
from lllm.core.const import Roles  # noqa: E402
from lllm.core.dialog import Message  # noqa: E402
from lllm.core.runtime import Runtime  # noqa: E402
from lllm.invokers import register_invoker  # noqa: E402
from lllm.invokers.base import BaseInvoker  # noqa: E402
from lllm.core.const import InvokeResult  # noqa: E402
from lllm.logging import sqlite_store  # noqa: E402

SYSTEM = "You are a sentiment classifier. Answer with <label>positive</label> or <label>negative</label>."


def responder(text: str) -> str:
    return "<label>negative</label>" if "bad" in text else "<label>positive</label>"


class BenchInvoker(BaseInvoker):
    """Answers like our scripted model: the responder's text, with usage at ~4 characters a token."""

    def call(self, dialog, model, model_args=None, parser_args=None, responder_name="assistant", metadata=None,
             api_type=None, stream_handler=None, **kwargs):
        last = dialog.messages[-1].content
        content = responder(last if isinstance(last, str) else str(last))
        prompt_chars = sum(len(str(m.content)) for m in dialog.messages)
        usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(content) // 4,
                 "response_cost": (prompt_chars // 4) * 2.5e-6 + (len(content) // 4) * 1e-5}
        message = Message(role=Roles.ASSISTANT, name=kwargs.get("responder", responder_name), content=content,
                          model=model, usage=usage, parsed={"raw": content})
        return InvokeResult(raw_response=None, model_args=dict(model_args or {}), message=message)


register_invoker("bench", lambda config: BenchInvoker(config), overwrite=True)


class BenchClassifier(Tactic):
    name = "bench_classifier"
    agent_group = ["classifier"]

    def call(self, task, **kwargs):
        agent = self.agents["classifier"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def config() -> dict:
    return {"tactic_type": "bench_classifier", "invoker": "bench",
            "agent_configs": [{"name": "classifier", "model_name": "gpt-4o", "system_prompt": SYSTEM}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db-dir", required=True)
    args = parser.parse_args()
    tasks = [f"review {i}: {'bad' if i % 2 else 'good'} product" for i in range(args.tasks)]
    rates: list[float] = []
    kept: list[int] = []
    for r in range(args.repeat):
        store = sqlite_store(os.path.join(args.db_dir, f"core{r}.db"))
        tactic = BenchClassifier(config(), log_store=store, runtime=Runtime())
        start = time.perf_counter()
        results = tactic.bcall(tasks, max_workers=args.workers, tags={"bench": "batch"})
        elapsed = time.perf_counter() - start
        assert results[1] == "<label>negative</label>" and results[0] == "<label>positive</label>", results[:2]
        rates.append(len(tasks) / elapsed)
        kept.append(_sessions_kept(os.path.join(args.db_dir, f"core{r}.db")))
    print(json.dumps({"version": version("lllm-core"), "tasks_per_s": rates, "sessions_kept": kept}))


def _sessions_kept(path: str) -> int:
    """Sessions that reached the file (lllm-core's SQLite backend is a key-value table, one key a session)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM kv WHERE key LIKE '%/sessions/%'").fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    main()
