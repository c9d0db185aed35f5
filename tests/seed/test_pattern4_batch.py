"""Seed lesson, Pattern 4 (high-throughput batch processing), run as written.

The snippet is executed verbatim. What it leaves to the reader is supplied here: `ClassificationTactic` (one
classifier agent from the example package's `default` config), `config`, and `load_your_dataset()` (120
reviews). The model is scripted as a provider with a quota that runs out during the second batch, so the
lesson's "collect errors without stopping the batch" really has errors to collect. Checked: the first batch
succeeds with one session per item carrying its tags and cost; the second goes on past failures, each
failure inline and recorded with its traceback.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from lllm import Tactic, load_package, resolve_config
from lllm.logging import sqlite_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"

SNIPPET = '''
from lllm import LogStore
from lllm.logging import sqlite_store

store = sqlite_store("./batch_runs.db")
tactic = ClassificationTactic(config, log_store=store)
items = load_your_dataset() # list of strings

# Process 50 items in parallel, fail fast on first error
results = tactic.bcall(
    items,
    max_workers=50,
    fail_fast=True,
    tags={"batch": "2026-03-17", "env": "prod"},
)

# Collect errors without stopping the batch
results = tactic.bcall(items, max_workers=50, fail_fast=False)
for i, r in enumerate(results):
    if isinstance(r, Exception):
        print(f"Item {i} failed: {r}")
    else:
        print(f"Item {i}: {r}")
'''

KINDS = {"positive": "I love this blender, it works great", "negative": "This kettle is terrible, it leaks",
         "neutral": "The toaster is fine, nothing special"}
N_ITEMS = 120
QUOTA_LEFT_FOR_SECOND_BATCH = 10


class ClassificationTactic(Tactic):
    name = "classification"
    agent_group = ["classifier"]

    def call(self, task: str, **kwargs) -> str:
        classifier = self.agents["classifier"]
        classifier.open("classify")
        classifier.receive(task)
        return classifier.respond().parsed["xml_tags"]["label"][0]


def load_your_dataset() -> list[str]:
    kinds = list(KINDS)
    return [f"{KINDS[kinds[i % 3]]} (review {i})" for i in range(N_ITEMS)]


class QuotaProvider:
    """A provider that labels reviews by their wording until its request quota runs out."""

    def __init__(self, quota: int) -> None:
        self.quota, self.used, self.lock = quota, 0, threading.Lock()

    def __call__(self, messages: list[dict]) -> object:
        with self.lock:
            self.used += 1
            over = self.used > self.quota
        if over:
            return {"error": "api_error", "message": "monthly quota exceeded", "status_code": 402}
        text = messages[-1]["content"]
        label = next(k for k, v in KINDS.items() if text.startswith(v))
        return f"<label>{label}</label>"


def test_pattern4_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    load_package(EXAMPLE)
    config = resolve_config("default")
    config["tactic_type"] = "classification"
    # a simulated price (the scripted model is free unless asked), so the cost checks below are not sums of zeros
    config["invoker_config"] = {"responder": QuotaProvider(N_ITEMS + QUOTA_LEFT_FOR_SECOND_BATCH), "max_retries": 1,
                                "input_price": 2.5, "output_price": 10.0}
    namespace = {"ClassificationTactic": ClassificationTactic, "config": config,
                 "load_your_dataset": load_your_dataset}

    exec(compile(SNIPPET, "seed-pattern4", "exec"), namespace)

    items = load_your_dataset()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == N_ITEMS
    ok = [ln for ln in lines if re.fullmatch(r"Item \d+: (positive|negative|neutral)", ln)]
    failed = [ln for ln in lines if re.fullmatch(r"Item \d+ failed: .*monthly quota exceeded.*", ln)]
    assert len(ok) == QUOTA_LEFT_FOR_SECOND_BATCH and len(failed) == N_ITEMS - QUOTA_LEFT_FOR_SECOND_BATCH
    for line in ok:  # the labels that got through are right
        i, label = re.fullmatch(r"Item (\d+): (\w+)", line).groups()
        assert items[int(i)].startswith(KINDS[label])

    store = namespace["store"]
    assert isinstance(store, namespace["LogStore"]) and Path("batch_runs.db").is_file()
    first = store.list_sessions(tags={"batch": "2026-03-17", "env": "prod"}, limit=None)
    assert len(first) == N_ITEMS and {s.task_index for s in first} == set(range(N_ITEMS))
    assert len({s.batch_id for s in first}) == 1
    assert all(s.state == "ok" and s.cost > 0 and s.model_calls == 1 for s in first)
    assert sorted(s.result for s in first) == sorted(["positive", "negative", "neutral"] * (N_ITEMS // 3))

    second_batch = namespace["results"].batch_id
    second = store.list_sessions(batch_id=second_batch, limit=None)
    assert len(second) == N_ITEMS and all(s.tags == {} for s in second)
    errors = [s for s in second if s.state == "error"]
    assert len(errors) == N_ITEMS - QUOTA_LEFT_FOR_SECOND_BATCH
    assert all("monthly quota exceeded" in s.error and "Traceback" in s.traceback for s in errors)
    summary = {r.group: r for r in store.cost_summary(group_by="tag:env")}
    assert summary["prod"].sessions == N_ITEMS and summary["prod"].cost == pytest.approx(sum(s.cost for s in first))
