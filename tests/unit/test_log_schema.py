"""The log file's schema: a log written by the previous lllm (schema 1, `tests/data/log_schema1.db`, made by
the code of main before this change) opens, shows and migrates in place; readers never change a file; a file
that is not a log, is locked or is from a newer lllm gets a clear error and stays as it was."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from lllm.cli import main as lllm_main
from lllm.core.trace import ApiCallRecord, BrowserActionRecord, CellRecord, ToolCallRecord
from lllm.errors import UsageError
from lllm.logging import sqlite_store
from lllm.logging._schema import SCHEMA_VERSION, check_log

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "log_schema1.db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def old_log(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return path


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_an_old_log_is_read_as_it_is_by_a_reader(old_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(old_log)
    assert check_log(old_log) == 1
    with sqlite_store(old_log, readonly=True) as store:
        top = store.list_sessions(tags={"job": "fixture"})
        assert len(top) == 1 and top[0].tactic == "fork_demo"
        detail = store.load_session(top[0].id)
        assert {r.kind for r in detail.records} >= {"model_call", "agent_call", "cell", "api_call"}
        cell = detail.of_kind("cell")[0]
        assert cell.code == "print(1+1)" and cell.output is None and cell.images == []
        with pytest.raises(UsageError, match="read-only"):
            store.start_session("x", tactic="t")
    assert lllm_main(["logs", "show", top[0].id[:12], "--db", str(old_log)]) == 0
    out = capsys.readouterr().out
    assert "print(1+1)" in out and "branch_0" in out and "forked at message" in out
    assert _digest(old_log) == before and _user_version(old_log) == 0


def test_an_old_log_is_migrated_in_place_by_a_writer(old_log: Path) -> None:
    with sqlite_store(old_log) as store:
        assert store.schema_version == SCHEMA_VERSION
        cols = {r["name"] for r in store.query("PRAGMA table_info(cells)")}
        assert {"output", "images", "notices"} <= cols
        assert {"params", "answer"} <= {r["name"] for r in store.query("PRAGMA table_info(api_calls)")}
        assert {"url", "screenshot"} <= {r["name"] for r in store.query("PRAGMA table_info(browser_actions)")}
        old = store.list_sessions(tags={"job": "fixture"})[0]
        store.record(CellRecord(session_id=old.id, sandbox_id="sb", code="x = 1", status="ok", duration_s=0.1,
                                output="done", images=[{"mime": "image/png", "data": "iVBORw0KGgo="}]))
        store.record(ToolCallRecord(session_id=old.id, agent="analyst", name="run_python",
                                    arguments='{"code": "x = 1"}', result="done"))
        kinds = [r.kind for r in store.load_session(old.id).records]
        assert "tool_call" in kinds and kinds.count("cell") == 2
    assert _user_version(old_log) == SCHEMA_VERSION
    with sqlite_store(old_log, readonly=True) as store:  # and opens again, now at the new version
        assert store.schema_version == SCHEMA_VERSION
        cells = store.load_session(old.id).of_kind("cell")
        assert cells[-1].output == "done" and cells[-1].images[0]["mime"] == "image/png"


def test_a_log_from_a_newer_lllm_is_refused_and_left_alone(old_log: Path) -> None:
    conn = sqlite3.connect(old_log)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _digest(old_log)
    for opener in (lambda: sqlite_store(old_log), lambda: sqlite_store(old_log, readonly=True)):
        with pytest.raises(UsageError, match=r"newer lllm \(log schema 3\).*Upgrade lllm"):
            opener()
    assert _digest(old_log) == before


@pytest.mark.parametrize("content, expected", [
    (b"this is a text file, not a database\n" * 200, "not a SQLite database"),
    (None, "not an lllm log"),
])
def test_a_file_that_is_not_a_log_is_refused_and_left_alone(tmp_path: Path, content: bytes | None,
                                                            expected: str) -> None:
    path = tmp_path / "other.db"
    if content is None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE customers (id, name)")
        conn.commit()
        conn.close()
    else:
        path.write_bytes(content)
    before = _digest(path)
    for opener in (lambda: sqlite_store(path), lambda: sqlite_store(path, readonly=True)):
        with pytest.raises(UsageError, match=expected):
            opener()
    assert _digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_a_locked_log_gets_a_clear_message(old_log: Path) -> None:
    holder = sqlite3.connect(old_log, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UsageError, match="locked by another process"):
            check_log(old_log)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_new_record_fields_round_trip(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "new.db") as store:
        store.start_session("s", tactic="t")
        store.record(ApiCallRecord(session_id="s", proxy="fmp", endpoint="price", status="ok",
                                   params='{"symbol": "AAPL"}', answer='[{"close": 1}]', agent="analyst"))
        store.record(BrowserActionRecord(session_id="s", action="goto", target="http://x", url="http://x/",
                                         screenshot="iVBORw0KGgo=", screenshot_mime="image/png"))
        store.end_session("s", state="ok", metadata={"notebooks": {"analyst": "/tmp/a.ipynb"}})
    with sqlite_store(tmp_path / "new.db", readonly=True) as store:
        detail = store.load_session("s")
        api = detail.of_kind("api_call")[0]
        assert api.params == '{"symbol": "AAPL"}' and api.answer == '[{"close": 1}]'
        shot = detail.of_kind("browser_action")[0]
        assert shot.screenshot == "iVBORw0KGgo=" and shot.url == "http://x/"
        assert detail.session.metadata["notebooks"]["analyst"] == "/tmp/a.ipynb"


def test_a_reader_sees_what_a_writer_commits_while_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    writer = sqlite_store(path)
    writer.start_session("first", tactic="t")
    reader = sqlite_store(path, readonly=True)
    try:
        assert [s.id for s in reader.list_sessions()] == ["first"]
        done = threading.Event()

        def write() -> None:
            writer.start_session("second", tactic="t")
            done.set()

        threading.Thread(target=write).start()
        assert done.wait(10)
        assert {s.id for s in reader.list_sessions()} == {"first", "second"}
    finally:
        reader.close()
        writer.close()
