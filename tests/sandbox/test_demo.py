"""The main job (`lllm demo`) end to end: the research analyst's code runs in a sandbox and reaches the three
proxies only through CALL_API; the log and the notebook record it."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from lllm.demo import run_demo


def _run(tmp_path: Path, backend: str) -> tuple[str, object, sqlite3.Connection]:
    out, live = io.StringIO(), io.StringIO()
    session = run_demo(backend=backend, db=tmp_path / "demo.db", workdir=tmp_path / "runs", out=out, live=live)
    # what the cells printed was shown while they ran, line by line (tests/unit/test_live_output.py times it)
    assert "[research_analyst] | Got 261 price points, latest GDP: 29962.0\n" in live.getvalue()
    assert "[research_analyst] | AAPL 1y return: +3.9%" in live.getvalue()
    return out.getvalue(), session, sqlite3.connect(tmp_path / "demo.db")


def _check(text: str, session: object, db: sqlite3.Connection, tmp_path: Path) -> None:
    assert "Got 261 price points, latest GDP: 29962.0" in text  # turn 2: fmp + fred through CALL_API
    assert "Apple outlook 2025" in text  # turn 3: exa through CALL_API
    assert "AAPL 1y return: +3.9%" in text  # turn 4 used `prices` and `macro` left by turn 2: state persisted
    assert "Findings (from the sandboxed analysis)" in text
    assert session.state == "ok"
    # the offline analyst is the scripted model: it bills nobody (this asserted > 0 while it was priced as gpt-4o)
    assert session.total_cost.cost == 0.0 and session.total_cost.prompt_tokens > 0
    assert {m for (m,) in db.execute("select model from model_calls where session_id = ?", (session.session_id,))} == {"scripted"}
    assert "cost: $0.000000 (" in text
    cells = db.execute("select status, sandbox_id from cells where session_id = ?", (session.session_id,)).fetchall()
    assert [c[0] for c in cells] == ["ok", "ok", "ok"]
    assert len({c[1] for c in cells}) == 1  # one sandbox for the whole call
    calls = db.execute("select proxy || '/' || endpoint, status from api_calls where session_id = ? order by started_at",
                       (session.session_id,)).fetchall()
    assert calls == [("fmp/price", "ok"), ("fred/series", "ok"), ("exa/search", "ok")]
    (state,) = db.execute("select state from sessions where id = ?", (session.session_id,)).fetchone()
    assert state == "ok"
    notebooks = list((tmp_path / "runs" / session.session_id).glob("*.ipynb"))
    assert len(notebooks) == 1
    nb = json.loads(notebooks[0].read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code_cells) == 3 and "CALL_API" in "".join(code_cells[0]["source"])
    assert f"notebook: {notebooks[0]}" in text


@pytest.mark.docker
def test_demo_runs_in_docker(tmp_path: Path, sandbox_image: str) -> None:
    text, session, db = _run(tmp_path, "docker")
    _check(text, session, db, tmp_path)
    assert f"code ran in: a Docker sandbox (image {sandbox_image}, no network), removed when the call ended: 3 cell(s)" in text


def test_demo_runs_on_a_local_kernel(tmp_path: Path) -> None:
    text, session, db = _run(tmp_path, "local")
    _check(text, session, db, tmp_path)
    assert "code ran in: a local kernel on this host (NOT isolated): 3 cell(s)" in text
