"""The run explorer's pages through Datasette's own test client (no browser): filters, one session, costs, a
batch; the log is never written; bad files, unknown sessions and a busy port get one clear line; a session of
200 cells renders in under a second. The browser side is tests/explorer/."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lllm import Tactic
from lllm.cli import main as lllm_main
from lllm.core.runtime import Runtime
from lllm.core.trace import ApiCallRecord, CellRecord, ModelCallRecord
from lllm.logging import sqlite_store
from lllm.logging.explorer import build_explorer

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "log_schema1.db"
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f80f0000010101005b3b5b8b0000000049454e44ae426082")).decode()


def get(ds: Any, path: str) -> Any:
    return asyncio.run(ds.client.get(path))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Forker(Tactic, register=False):
    name = "forker"
    agent_group = ["analyst"]

    def call(self, task: str, **kwargs: object) -> str:
        a = self.agents["analyst"]
        a.open("base")
        a.receive(task)
        a.respond()
        a.fork("base", "branch_0")
        a.receive("Now assume rates fall.")
        out = a.respond().content
        a.fork("base", "branch_1")
        a.receive("Now assume rates rise.")
        a.respond()
        return out


def _forker(store: Any) -> Forker:
    config = {"tactic_type": "forker", "invoker": "scripted",
              "invoker_config": {"responder": lambda messages: f"answer to: {messages[-1]['content']}",
                                 "input_price": 2.5, "output_price": 10.0},
              "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You analyse."}]}
    return Forker(config, log_store=store, runtime=Runtime("explorer-test"))


@pytest.fixture
def log(tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "runs.db"
    store = sqlite_store(db)
    tactic = _forker(store)
    forked = tactic("What do rates do to AAPL?", tags={"job": "fork"}, return_session=True)
    batch = tactic.bcall([f"case {i}" for i in range(4)], tags={"job": "nightly"})
    sid = forked.session_id
    store.record(CellRecord(session_id=sid, agent="analyst", sandbox_id="sb-1", code="print('hello from the cell')",
                            status="ok", duration_s=0.01, output="hello from the cell",
                            images=[{"mime": "image/png", "data": PNG}], notices=["output cut at 20000 chars"]))
    store.record(ApiCallRecord(session_id=sid, proxy="fmp", endpoint="price", status="ok", latency_s=0.02,
                               params='{"symbol": "AAPL", "period": "1y"}', answer='[{"close": 190.1}]'))
    store.close()
    return {"db": db, "sid": sid, "batch": batch.batch_id}


def test_sessions_page_filters_sorts_and_searches(log: dict[str, Any]) -> None:
    ds = build_explorer(log["db"])
    page = get(ds, "/")
    assert page.status_code == 200 and "5 session(s)" in page.text
    assert log["sid"][:12] in page.text
    assert "1 session(s)" in get(ds, "/?tag=job%3Dfork").text
    assert "4 session(s)" in get(ds, "/?tag=job%3Dnightly&state=ok").text
    assert "1 session(s)" in get(ds, "/?q=rates+do").text
    assert "0 session(s)" in get(ds, "/?state=error").text
    assert "0 session(s)" in get(ds, "/?min_cost=1000").text
    assert "5 session(s)" in get(ds, "/?since=2000-01-01&sort=cost&order=asc").text
    bad = get(ds, "/?since=yesterday&min_cost=lots")
    assert bad.status_code == 200 and "is not a date" in bad.text and "is not a number" in bad.text


def test_session_page_shows_the_run(log: dict[str, Any]) -> None:
    ds = build_explorer(log["db"])
    page = get(ds, f"/-/lllm/session/{log['sid'][:10]}")
    text = page.text
    assert page.status_code == 200
    assert "What do rates do to AAPL?" in text and "answer to: Now assume rates fall." in text
    assert 'id="by-agent-model"' in text and "<td>scripted</td>" in text
    assert text.count('class="tl-row') >= 6  # model calls, agent calls, the cell, the CALL_API
    assert "print(&#39;hello from the cell&#39;)" in text and "hello from the cell</pre>" in text
    assert f"data:image/png;base64,{PNG}" in text and "output cut at 20000 chars" in text
    assert "&#34;symbol&#34;: &#34;AAPL&#34;" in text and "190.1" in text
    tree = re.search(r'<ul class="tree">(.*?)</ul>\s*</div>', text, flags=re.S)
    assert tree and tree.group(1).count('class="tree-node"') == 3 and "forked at message 3" in tree.group(1)


def test_costs_and_batch_pages(log: dict[str, Any]) -> None:
    ds = build_explorer(log["db"])
    costs = get(ds, "/-/lllm/costs")
    assert costs.status_code == 200 and 'id="chart-model"' in costs.text and "chart.umd.min.js" in costs.text
    assert "job=nightly" in costs.text and "fmp" in costs.text
    assert get(ds, "/-/lllm-static/chart.umd.min.js").status_code == 200
    batch = get(ds, f"/-/lllm/batch/{log['batch']}")
    assert batch.status_code == 200 and "4 ok" in batch.text
    assert "4 ok" in get(ds, "/-/lllm/batch?tag=job%3Dnightly").text
    assert log["batch"][:12] in get(ds, "/-/lllm/batches").text


def test_unknown_session_and_batch_are_404_with_a_message(log: dict[str, Any]) -> None:
    ds = build_explorer(log["db"])
    page = get(ds, "/-/lllm/session/feedbeef")
    assert page.status_code == 404 and "there is no session &#39;feedbeef&#39; in this log" in page.text
    assert get(ds, "/-/lllm/batch/nope").status_code == 404
    assert get(ds, f"/-/lllm/session/{log['sid']}/notebook/analyst").status_code == 404


def test_browsing_writes_nothing_and_sees_new_sessions_on_reload(log: dict[str, Any]) -> None:
    db: Path = log["db"]
    ds = build_explorer(db)
    before = _digest(db)
    for path in ("/", f"/-/lllm/session/{log['sid']}", "/-/lllm/costs", "/-/lllm/batches", "/runs/sessions",
                 "/runs/cells.json", "/runs?sql=select+count(*)+from+sessions"):
        assert get(ds, path).status_code == 200, path
    assert _digest(db) == before
    writer = sqlite_store(db)  # a run keeps writing while the explorer is open
    writer.start_session("late-arrival", tactic="late", task="arrived after the explorer opened")
    writer.record(ModelCallRecord(session_id="late-arrival", agent="a", model="gpt-4o", cost=0.5))
    assert "late-arrival" in get(ds, "/").text
    writer.close()
    after = _digest(db)
    refused = get(ds, "/runs.json?sql=delete+from+sessions")  # only SELECTs, on a read-only connection
    assert refused.status_code == 400 and _digest(db) == after


def test_an_old_log_shows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE, db)
    before = _digest(db)
    ds = build_explorer(db)
    sid = re.findall(r"/-/lllm/session/([0-9a-f]+)", get(ds, "/?tag=job%3Dfixture").text)[0]
    page = get(ds, f"/-/lllm/session/{sid}")
    assert page.status_code == 200 and "print(1+1)" in page.text and "branch_0" in page.text
    assert "(not kept in this log)" in page.text  # schema 1 kept no CALL_API params
    assert _digest(db) == before


def _serve(db: Path, *args: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "lllm.cli", "logs", "serve", "--db", str(db), *args],
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("kind", ["text", "foreign", "newer", "locked", "missing"])
def test_serving_a_bad_file_says_what_is_wrong_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "bad.db"
    holder = None
    if kind == "text":
        db.write_text("name,price\napple,1\n")
    elif kind == "foreign":
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE orders (id, total)")
        conn.commit()
        conn.close()
    elif kind in ("newer", "locked"):
        shutil.copy(FIXTURE, db)
        if kind == "newer":
            conn = sqlite3.connect(db)
            conn.execute("PRAGMA user_version = 99")
            conn.commit()
            conn.close()
    before = _digest(db) if db.exists() else None
    if kind == "locked":  # after the digest: closing any descriptor of the file would drop this process's locks
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out = _serve(db, "--port", "0")
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    expected = {"text": "is not an lllm log: it is not a SQLite database", "foreign": "not an lllm log (its tables",
                "newer": "written by a newer lllm (log schema 99)", "locked": "is locked by another process",
                "missing": "no log database at"}[kind]
    assert code == 1 and expected in out and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert (_digest(db) if db.exists() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else ["bad.db"])


def test_an_unknown_session_and_a_busy_port_say_so(log: dict[str, Any]) -> None:
    code, out = _serve(log["db"], "--port", "0", "--session", "feedbeef")
    assert code == 1 and "there is no session 'feedbeef'" in out and "Traceback" not in out
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        code, out = _serve(log["db"], "--port", str(busy.getsockname()[1]))
    finally:
        busy.close()
    assert code == 1 and "is in use" in out and "--port 0" in out and "Traceback" not in out


def test_a_session_of_200_cells_renders_in_under_a_second(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    with sqlite_store(db) as store:
        store.start_session("big", tactic="analysis", task="crunch")
        for i in range(200):
            code = "\n".join(f"x{j} = {i} * {j}" for j in range(12)) + f"\nprint(x1, {i})"
            store.record(CellRecord(session_id="big", agent="analyst", sandbox_id="sb", code=code, status="ok",
                                    duration_s=0.01, output="\n".join(f"line {k} of cell {i}" for k in range(30)),
                                    images=[{"mime": "image/png", "data": PNG}] if i % 10 == 0 else []))
            store.record(ApiCallRecord(session_id="big", proxy="fmp", endpoint="price", status="ok",
                                       params='{"symbol": "AAPL"}', answer="[" + ",".join(["1.5"] * 200) + "]"))
        store.end_session("big", state="ok", result="done")
    ds = build_explorer(db)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        page = get(ds, "/-/lllm/session/big")
        timings.append(time.perf_counter() - started)
        assert page.status_code == 200 and page.text.count('class="item cell"') == 200
    print(f"200-cell session page: best {min(timings) * 1000:.0f} ms of {[round(t * 1000) for t in timings]}")
    assert min(timings) <= 1.0


def test_the_demo_prints_the_command_that_opens_its_run(tmp_path: Path) -> None:
    from lllm.demo import run_demo

    out = io.StringIO()
    session = run_demo(backend="local", db=tmp_path / "demo.db", workdir=tmp_path / "runs", out=out)
    line = f"explore it: lllm logs serve --db {tmp_path / 'demo.db'} --open --session {session.session_id[:12]}"
    assert line in out.getvalue()
    assert lllm_main(["logs", "show", session.session_id[:12], "--db", str(tmp_path / "demo.db")]) == 0


def test_what_ran_inside_a_tool_call_is_shown_inside_it() -> None:
    """Cells, CALL_APIs and browser steps go under the tool call of the same agent whose time span holds them
    (two agents working at once keep theirs apart); the rest stay steps of their own, in time order."""
    from lllm.logging.explorer._data import _nest_in_tool_calls, _pretty, _steps

    tools = [{"n": 1, "agent": "a", "started_at": 10.0, "duration_s": 2.0, "code": "x = 1", "result": "ok\n"},
             {"n": 2, "agent": "b", "started_at": 10.5, "duration_s": 2.0, "code": None, "result": None}]
    cells = [{"n": 1, "agent": "a", "started_at": 10.2, "code": "x = 1", "output": "ok"},
             {"n": 2, "agent": "b", "started_at": 11.0, "code": "y = 2", "output": "two"},
             {"n": 3, "agent": "a", "started_at": 13.0, "code": "z = 3", "output": ""}]
    apis = [{"n": 1, "agent": None, "started_at": 12.4}, {"n": 2, "agent": "a", "started_at": 9.0}]
    _nest_in_tool_calls(tools, cells, apis, [])
    assert [(k, r["n"]) for k, r in tools[0]["inside"]] == [("cell", 1)]
    assert [(k, r["n"]) for k, r in tools[1]["inside"]] == [("cell", 2), ("api", 1)]
    assert cells[0]["same_code"] and cells[0]["output_in_result"] and not cells[1]["same_code"]
    order = [(k, r["n"]) for k, r in _steps(tools, cells, apis, [])]
    assert order == [("api", 2), ("tool", 1), ("tool", 2), ("cell", 3)]
    # a payload the log cut is no longer JSON: one object a line, the note kept
    cut = '[{"a":1},{"a":2},{"a"\n... [120 more characters not kept in the log]'
    assert _pretty(cut).splitlines() == ['[{"a":1},', '{"a":2},', '{"a"', "... [120 more characters not kept in the log]"]
    assert _pretty('[{"date": "2024-01-01", "v": 1}, {"date": "2024-01-02", "v": 2}]').splitlines()[1] == \
        '  {"date": "2024-01-01", "v": 1},'
