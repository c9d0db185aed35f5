"""lllm-core's `lllm.logging`, as its docs (core/logging.md, Lesson 7) describe it, on our log: the factories,
`LogStore(backend, partition=, runtime=)`, partitions, the query API (`list_sessions(tactic_path=, after=,
before=, state="failure")`, `SessionSummary` fields, `load_session_record`, `export_cost_summary`,
`export_session`, `delete_session`), a `LogBackend` of one's own, and terminal logging."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.errors import UsageError
from lllm.logging import (
    ColoredFormatter,
    LocalFileBackend,
    LogBackend,
    LogStore,
    NoOpBackend,
    SQLiteBackend,
    local_store,
    noop_store,
    setup_logging,
    sqlite_store,
)

CONFIG = {"invoker": "scripted", "invoker_config": {"responder": lambda m: f"echo: {m[-1]['content']}",
                                                    "input_price": 2.5, "output_price": 10.0},
          "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": "Echo."}]}


class Echo(Tactic, register=False):
    name = "compat_echo"
    agent_group = ["a"]

    def call(self, task: str, **kwargs: Any) -> str:
        if task == "boom":
            raise ValueError("the task said boom")
        a = self.agents["a"]
        a.open("main")
        a.receive(task)
        return a.respond().content


class Outer(Tactic, register=False):
    name = "compat_outer"
    agent_group = ["a"]

    def call(self, task: str, **kwargs: Any) -> str:
        return Echo(CONFIG, runtime=Runtime("compat"))(task)


def run(store: LogStore, *tasks: str, tags: dict[str, Any] | None = None) -> Echo:
    tactic = Echo(CONFIG, log_store=store, runtime=Runtime("compat"))
    for task in tasks:
        try:
            tactic(task, tags=tags)
        except ValueError:
            pass
    return tactic


# -- factories and backends -----------------------------------------------------------------------------------


def test_local_store_keeps_one_sqlite_log_in_its_folder(tmp_path: Path) -> None:
    store = local_store(tmp_path / "logs")
    run(store, "hi")
    assert (tmp_path / "logs" / "lllm.db").is_file()
    assert [s.task for s in store.list_sessions()] == ["hi"]
    assert [s.task for s in sqlite_store(tmp_path / "logs" / "lllm.db").list_sessions()] == ["hi"]


def test_a_backend_says_where_the_log_is(tmp_path: Path) -> None:
    assert LogStore(backend=SQLiteBackend(path=str(tmp_path / "a.db"))).path == str(tmp_path / "a.db")
    assert LogStore(SQLiteBackend(tmp_path / "b.db")).path == str(tmp_path / "b.db")
    assert LogStore(backend=LocalFileBackend(path=str(tmp_path / "c"))).path == str(tmp_path / "c" / "lllm.db")
    with pytest.raises(UsageError, match="path or backend=, not both"):
        LogStore(str(tmp_path / "x.db"), backend=SQLiteBackend(tmp_path / "y.db"))
    with pytest.raises(UsageError, match="db_path or path, not both"):
        SQLiteBackend("a.db", path="b.db")


def test_noop_store_runs_tactics_and_keeps_nothing() -> None:
    store = noop_store()
    tactic = run(store, "hi", "boom")
    assert tactic.last_session is not None and tactic.last_session.state == "error"
    assert store.list_sessions() == [] and store.count() == 0 and store.count("model_calls") == 0
    assert store.export_cost_summary() == {"session_count": 0, "total_cost_usd": 0.0, "sessions": []}
    assert isinstance(LogStore(NoOpBackend()), LogStore) and repr(noop_store()) == "LogStore(NoOpBackend())"


@pytest.mark.parametrize("make", [lambda p: SQLiteBackend(p / "kv.db"), lambda p: LocalFileBackend(p / "kv")])
def test_every_backend_is_also_a_key_value_store(tmp_path: Path, make: Any) -> None:
    backend: LogBackend = make(tmp_path)
    backend.put("p/sessions/1", b"one")
    backend.put("p/index/1", b"{}")
    backend.put("q/sessions/2", b"two")
    assert backend.get("p/sessions/1") == b"one" and backend.get("nope") is None
    assert backend.list_keys("p/") == ["p/index/1", "p/sessions/1"]
    assert len(backend.list_keys()) == 3
    backend.delete("p/sessions/1")
    backend.delete("p/sessions/1")  # twice: no error
    assert backend.list_keys("p/sessions/") == []


def test_a_file_backend_key_cannot_leave_its_folder(tmp_path: Path) -> None:
    backend = LocalFileBackend(tmp_path / "kv")
    for key in ("../escape", "a/../../b", "/", ""):
        with pytest.raises(UsageError, match="not a valid key"):
            backend.put(key, b"x")
    assert not (tmp_path / "escape").exists()


# -- partitions ---------------------------------------------------------------------------------------------


def test_partitions_of_one_file_do_not_see_each_other(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    a, b, default = sqlite_store(db, partition="project-a"), sqlite_store(db, partition="project-b"), sqlite_store(db)
    run(a, "from a")
    run(b, "from b", "boom")
    run(default, "from default")
    assert [s.task for s in a.list_sessions()] == ["from a"]
    assert sorted(s.task for s in b.list_sessions()) == ["boom", "from b"]
    assert [s.task for s in default.list_sessions()] == ["from default"]
    assert len(LogStore(db).list_sessions()) == 4  # no partition: the whole file (what `lllm logs` reads)
    assert a.export_cost_summary()["session_count"] == 1 and len(b.cost_summary()) == 1
    other = b.list_sessions(state="failure")[0].session_id
    with pytest.raises(UsageError, match="in partition 'project-b', not in this store's"):
        a.load_session_record(other)
    with pytest.raises(UsageError, match="partition"):
        a.delete_session(other)


# -- the query API -------------------------------------------------------------------------------------------


def test_summaries_answer_lllm_core_field_names(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    run(store, "hi", tags={"experiment": "v2"})
    (s,) = store.list_sessions(tags={"experiment": "v2"}, state="success")
    assert (s.session_id, s.tactic_name, s.tactic_path) == (s.id, "compat_echo", "compat_echo")
    assert s.total_cost == s.cost > 0 and s.agent_call_count == 1 and s.tags == {"experiment": "v2"}
    assert dt.datetime.fromisoformat(s.timestamp) <= dt.datetime.now()
    assert store.list_sessions(state="failure") == []


def test_after_and_before_bound_the_start_time(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    run(store, "hi")
    now = dt.datetime.now()
    assert len(store.list_sessions(after=now - dt.timedelta(minutes=1), before=now + dt.timedelta(minutes=1))) == 1
    assert store.list_sessions(after=now + dt.timedelta(minutes=1)) == []
    assert store.list_sessions(before=dt.datetime(2025, 1, 1)) == []
    with pytest.raises(UsageError, match="`after` must be a datetime"):
        store.list_sessions(after="last tuesday")


def test_a_failed_call_keeps_its_traceback_in_the_record(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    run(store, "boom")
    (s,) = store.list_sessions(state="failure", limit=1)
    record = store.load_session_record(s.session_id)
    assert record.session_id == s.session_id and record.timestamp == s.timestamp
    assert "ValueError: the task said boom" in record.traceback
    assert record.session.state == "error" and record.session.error == "ValueError: the task said boom"
    assert record.session.error_traceback == record.traceback


def test_a_loaded_session_answers_like_lllm_cores_session(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    run(store, "hi")
    session = store.load_session(store.list_sessions()[0].session_id)
    assert session.tactic_name == "compat_echo" and session.delivery == "echo: hi"
    assert session.total_cost.cost == session.session.cost and session.total_cost.prompt_tokens > 0
    assert session.agent_call_count == 1 and session.error is None
    ((name, calls),) = session.agent_sessions.items()
    assert name == "a" and len(calls) == 1 and calls[0].cost == session.total_cost.cost


def test_cost_summary_and_export_in_lllm_cores_shape(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    run(store, "one", "two", tags={"env": "prod"})
    run(store, "three")
    summary = store.export_cost_summary(tags={"env": "prod"})
    assert summary["session_count"] == 2
    assert summary["total_cost_usd"] == round(sum(r["cost_usd"] for r in summary["sessions"]), 6) > 0
    assert set(summary["sessions"][0]) == {"session_id", "tactic_name", "state", "cost_usd", "timestamp"}
    assert store.export_cost_summary()["session_count"] == 3
    sid = summary["sessions"][0]["session_id"]
    exported = json.loads(store.export_session(sid, format="json"))
    assert exported["session"]["id"] == sid and {r["kind"] for r in exported["records"]} >= {"model_call"}
    with pytest.raises(UsageError, match="format must be 'json'"):
        store.export_session(sid, format="csv")


def test_delete_session_removes_it_with_its_sub_sessions_and_records(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "runs.db")
    Outer(CONFIG, log_store=store, runtime=Runtime("compat"))("nested")
    run(store, "kept")
    outer = store.list_sessions(tactic="compat_outer")[0]
    assert len(store.list_sessions(include_children=True)) == 3
    store.delete_session(outer.session_id)
    assert [s.task for s in store.list_sessions(include_children=True)] == ["kept"]
    db = sqlite3.connect(tmp_path / "runs.db")
    assert db.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM dialogs").fetchone()[0] == 1
    with pytest.raises(UsageError, match="no session"):
        store.load_session_record(outer.session_id)


# -- a backend of one's own ----------------------------------------------------------------------------------


class DictBackend(LogBackend):
    """The docs' custom-backend recipe, on a dict (their Redis/Firestore examples need servers)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.data[key] = data

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_a_custom_backend_gets_each_finished_session_as_json() -> None:
    backend = DictBackend()
    store = LogStore(backend, partition="prod")
    run(store, "hi", "boom", tags={"env": "prod"})
    Outer(CONFIG, log_store=store, runtime=Runtime("compat"))("nested")
    assert store.count() == 0  # nothing kept in memory once the sessions are out
    index = sorted(k for k in backend.data if k.startswith("prod/index/"))
    assert len(index) == 4 and all(k.replace("/index/", "/sessions/") in backend.data for k in index)
    assert sorted(s.task for s in store.list_sessions()) == ["boom", "hi", "nested"]
    (failed,) = store.list_sessions(state="failure", tags={"env": "prod"})
    record = store.load_session_record(failed.session_id)
    assert "the task said boom" in record.traceback
    ok = store.list_sessions(tactic="compat_echo", state="success")[0]
    assert [r.kind for r in store.load_session(ok.session_id).model_calls] == ["model_call"]
    outer = store.list_sessions(tactic="compat_outer")[0]
    store.delete_session(outer.session_id)
    assert len(backend.data) == 4 and LogStore(DictBackend()).list_sessions() == []


# -- terminal logging ----------------------------------------------------------------------------------------


def test_setup_logging_adds_one_handler_at_the_level_asked() -> None:
    logger = logging.getLogger("lllm")
    before = list(logger.handlers), logger.level
    try:
        out = io.StringIO()
        setup_logging("DEBUG", stream=out)
        setup_logging("WARNING", color=False, stream=out)
        ours = [h for h in logger.handlers if h not in before[0]]
        assert len(ours) == 1 and logger.level == logging.WARNING
        logging.getLogger("lllm.agent").info("hidden")
        logging.getLogger("lllm.agent").warning("shown")
        assert out.getvalue() == "WARNING  lllm.agent - shown\n"
        with pytest.raises(ValueError, match="unknown level 'LOUD'"):
            setup_logging("LOUD")
    finally:
        for h in [h for h in logger.handlers if h not in before[0]]:
            logger.removeHandler(h)
        logger.setLevel(before[1])


def test_colored_formatter_colours_by_level_and_shows_control_characters() -> None:
    fmt = ColoredFormatter("%(levelname)s %(message)s")
    err = logging.LogRecord("lllm", logging.ERROR, __file__, 1, "cell printed \x1b]52;c;aGk=\x07", None, None)
    line = fmt.format(err)
    assert line == "\x1b[31mERROR cell printed ^[]52;c;aGk=^G\x1b[0m"
    info = logging.LogRecord("lllm", logging.INFO, __file__, 1, "ok", None, None)
    assert fmt.format(info).startswith("\x1b[32m")
    assert ColoredFormatter("%(message)s", color=False).format(info) == "ok"
