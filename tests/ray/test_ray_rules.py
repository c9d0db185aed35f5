"""A batch on Ray keeps the rules of a batch on threads: results in input order, fail_fast, resume=, max_cost=,
tags, errors of the package's own classes (the same batch runs on both and the outcomes are compared)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

TASKS = ["a", "fail b", "c", "d", "fail e", "f"]
SCRIPTS = {t: [f"done {t}"] for t in TASKS if not t.startswith("fail")}
PRICE = 1_000_000.0
"""USD per million prompt tokens: a few dollars a task (simulated by the scripted model)."""


def run(runtime: Any, tasks: list[str], executor: Any, **options: Any) -> tuple[Any, Any]:
    from lllm.core.runtime import build_tactic
    from lllm.invokers import override
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging import sqlite_store

    store = options.pop("store", None) or sqlite_store(":memory:")
    with override(ScriptedInvoker(scripts=SCRIPTS, input_price=PRICE)):
        tactic = build_tactic(runtime.get_config("plain"), log_store=store, runtime=runtime)
    try:
        return tactic.bcall(tasks, executor=executor, **options), store
    except Exception as exc:  # noqa: BLE001 - compared by the test
        return exc, store


def outcome(value: Any) -> Any:
    """A result or an error, comparable across executors."""
    if isinstance(value, BaseException):
        text = re.sub(r"'[0-9a-f]{16}'", "<batch id>", str(value).splitlines()[0])
        return (type(value).__module__, type(value).__name__, text)
    return [outcome(v) for v in value] if isinstance(value, list) else getattr(value, "answer", value)


def sessions(store: Any) -> list[tuple[Any, ...]]:
    rows = store.query("SELECT task_index, state, tags, error FROM sessions ORDER BY task_index, started_at")
    return [(r["task_index"], r["state"], json.loads(r["tags"]), (r["error"] or "").split(":")[0]) for r in rows]


@pytest.fixture(scope="module")
def ray_executor(ray_cluster: Any) -> Any:
    from lllm.executors import RayExecutor

    return RayExecutor()


def test_keep_going_errors_and_tags_as_with_threads(ray_runtime: Any, ray_executor: Any) -> None:
    threads, t_store = run(ray_runtime, TASKS, None, fail_fast=False, max_workers=2, tags={"k": "v"})
    ray, r_store = run(ray_runtime, TASKS, ray_executor, fail_fast=False, max_workers=2, tags={"k": "v"})
    assert outcome(ray) == outcome(threads)
    assert sorted(ray.errors) == [1, 4]
    assert type(ray[1]).__name__ == "ProbeFailed" and type(ray[1]).__module__.startswith("_lllm_pkg.raytest_")
    assert ray.spent == pytest.approx(threads.spent) and ray.spent > 0
    assert sessions(r_store) == sessions(t_store)
    assert {s[2]["k"] for s in sessions(r_store)} == {"v"}


def test_fail_fast_starts_no_task_after_the_failure(ray_runtime: Any, ray_executor: Any) -> None:
    threads, t_store = run(ray_runtime, TASKS, None, fail_fast=True, max_workers=1)
    ray, r_store = run(ray_runtime, TASKS, ray_executor, fail_fast=True, max_workers=1)
    assert type(ray).__name__ == "ProbeFailed" and outcome(ray) == outcome(threads)
    assert "fail_fast=True: no new task was started" in "\n".join(getattr(ray, "__notes__", []))
    assert sessions(r_store) == sessions(t_store) == [(0, "ok", {}, ""), (1, "error", {}, "ProbeFailed")]


def test_resume_runs_only_what_did_not_succeed(ray_runtime: Any, ray_executor: Any) -> None:
    first, store = run(ray_runtime, TASKS, ray_executor, fail_fast=False, max_workers=2)
    again, _ = run(ray_runtime, TASKS, ray_executor, fail_fast=False, max_workers=2, resume=first.batch_id,
                   store=store)
    t_first, t_store = run(ray_runtime, TASKS, None, fail_fast=False, max_workers=2)
    t_again, _ = run(ray_runtime, TASKS, None, fail_fast=False, max_workers=2, resume=t_first.batch_id,
                     store=t_store)
    assert again.skipped == t_again.skipped == 4 and again.batch_id == first.batch_id
    assert outcome(again) == outcome(first) == outcome(t_again)
    assert again.spent == pytest.approx(t_again.spent) == pytest.approx(first.spent)  # failures cost nothing here
    rows = store.query("SELECT task_index, count(*) AS n FROM sessions GROUP BY task_index ORDER BY task_index")
    assert [(r["task_index"], r["n"]) for r in rows] == [(0, 1), (1, 2), (2, 1), (3, 1), (4, 2), (5, 1)]


def test_max_cost_stops_starting_tasks(ray_runtime: Any, ray_executor: Any) -> None:
    tasks = [t for t in TASKS if not t.startswith("fail")]
    threads, _ = run(ray_runtime, tasks, None, max_workers=1, max_cost=1.0)
    ray, r_store = run(ray_runtime, tasks, ray_executor, max_workers=1, max_cost=1.0)
    assert type(ray).__name__ == "BudgetExceeded" and outcome(ray) == outcome(threads)
    assert ray.not_started == threads.not_started == [1, 2, 3]
    assert outcome(ray.results[:1]) == ["done a"]
    assert [s[1] for s in sessions(r_store)] == ["ok"]


def test_return_sessions_gives_each_tasks_session(ray_runtime: Any, ray_executor: Any) -> None:
    ray, store = run(ray_runtime, ["a", "c"], ray_executor, return_sessions=True)
    assert [s.delivery.answer for s in ray] == ["done a", "done c"]
    assert [s.state for s in ray] == ["ok", "ok"]
    assert [s.session_id for s in ray] == [r["id"] for r in store.query("SELECT id FROM sessions ORDER BY task_index")]
    assert all(s.total_cost.cost > 0 and len(s.records) >= 2 for s in ray)
