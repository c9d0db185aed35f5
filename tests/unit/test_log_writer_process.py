"""The log's writer process (`lllm/logging/_writer_process.py`, `_commit.py`): a batch's writes are committed
in a child process, and the log is the same as the in-process group commit makes; a failed write reaches its
writer; a dead writer process ends the run with a clear error; what the child received survives its parent."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.core.trace import ModelCallRecord
from lllm.errors import InfrastructureError, LogWriterError, UsageError
from lllm.logging import sqlite_store

REPO = Path(__file__).resolve().parents[2]


def responder(messages: list[dict[str, Any]]) -> str:
    text = messages[-1]["content"]
    if "boom" in text:
        raise RuntimeError("the model fell over")
    return "<label>negative</label>" if "bad" in text else "<label>positive</label>"


class Inner(Tactic, register=False):
    name = "inner_classifier"
    agent_group = ["classifier"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["classifier"]
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


class Outer(Tactic, register=False):
    name = "outer_classifier"
    agent_group = ["classifier"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["classifier"]
        agent.open("main")
        agent.receive(task)
        first = agent.respond().content
        second = Inner(_config(), runtime=self._runtime)(task + " again")  # a sub-tactic: its costs roll up
        return f"{first} {second}"


def _config() -> dict[str, Any]:
    return {"invoker": "scripted", "invoker_config": {"responder": responder},
            "agent_configs": [{"name": "classifier", "model_name": "gpt-4o", "system_prompt": "Classify."}]}


def _batch(store: Any) -> Any:
    tactic = Outer(_config(), log_store=store, runtime=Runtime("writer-process"))
    tasks = [f"review {i}: {'bad' if i % 2 else 'good'} product{' boom' if i == 7 else ''}" for i in range(40)]
    return tactic.bcall(tasks, max_workers=8, fail_fast=False, tags={"run": "same"})


def _table(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute(sql).fetchall(), key=repr)
    finally:
        conn.close()


_SESSIONS = ("SELECT tactic, state, cost, prompt_tokens, completion_tokens, model_calls, agent_calls, tags, task, "
             "result, last_event, error IS NULL, parent_id IS NULL, task_index, ended_at >= started_at FROM sessions")


def test_a_batch_commits_in_a_writer_process_and_the_log_is_the_same(tmp_path: Path) -> None:
    thread_db, process_db = tmp_path / "thread.db", tmp_path / "process.db"
    with sqlite_store(thread_db, writer="thread") as store:
        expected = _batch(store)
        assert store.writer_stats["writer_process"] is None
    store = sqlite_store(process_db)
    assert store.writer_stats["writer_process"] is None  # "auto": in this process until a batch starts
    got = _batch(store)
    pid = store.writer_stats["writer_process"]
    assert isinstance(pid, int) and pid != os.getpid()
    os.kill(pid, 0)  # alive while the store is open (later calls use it too)
    assert got[:7] == expected[:7] and isinstance(got[7], RuntimeError)
    store.close()
    with pytest.raises(ProcessLookupError):  # close() ended it (and reaped it: no zombie)
        os.kill(pid, 0)

    assert _table(process_db, _SESSIONS) == _table(thread_db, _SESSIONS)
    assert len(_table(process_db, "SELECT * FROM sessions")) == 40 + 39  # one failed before its sub-tactic
    for table in ("model_calls", "agent_calls"):
        query = f"SELECT agent, dialog, status FROM {table}"
        assert _table(process_db, query) == _table(thread_db, query)
    dialogs = "SELECT agent, alias, messages FROM dialogs"
    assert _table(process_db, dialogs) == _table(thread_db, dialogs)
    # the outer sessions hold their sub-tactic's model calls too: totals rolled up through the chain
    rolled = _table(process_db, "SELECT model_calls FROM sessions WHERE parent_id IS NULL AND state = 'ok'")
    assert {row[0] for row in rolled} == {2}


def test_a_failed_write_reaches_its_writer_and_spares_the_others(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "fail.db", writer="process")
    store.start_session("s", tactic="t")
    with pytest.raises(sqlite3.OperationalError, match="malformed JSON"):
        store._write(("meta", "s", "{not json"))  # a waited write that SQLite refuses: its caller gets the error
    store.record(ModelCallRecord(session_id="s", agent="a", model="m", cost=0.25))
    store._write(("meta", "s", "{still not json"), wait=False)  # nobody waits: the next flush reports it
    store.note_metadata("s", {"fine": True})
    with pytest.raises(sqlite3.OperationalError, match="malformed JSON"):
        store.flush()
    store.flush()  # reported once
    store.end_session("s", state="ok")
    row = store.get_session("s")
    assert row.model_calls == 1 and row.cost == 0.25 and row.metadata == {"fine": True}
    assert store.writer_stats["failed"] == 2
    store.close()


def test_a_dead_writer_process_ends_the_run_with_a_clear_error(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "dead.db", writer="process")
    store.start_session("s", tactic="t")
    pid = store.writer_stats["writer_process"]
    os.kill(pid, signal.SIGSTOP)
    waiter_error: list[BaseException] = []

    def wait_for_commit() -> None:
        try:
            store.end_session("s", state="ok")
        except BaseException as exc:  # noqa: BLE001 - what the waiting caller gets
            waiter_error.append(exc)

    waiter = threading.Thread(target=wait_for_commit)
    waiter.start()
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)  # dies with a write in flight: its waiter must not hang
    waiter.join(10)
    assert not waiter.is_alive() and len(waiter_error) == 1
    error = waiter_error[0]
    assert isinstance(error, LogWriterError) and isinstance(error, InfrastructureError)
    assert "exited" in str(error) and "Exit status: -9" in str(error) and str(tmp_path / "dead.db") in str(error)
    with pytest.raises(LogWriterError):  # and so does every later write
        store.record(ModelCallRecord(session_id="s", agent="a", model="m"))
    store.close()  # no second error, no hang


def test_a_batch_whose_writer_process_dies_fails_instead_of_losing_its_log(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "batch.db", writer="process")
    os.kill(store.writer_stats["writer_process"], signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(LogWriterError, match="exited"):
        _batch(store)
    store.close()


def test_what_the_writer_process_received_survives_its_parent_being_killed(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    script = textwrap.dedent(f"""
        import os, signal, time
        from lllm.core.trace import ModelCallRecord
        from lllm.logging import sqlite_store

        store = sqlite_store({str(db)!r}, writer="process")
        for i in range(200):
            sid = f"s{{i}}"
            store.start_session(sid, tactic="t", wait=False)
            store.record(ModelCallRecord(session_id=sid, agent="a", model="m", cost=0.5))
            store.end_session(sid, state="ok", wait=False)
        time.sleep(0.3)  # shipped (every 10 ms), not acknowledged by anybody
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _table(db, "SELECT COUNT(*) FROM sessions")[0][0] < 200:
        time.sleep(0.05)  # the orphaned writer commits after its stdin closes
    assert _table(db, "SELECT state, model_calls, COUNT(*) FROM sessions GROUP BY 1, 2") == [("ok", 1, 200)]


def test_an_unclosed_store_commits_its_queue_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        from lllm.core.trace import ModelCallRecord
        from lllm.logging import sqlite_store

        store = sqlite_store({str(db)!r}, writer="process")
        store.start_session("s", tactic="t")
        for _ in range(50):
            store.record(ModelCallRecord(session_id="s", agent="a", model="m"))
        print(store.writer_stats["writer_process"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _table(db, "SELECT COUNT(*) FROM model_calls") == [(50,)]
    with pytest.raises(ProcessLookupError):
        os.kill(int(result.stdout.strip()), 0)


def test_ctrl_c_leaves_the_writer_process_to_its_parent(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "sigint.db", writer="process")
    pid = store.writer_stats["writer_process"]
    assert os.getpgid(pid) != os.getpgrp()  # a terminal's Ctrl-C goes to our process group, not to it
    store.start_session("before", tactic="t")  # waited: the writer has started
    os.kill(pid, signal.SIGINT)  # and one sent to it anyway is ignored
    time.sleep(0.2)
    store.start_session("after", tactic="t")  # waited: the writer is still there
    assert store.get_session("after").state == "running"
    store.close()


class Label(str, Enum):
    GOOD = "good"


class Name(str):
    """A str subclass the writer process cannot import (it loads the standard library only)."""


def test_values_of_the_users_own_str_classes_are_written_as_their_text(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "str.db", writer="process")
    store.start_session(Name("s"), tactic=Name("my tactic"), task_hash=Label.GOOD)  # type: ignore[arg-type]
    store.record(ModelCallRecord(session_id="s", agent=Name("agent"), model=Label.GOOD))
    store.end_session("s", state="ok", error=Name("none"))
    assert _table(tmp_path / "str.db", "SELECT tactic, task_hash, error FROM sessions") == [
        ("my tactic", "good", "none")]
    assert _table(tmp_path / "str.db", "SELECT agent, model FROM model_calls") == [("agent", "good")]
    store.close()


def test_a_full_queue_drops_records_and_counts_them_into_the_session(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "flood.db", writer="process")
    store.start_session("flood", tactic="t")
    writer = store._writer
    writer.max_pending = 10  # type: ignore[union-attr]
    release = threading.Event()
    real_ship = writer._ship  # type: ignore[union-attr]

    def held_ship(queue: Any) -> None:  # the sender is held while records pile up
        release.wait(30)
        real_ship(queue)

    writer._ship = held_ship  # type: ignore[union-attr]
    for _ in range(25):  # 10 fit in the queue, 15 are dropped
        store.record(ModelCallRecord(session_id="flood", agent="a", model="m"))
    assert writer.dropped == 15 and writer.dropped_by["flood"] == 15  # type: ignore[union-attr]
    release.set()
    store.end_session("flood", state="ok", metadata={"mine": 1})
    detail = store.load_session("flood")
    assert detail.session.metadata == {"mine": 1, "dropped_records": 15}
    assert len(detail.model_calls) == 10
    store.close()


def test_where_a_writer_process_is_used(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="writer='threads'"):
        sqlite_store(tmp_path / "bad.db", writer="threads")  # type: ignore[arg-type]
    with sqlite_store(":memory:") as memory:
        assert memory.use_writer_process() is False  # another process cannot see this one's memory
        Outer(_config(), log_store=memory, runtime=Runtime("mem")).bcall(["a good one", "a bad one"], max_workers=2)
        assert memory.writer_stats["writer_process"] is None and memory.count() == 4
    with sqlite_store(tmp_path / "thread.db", writer="thread") as threads:
        assert threads.use_writer_process() is False
    with sqlite_store(tmp_path / "one.db") as one_worker:
        Outer(_config(), log_store=one_worker, runtime=Runtime("one")).bcall(["good", "bad"], max_workers=1)
        assert one_worker.writer_stats["writer_process"] is None  # nothing to take off the worker's core


def test_a_store_dropped_without_close_ends_its_writer_process(tmp_path: Path) -> None:
    import gc

    db = tmp_path / "dropped.db"
    store = sqlite_store(db)
    _batch(store)
    pid = store.writer_stats["writer_process"]
    os.kill(pid, 0)
    del store
    gc.collect()
    with pytest.raises(ProcessLookupError):  # ended (after committing) and reaped, not left for the process's life
        os.kill(pid, 0)
    assert _table(db, "SELECT COUNT(*) FROM sessions") == [(79,)]
