"""The LogStore's group commit (`lllm/logging/_writer.py`): a lone writer's record is on disk when `record`
returns; under contention every write lands, a session's records before its end; the record queue is bounded
and what it drops is counted in the session's metadata."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from lllm import Tactic
from lllm.core.trace import ModelCallRecord
from lllm.logging import sqlite_store


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_a_lone_writers_record_is_committed_when_record_returns(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    with sqlite_store(db) as store:
        store.start_session("s", tactic="t")
        store.record(ModelCallRecord(session_id="s", agent="a", model="m", cost=0.5))
        # another connection (another process would see the same) finds it at once
        assert _count(db, "SELECT COUNT(*) FROM model_calls") == 1
        assert _count(db, "SELECT model_calls FROM sessions WHERE id = 's'") == 1


def test_under_contention_every_write_lands_and_records_precede_their_end(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    store = sqlite_store(db)
    ended: list[int] = []
    seen_at_end: dict[str, int] = {}

    def one(i: int) -> None:
        sid = f"s{i}"
        store.start_session(sid, tactic="t")
        for _ in range(5):
            store.record(ModelCallRecord(session_id=sid, agent="a", model="m", cost=0.01, prompt_tokens=1))
        store.end_session(sid, state="ok")
        # end_session returned: its records are committed (they were queued before it)
        seen_at_end[sid] = _count(db, f"SELECT COUNT(*) FROM model_calls WHERE session_id = '{sid}'")
        ended.append(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stats = store.writer_stats
    store.close()
    assert stats["dropped"] == stats["failed"] == 0 and 0 < stats["max_wait_s"] < 60  # the worst wait is measured
    assert len(ended) == 40 and set(seen_at_end.values()) == {5}
    assert _count(db, "SELECT COUNT(*) FROM model_calls") == 200
    assert _count(db, "SELECT SUM(model_calls) FROM sessions") == 200
    assert _count(db, "SELECT COUNT(*) FROM sessions WHERE state = 'ok'") == 40


def test_a_full_record_queue_drops_and_counts_into_the_session(tmp_path: Path) -> None:
    db = tmp_path / "flood.db"
    store = sqlite_store(db)
    store.start_session("flood", tactic="t")
    writer = store._writer
    assert writer is not None
    writer.max_pending = 10
    release = threading.Event()
    leading = threading.Event()
    real_apply = writer._apply_ops

    def slow_apply(conn: sqlite3.Connection, ops: list[object]) -> None:  # hold the commit while records pile up
        leading.set()
        release.wait(30)
        real_apply(conn, ops)

    writer._apply_ops = slow_apply
    blocker = threading.Thread(target=store.record,
                               args=(ModelCallRecord(session_id="flood", agent="a", model="m"),))
    blocker.start()
    assert leading.wait(10)
    for _ in range(25):  # 10 fit in the queue, 15 are dropped
        store.record(ModelCallRecord(session_id="flood", agent="a", model="m"))
    assert writer.dropped == 15 and writer.dropped_by["flood"] == 15
    writer._apply_ops = real_apply
    release.set()
    blocker.join(10)
    store.end_session("flood", state="ok", metadata={"mine": 1})
    detail = store.load_session("flood")
    assert detail.session.metadata == {"mine": 1, "dropped_records": 15}
    assert len(detail.model_calls) == 11
    store.close()


def test_a_write_nobody_waited_for_fails_at_the_next_flush(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "fail.db")
    writer = store._writer
    assert writer is not None
    real_apply = writer._apply_ops

    def apply(conn: sqlite3.Connection, ops: list[tuple[object, ...]]) -> None:
        if any(op[0] == "end" and op[1] == "doomed" for op in ops):
            raise sqlite3.OperationalError("disk I/O error")
        real_apply(conn, ops)

    writer._apply_ops = apply
    store.start_session("doomed", tactic="t")
    store.end_session("doomed", state="ok", wait=False)  # queued: its error has nobody to go to yet
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        store.flush()
    store.flush()  # raised once
    assert store.get_session("doomed").state == "running"
    store.close()


def test_ccall_hands_out_a_result_only_once_its_session_is_committed(tmp_path: Path) -> None:
    from lllm import Tactic
    from lllm.core.runtime import Runtime

    class Echo(Tactic, register=False):
        name = "echo_commit"
        agent_group = ["a"]

        def call(self, task: str, **kwargs: object) -> str:
            a = self.agents["a"]
            a.open("main")
            a.receive(task)
            return a.respond().content

    db = tmp_path / "ccall.db"
    store = sqlite_store(db)
    config = {"invoker": "scripted", "invoker_config": {"responder": lambda m: m[-1]["content"].upper()},
              "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": "echo"}]}
    stream = Echo(config, log_store=store, runtime=Runtime("ccall"))
    seen = 0
    for index, result in stream.ccall([f"t{i}" for i in range(60)], max_workers=12):
        # another connection (another process) already finds the finished session, with its model call
        assert _count(db, f"SELECT COUNT(*) FROM sessions WHERE task = 't{index}' AND state = 'ok' "
                          f"AND model_calls = 1") == 1, index
        assert result == f"T{index}"
        seen += 1
    assert seen == 60
    store.close()


TASKS = 2000  # enough that the batch is still running when its first 30 sessions are committed


def _wait_for_orphaned_writers(db: Path, timeout: float = 30.0) -> None:
    """Until no log writer process (`_commit.py`) of `db` is left."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"_commit.py") for arg in cmdline) and str(db).encode() in cmdline:
                alive.append(proc.name)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"log writer processes of {db} still running after {timeout} s: {alive}")


def test_a_batch_killed_mid_run_loses_only_uncommitted_tasks_and_resume_runs_exactly_those(tmp_path: Path) -> None:
    """What a crash can lose: the writes the batch's writer process had not received. A session is committed
    with its records before (or together with) its end, so every session the log calls `ok` is whole, and
    `bcall(resume=...)` re-runs exactly the tasks the log does not hold as succeeded."""
    import subprocess
    import sys
    import textwrap

    db = tmp_path / "batch.db"
    code = textwrap.dedent(f"""
        import os, sqlite3, threading
        from lllm import Tactic
        from lllm.logging import sqlite_store

        lock = threading.Lock()
        reader = sqlite3.connect({str(db)!r}, check_same_thread=False)

        def responder(messages):
            with lock:  # dies mid-batch (no flush, no atexit) once the log holds some finished tasks
                if reader.execute("SELECT COUNT(*) FROM sessions WHERE state = 'ok'").fetchone()[0] >= 30:
                    os._exit(9)
            return "done " + messages[-1]["content"]

        class Work(Tactic, register=False):
            name = "work"
            agent_group = ["w"]
            def call(self, task):
                w = self.agents["w"]
                w.open("main")
                w.receive(task)
                return w.respond().content

        config = {{"invoker": "scripted", "invoker_config": {{"responder": responder}},
                   "agent_configs": [{{"name": "w", "model_name": "gpt-4o", "system_prompt": "Work."}}]}}
        Work(config, log_store=sqlite_store({str(db)!r})).bcall([f"t{{i}}" for i in range({TASKS})], max_workers=20)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    _wait_for_orphaned_writers(db)  # it commits what it had received, then exits: the log is final after that
    store = sqlite_store(db)
    batch_id = store.query("SELECT DISTINCT batch_id FROM sessions")[0]["batch_id"]
    ok = store.query("SELECT s.id, s.model_calls, (SELECT COUNT(*) FROM model_calls m WHERE m.session_id = s.id) AS m, "
                     "(SELECT COUNT(*) FROM dialogs d WHERE d.session_id = s.id) AS d FROM sessions s "
                     "WHERE s.state = 'ok'")
    assert 30 <= len(ok) < TASKS
    assert all(r["model_calls"] == 1 and r["m"] == 1 and r["d"] == 1 for r in ok)  # an ok session is whole
    ran: list[str] = []

    class Work(Tactic, register=False):
        name = "work"
        agent_group = ["w"]

        def call(self, task: str) -> str:
            ran.append(task)
            w = self.agents["w"]
            w.open("main")
            w.receive(task)
            return w.respond().content

    config = {"invoker": "scripted", "invoker_config": {"responder": lambda m: "done " + m[-1]["content"]},
              "agent_configs": [{"name": "w", "model_name": "gpt-4o", "system_prompt": "Work."}]}
    tasks = [f"t{i}" for i in range(TASKS)]
    results = Work(config, log_store=store).bcall(tasks, max_workers=20, resume=batch_id)
    assert list(results) == [f"done t{i}" for i in range(TASKS)]
    assert results.skipped == len(ok) and len(ran) == TASKS - len(ok)
    assert store.query("SELECT COUNT(*) AS n FROM sessions WHERE batch_id = ? AND state = 'ok'",
                       [batch_id])[0]["n"] == TASKS
    store.close()
