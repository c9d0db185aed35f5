"""The SQLite log store: sessions written at start and updated as they go, trace tables, read-back, costs,
50 concurrent writers without a lost row, and a crashed process leaving a `running` record."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lllm.core.trace import AgentCallRecord, ApiCallRecord, CellRecord, ModelCallRecord
from lllm.errors import UsageError
from lllm.logging import LogStore, sqlite_store


@pytest.fixture
def store() -> LogStore:
    s = sqlite_store(":memory:")
    yield s
    s.close()


def test_memory_store_round_trip(store: LogStore) -> None:
    store.start_session("s1", tactic="t", tags={"env": "prod", "batch": "b1"}, task="hello", metadata={"k": 1})
    row = store.get_session("s1")
    assert row.state == "running" and row.task == "hello" and row.tags == {"env": "prod", "batch": "b1"}
    store.record(ModelCallRecord(session_id="s1", agent="a", dialog="d", model="gpt-4o", prompt_tokens=10,
                                 completion_tokens=5, cost=0.25, latency_s=0.1))
    store.record(AgentCallRecord(session_id="s1", agent="a", dialog="d", detail={"retries": [{"error": "x"}]}))
    row = store.get_session("s1")
    assert (row.cost, row.prompt_tokens, row.completion_tokens, row.model_calls, row.agent_calls) == (0.25, 10, 5, 1, 1)
    assert row.last_event == "agent_call a/d ok"
    store.end_session("s1", state="ok", result={"label": "x"}, cost=0.25, prompt_tokens=10, completion_tokens=5,
                      dialogs=[("a", "d", {"name": "d", "messages": [{"role": "user"}]})])
    detail = store.load_session("s1")
    assert detail.session.state == "ok" and detail.session.result == {"label": "x"}
    assert [r.kind for r in detail.records] == ["model_call", "agent_call"]
    assert detail.agent_calls[0].detail == {"retries": [{"error": "x"}]}
    assert detail.dialogs[0].agent == "a" and detail.dialogs[0].messages == 1
    assert detail.session.ended_at is not None and detail.session.duration_s >= 0


def test_every_trace_kind_has_its_table_with_the_record_fields(store: LogStore) -> None:
    store.start_session("s", tactic="t")
    store.record(CellRecord(session_id="s", sandbox_id="sb", code="print(1)", status="ok", duration_s=0.01))
    store.record(ApiCallRecord(session_id="s", proxy="fmp", endpoint="price", status="ok", latency_s=0.2))
    store.record({"kind": "browser_action", "session_id": "s", "action": "click", "target": "#go"})
    cols = {r["name"] for r in store.query("PRAGMA table_info(cells)")}
    assert set(CellRecord.model_fields) <= cols
    assert store.query("SELECT proxy, endpoint FROM api_calls") == [{"proxy": "fmp", "endpoint": "price"}]
    kinds = [r.kind for r in store.load_session("s").records]
    assert sorted(kinds) == ["api_call", "browser_action", "cell"]


def test_list_sessions_filters(store: LogStore) -> None:
    store.start_session("a", tactic="t1", tags={"env": "prod"}, started_at=time.time() - 7200)
    store.start_session("b", tactic="t2", tags={"env": "dev"})
    store.start_session("c", tactic="t1", tags={"env": "prod"}, parent_id="b")
    store.end_session("b", state="error", error="ValueError: x", traceback="Traceback ...")
    assert [s.id for s in store.list_sessions()] == ["b", "a"]
    assert [s.id for s in store.list_sessions(tags={"env": "prod"})] == ["a"]
    assert [s.id for s in store.list_sessions(state="error")] == ["b"]
    assert [s.id for s in store.list_sessions(since="1h")] == ["b"]
    assert [s.id for s in store.list_sessions(tactic="t1", include_children=True)] == ["c", "a"]
    assert [s.id for s in store.list_sessions(limit=1)] == ["b"]
    with pytest.raises(UsageError, match="state"):
        store.list_sessions(state="done")
    with pytest.raises(UsageError, match="since"):
        store.list_sessions(since="yesterday-ish")


def test_child_model_calls_fold_into_the_parent(store: LogStore) -> None:
    store.start_session("p", tactic="outer")
    store.start_session("c", tactic="inner", parent_id="p")
    store.record(ModelCallRecord(session_id="c", agent="a", model="m", cost=1.5, prompt_tokens=3))
    assert store.get_session("p").cost == 1.5 and store.get_session("c").cost == 1.5
    assert [c.id for c in store.load_session("p").children] == ["c"]


def test_cost_summary(store: LogStore) -> None:
    for i, (env, tactic, cost) in enumerate([("prod", "a", 1.0), ("prod", "b", 2.0), ("dev", "a", 0.5)]):
        store.start_session(f"s{i}", tactic=tactic, tags={"env": env})
        store.record(ModelCallRecord(session_id=f"s{i}", agent="x", model=f"m{i % 2}", cost=cost))
        store.end_session(f"s{i}", state="ok")
    by_env = {r.group: r.cost for r in store.cost_summary(group_by="tag:env")}
    assert by_env == {"prod": 3.0, "dev": 0.5}
    by_tactic = {r.group: (r.sessions, r.cost) for r in store.cost_summary(group_by="tactic")}
    assert by_tactic == {"a": (2, 1.5), "b": (1, 2.0)}
    assert {r.group: r.cost for r in store.cost_summary(group_by="model")} == {"m0": 1.5, "m1": 2.0}
    with pytest.raises(UsageError, match="group_by"):
        store.cost_summary(group_by="colour")


def test_session_id_prefix_and_unknown_id(store: LogStore) -> None:
    store.start_session("abc123", tactic="t")
    store.start_session("abd456", tactic="t")
    assert store.get_session("abc").id == "abc123"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_session("ab")
    with pytest.raises(UsageError, match="no session 'zzz'"):
        store.load_session("zzz")


def test_closed_store_refuses_use() -> None:
    s = sqlite_store(":memory:")
    s.close()
    s.close()
    with pytest.raises(UsageError, match="closed"):
        s.list_sessions()


def test_fifty_workers_two_hundred_sessions_each_lose_nothing(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(200):
                sid = f"w{w}-{i}"
                store.start_session(sid, tactic="t", tags={"worker": w})
                store.record(ModelCallRecord(session_id=sid, agent="a", model="m", cost=0.001, prompt_tokens=2))
                dialog = {"name": "main", "messages": [{"role": "user"}] * (i % 4)}
                store.end_session(sid, state="ok", result=i, dialogs=[("a", "main", dialog)])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("sessions") == 10_000
    assert store.count("model_calls") == 10_000
    assert store.query("SELECT COUNT(*) AS n FROM sessions WHERE state = 'ok' AND model_calls = 1")[0]["n"] == 10_000
    # dialogs go in as multi-row INSERTs with numbered parameters: each row got its own session's dialog
    assert store.query("SELECT COUNT(*) AS n FROM dialogs d JOIN sessions s ON s.id = d.session_id "
                       "WHERE d.messages = CAST(substr(s.id, instr(s.id, '-') + 1) AS INTEGER) % 4")[0]["n"] == 10_000
    store.close()
    # another connection (another process would see the same) reads every committed row
    conn = sqlite3.connect(tmp_path / "runs.db")
    assert conn.execute("SELECT COUNT(DISTINCT id) FROM sessions").fetchone()[0] == 10_000
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_two_processes_write_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    code = textwrap.dedent(f"""
        import sys
        from lllm.logging import sqlite_store
        from lllm.core.trace import ModelCallRecord
        s = sqlite_store({str(db)!r})
        tag = sys.argv[1]
        for i in range(300):
            s.start_session(f"{{tag}}-{{i}}", tactic="t")
            s.record(ModelCallRecord(session_id=f"{{tag}}-{{i}}", agent="a", model="m"))
            s.end_session(f"{{tag}}-{{i}}", state="ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, tag], stderr=subprocess.PIPE, text=True) for tag in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = sqlite_store(db)
    assert store.count("sessions") == 600 and store.count("model_calls") == 600


def test_a_crash_mid_session_leaves_a_running_record_that_says_where(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    code = textwrap.dedent(f"""
        import os
        from lllm import Tactic
        from lllm.logging import sqlite_store

        def responder(messages):
            if "second" in messages[-1]["content"]:
                os._exit(3)          # the process dies while the model is answering
            return "fine"

        class Crashy(Tactic, register=False):
            name = "crashy"
            agent_group = ["a"]
            def call(self, task):
                a = self.agents["a"]
                a.open("main")
                a.receive("first")
                a.respond()
                a.receive("second")
                return a.respond().content

        config = {{"invoker": "scripted", "invoker_config": {{"responder": responder}},
                   "agent_configs": [{{"name": "a", "model_name": "gpt-4o", "system_prompt": "hi"}}]}}
        Crashy(config, log_store=sqlite_store({str(db)!r}))("go", tags={{"run": "crash"}})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    store = sqlite_store(db)
    (session,) = store.list_sessions(tags={"run": "crash"})
    assert session.state == "running" and session.ended_at is None
    assert session.model_calls == 1 and session.agent_calls == 1
    assert session.last_event == "agent_call a/main ok"
    assert session.pid is not None and session.pid != 0
    assert [r.kind for r in store.load_session(session.id).records] == ["agent_call", "model_call"]


def test_a_forked_child_gets_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    import os

    store = sqlite_store(tmp_path / "fork.db")
    pid = os.fork()
    if pid == 0:  # the child: the writer thread did not survive the fork
        try:
            store.start_session("child", tactic="t")
        except UsageError as exc:
            os._exit(7 if "forked child" in str(exc) else 1)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    store.start_session("parent", tactic="t")  # the parent's store still works
    assert store.count() == 1


def test_text_no_column_takes_is_escaped_not_lost(store: LogStore) -> None:
    """Lone surrogates (a tool or a cell can produce them) cannot be written as UTF-8: JSON columns and results
    keep them as \\uXXXX escapes, and the rest of the record is kept."""
    bad = "half a pair: \ud83d end"
    store.start_session("s", tactic="t", tags={"note": bad})
    store.record(AgentCallRecord(session_id="s", agent="a", detail={"error": bad, "ok": "é"}))
    store.end_session("s", state="ok", result=bad, metadata={"why": bad})
    row = store.get_session("s")
    assert row.result == bad and row.tags == {"note": bad} and row.metadata == {"why": bad}
    assert store.load_session("s").agent_calls[0].detail == {"error": bad, "ok": "é"}


def test_results_come_back_as_they_were_or_not_at_all(store: LogStore) -> None:
    """`bcall(resume=...)` hands back stored results: a value that JSON cannot give back exactly (a set) is
    not restorable, so the task runs again rather than return something else."""
    for i, value in enumerate(["text", {"a": [1, 2.5, None]}, [1, "x"], {1, 2}, None]):
        store.start_session(f"s{i}", tactic="t", batch_id="b", task_index=i)
        store.end_session(f"s{i}", state="ok", result=value)
    done = store.completed_tasks("b")
    assert {i: v for i, (_, v) in done.items()} == {0: "text", 1: {"a": [1, 2.5, None]}, 2: [1, "x"], 4: None}


def test_a_session_that_starts_and_ends_in_one_commit_round_is_the_same_row(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's short sessions are written as one finished row when their start and end share a commit round;
    the row must be what a start, its records and an end committed one by one make."""
    import lllm.logging._commit as commit_module

    whole_rows: list[str] = []
    real = commit_module._whole_row
    monkeypatch.setattr(commit_module, "_whole_row", lambda *a: whole_rows.append(a[0][0]) or real(*a))
    store = sqlite_store(tmp_path / "runs.db")
    dialog = {"name": "main", "messages": [{"role": "user"}, {"role": "assistant"}]}

    def write(sid: str, wait: bool) -> None:
        store.start_session(sid, tactic="t", tags={"k": 1}, metadata={"m": 1}, task="the task", batch_id="b",
                            task_index=0, started_at=100.0, wait=wait)
        store.record(ModelCallRecord(session_id=sid, agent="a", model="m", cost=0.5, prompt_tokens=3,
                                     completion_tokens=2))
        store.record(AgentCallRecord(session_id=sid, agent="a"))
        store.end_session(sid, state="ok", ended_at=102.5, result={"x": 1}, cost=0.5, prompt_tokens=3,
                          completion_tokens=2, dialogs=[("a", "main", dialog)], metadata={"m": 2}, wait=wait)

    write("apart", wait=True)
    assert whole_rows == []
    with store._lock:  # the next write's leader waits here, so everything after it queues for one round
        blocker = threading.Thread(target=store.start_session, args=("blocker",), kwargs={"tactic": "t"})
        blocker.start()
        while not store._writer._busy:
            time.sleep(0.001)
        write("together", wait=False)
    blocker.join()
    store.flush()
    assert whole_rows == ["together"]
    apart, together = (store.query("SELECT * FROM sessions WHERE id = ?", [sid])[0] for sid in ("apart", "together"))
    assert {**apart, "id": None} == {**together, "id": None}
    assert together["state"] == "ok" and together["model_calls"] == 1 and together["duration_s"] == 2.5
    dialogs = store.query("SELECT session_id, messages FROM dialogs ORDER BY session_id")
    assert dialogs == [{"session_id": "apart", "messages": 2}, {"session_id": "together", "messages": 2}]
    store.close()


def test_a_run_that_dies_mid_call_still_says_where_its_notebook_is(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    code = textwrap.dedent(f"""
        import os
        from lllm import Tactic
        from lllm.logging import sqlite_store

        def responder(messages):
            if any(m["role"] == "tool" for m in messages):
                os._exit(3)          # the process dies after the first cell
            return {{"content": None, "tool_calls": [{{"name": "run_python", "arguments": {{"code": "x = 1"}}}}]}}

        class Crashy(Tactic, register=False):
            name = "crashy"
            agent_group = ["a"]
            def call(self, task):
                a = self.agents["a"]
                a.open("main")
                a.receive(task)
                return a.respond().content

        config = {{"invoker": "scripted", "invoker_config": {{"responder": responder}}, "workdir": {str(tmp_path / "runs")!r},
                   "agent_configs": [{{"name": "a", "model_name": "gpt-4o", "system_prompt": "hi",
                                      "proxy": {{"activate_proxies": [], "sandbox": {{"backend": "local"}}}}}}]}}
        Crashy(config, log_store=sqlite_store({str(db)!r}))("go")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    (session,) = sqlite_store(db).list_sessions()
    assert session.state == "running"
    notebook = session.metadata["notebooks"]["a"]
    assert notebook.endswith("a.ipynb") and Path(notebook).is_file()
    assert session.metadata["sandbox_images"] == {"a": "local (no image)"}
