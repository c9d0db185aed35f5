"""Batches: input order, fail-fast that starts no new task, exceptions inline, resume that skips what
succeeded, the cost cap, ccall as tasks finish (sync and async), and the progress bar."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lllm import Tactic
from lllm.errors import BudgetExceeded, UsageError
from lllm.logging import sqlite_store

STEP_COST = 0.01


def responder(messages: list[dict]) -> dict:
    text = messages[-1]["content"]
    return {"content": f"done {text}", "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": STEP_COST}}


CONFIG = {
    "invoker": "scripted",
    "invoker_config": {"responder": responder},
    "agent_configs": [{"name": "w", "model_name": "gpt-4o", "system_prompt": "Work."}],
}


class Worker(Tactic, register=False):
    """Task "sleep:<s>:<text>" sleeps first; "fail:<text>" raises; the rest ask the model."""

    name = "unit_worker"
    agent_group = ["w"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []
        self.lock = threading.Lock()
        self.fail = True

    def call(self, task: str, **kwargs) -> str:
        with self.lock:
            self.started.append(task)
        if task.startswith("sleep:"):
            _, seconds, task = task.split(":", 2)
            time.sleep(float(seconds))
        if task.startswith("fail:") and self.fail:
            raise RuntimeError(f"task {task!r} failed")
        w = self.agents["w"]
        w.open("main")
        w.receive(task)
        return w.respond().content


def test_results_come_back_in_input_order() -> None:
    tactic = Worker(CONFIG)
    tasks = [f"sleep:{0.02 * (5 - i)}:t{i}" for i in range(6)]  # the first task finishes last
    results = tactic.bcall(tasks, max_workers=6)
    assert results == [f"done t{i}" for i in range(6)]
    assert results.errors == {} and len(results.batch_id) == 16
    assert results.spent == pytest.approx(6 * STEP_COST)


def test_fail_fast_raises_the_first_error_and_starts_no_new_task() -> None:
    tactic = Worker(CONFIG)
    tasks = ["a", "b", "fail:c", *[f"later{i}" for i in range(20)]]
    with pytest.raises(RuntimeError, match="task 'fail:c' failed") as info:
        tactic.bcall(tasks, max_workers=1)
    assert tactic.started == ["a", "b", "fail:c"]  # one worker: exactly nothing after the failure
    assert any("fail_fast=True" in note for note in info.value.__notes__)


def test_fail_fast_with_many_workers_stops_soon() -> None:
    tactic = Worker(CONFIG)
    tasks = ["fail:first", *[f"sleep:0.05:t{i}" for i in range(40)]]
    with pytest.raises(RuntimeError):
        tactic.bcall(tasks, max_workers=4)
    assert len(tactic.started) <= 4  # the three tasks already running at most; none started afterwards


def test_exceptions_stand_inline_and_the_others_go_on() -> None:
    store = sqlite_store(":memory:")
    tactic = Worker(CONFIG, log_store=store)
    tasks = ["a", "fail:b", "c", "fail:d", "e"]
    results = tactic.bcall(tasks, max_workers=3, fail_fast=False, tags={"run": "inline"})
    assert results[0] == "done a" and results[2] == "done c" and results[4] == "done e"
    assert isinstance(results[1], RuntimeError) and isinstance(results[3], RuntimeError)
    assert sorted(results.errors) == [1, 3]
    rows = {s.task_index: s for s in store.list_sessions(batch_id=results.batch_id)}
    assert len(rows) == 5 and rows[1].state == "error" and "RuntimeError" in rows[1].traceback
    assert rows[0].state == "ok" and rows[0].tags == {"run": "inline"}


def test_resume_skips_the_tasks_that_already_succeeded() -> None:
    store = sqlite_store(":memory:")
    tactic = Worker(CONFIG, log_store=store)
    tasks = ["a", "fail:b", "c", "fail:d"]
    first = tactic.bcall(tasks, max_workers=2, fail_fast=False)
    assert sorted(first.errors) == [1, 3]
    tactic.fail = False  # the cause of the failures is fixed
    tactic.started.clear()
    second = tactic.bcall(tasks, max_workers=2, resume=first.batch_id)
    assert second == ["done a", "done fail:b", "done c", "done fail:d"]
    assert sorted(tactic.started) == ["fail:b", "fail:d"]  # only what had not succeeded ran again
    assert second.batch_id == first.batch_id and second.skipped == 2
    assert second.spent == pytest.approx(4 * STEP_COST)  # the batch's whole spend, both runs
    tactic.started.clear()
    third = tactic.bcall(tasks, resume=first.batch_id)
    assert third == second and tactic.started == []


def test_resume_refuses_a_different_task_list_and_unknown_batches() -> None:
    store = sqlite_store(":memory:")
    tactic = Worker(CONFIG, log_store=store)
    batch = tactic.bcall(["a", "b"]).batch_id
    with pytest.raises(UsageError, match=r"task 0 recorded under that batch differs"):
        tactic.bcall(["x", "b"], resume=batch)
    with pytest.raises(UsageError, match=r"has no batch with that id"):
        tactic.bcall(["a"], resume="nope")
    with pytest.raises(UsageError, match=r"needs a log store"):
        Worker(CONFIG).bcall(["a"], resume=batch)


def test_max_cost_stops_starting_tasks() -> None:
    store = sqlite_store(":memory:")
    tactic = Worker(CONFIG, log_store=store)
    tasks = [f"t{i}" for i in range(10)]
    results = tactic.bcall(tasks, max_workers=1, fail_fast=False, max_cost=2.5 * STEP_COST)
    assert results[:3] == ["done t0", "done t1", "done t2"]
    assert all(isinstance(r, BudgetExceeded) for r in results[3:])
    err = results[3]
    assert err.not_started == list(range(3, 10)) and err.spent == pytest.approx(3 * STEP_COST)
    assert tactic.started == ["t0", "t1", "t2"]
    # fail_fast raises it instead; resume with a higher cap goes on where it stopped
    with pytest.raises(BudgetExceeded, match=r"resume=") as info:
        tactic.bcall(tasks, max_workers=1, resume=results.batch_id, max_cost=4.5 * STEP_COST)
    assert info.value.results[:5] == [f"done t{i}" for i in range(5)] and info.value.results[5:] == [None] * 5
    assert tactic.started == ["t0", "t1", "t2", "t3", "t4"]
    final = tactic.bcall(tasks, max_workers=3, resume=results.batch_id, max_cost=1.0)
    assert final == [f"done t{i}" for i in range(10)]


def test_ccall_yields_as_tasks_finish() -> None:
    tactic = Worker(CONFIG)
    tasks = ["sleep:0.3:slow", "sleep:0.0:fast", "sleep:0.1:mid"]
    got = list(tactic.ccall(tasks, max_workers=3))
    assert [i for i, _ in got] == [1, 2, 0]
    assert dict(got) == {0: "done slow", 1: "done fast", 2: "done mid"}


def test_ccall_async_and_errors_inline() -> None:
    tactic = Worker(CONFIG)

    async def main() -> dict:
        out = {}
        async for index, result in tactic.ccall(["a", "fail:b", "c"], max_workers=2, fail_fast=False):
            out[index] = result
        return out

    out = asyncio.run(main())
    assert out[0] == "done a" and out[2] == "done c" and isinstance(out[1], RuntimeError)


def test_leaving_a_ccall_early_starts_no_more_tasks() -> None:
    tactic = Worker(CONFIG)
    stream = tactic.ccall([f"sleep:0.02:t{i}" for i in range(50)], max_workers=2)
    for index, _ in stream:
        break
    time.sleep(0.1)
    assert len(tactic.started) <= 4


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    tactic = Worker(CONFIG)
    tactic.bcall(["a", "b"], max_workers=2)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    tactic.bcall(["a", "fail:b", "c"], max_workers=2, fail_fast=False, progress=True)
    err = capsys.readouterr().err
    assert "3/3 done, 1 failed, $0.0200" in err and "tasks/s" in err and err.endswith("\n")


def test_bad_batch_arguments() -> None:
    tactic = Worker(CONFIG)
    with pytest.raises(UsageError, match="max_workers"):
        tactic.bcall(["a"], max_workers=0)
    with pytest.raises(UsageError, match="max_cost"):
        tactic.bcall(["a"], max_cost=-1)
    assert tactic.bcall([]) == []
    with pytest.raises(UsageError, match="`tags` must be a dict"):
        tactic.bcall(["a"], tags=["env", "prod"])


def test_return_sessions_gives_each_task_its_session() -> None:
    tactic = Worker(CONFIG)
    sessions = tactic.bcall(["a", "fail:b"], max_workers=2, fail_fast=False, return_sessions=True)
    assert [s.state for s in sessions] == ["ok", "error"]
    assert sessions[0].delivery == "done a" and "RuntimeError" in sessions[1].error
    assert sessions[0].task_index == 0 and sessions[0].batch_id == sessions.batch_id
    with pytest.raises(UsageError, match="cannot resume"):
        Worker(CONFIG, log_store=sqlite_store(":memory:")).bcall(["a"], resume="x", return_sessions=True)
