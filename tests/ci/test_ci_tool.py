"""The `ci:` agent block and its run_tests tool: examples/fix_the_test (a scripted coder reads the failure, edits
the file in its sandbox, runs the tests again and reports green), the full reports in the log, and the
tool's refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fix_the_test"


def _example_module():
    spec = importlib.util.spec_from_file_location("fix_the_test_run", EXAMPLE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.docker
def test_the_fix_the_test_example_goes_green(sandbox_image: str, tmp_path: Path) -> None:
    from lllm.ci import TestReport
    from lllm.logging import sqlite_store

    before = (EXAMPLE / "project" / "calc.py").read_text()
    store = sqlite_store(tmp_path / "log.db")
    answer = _example_module().main(log_store=store)
    assert answer.startswith("The tests pass now. PASSED: 2 passed in ")
    assert (EXAMPLE / "project" / "calc.py").read_text() == before  # the edit happened in the sandbox only
    session = store.list_sessions()[0]
    runs = store.load_session(session.id).of_kind("test_run")
    assert [(r.exit_code, r.passed, r.failed, r.agent) for r in runs] == [(1, 1, 1, "coder"), (0, 2, 0, "coder")]
    first = TestReport.model_validate(json.loads(runs[0].report))
    assert [t.nodeid for t in first.failures()] == ["tests/test_calc.py::test_add"]
    assert "where 0 = add(2, 2)" in first.failures()[0].traceback
    assert runs[0].summary.startswith("NOT PASSED (exit code 1): 1 failed, 1 passed in ")
    tool_calls = store.query("SELECT name FROM tool_calls ORDER BY started_at")
    assert [row["name"] for row in tool_calls] == ["run_tests", "run_python", "run_tests"]
    import sqlite3

    from lllm.logging.explorer._data import session_page

    conn = sqlite3.connect(tmp_path / "log.db")
    conn.row_factory = sqlite3.Row
    page = session_page(conn, session.id)
    assert [item["label"] for item in page["timeline"] if item["kind"] == "test_run"] == [
        "tests project: 1 passed, 1 failed, 0 errors (exit 1)", "tests project: 2 passed, 0 failed, 0 errors (exit 0)"]


def test_a_bad_ci_block_is_a_config_error(tmp_path: Path) -> None:
    from lllm.core.agent import Agent
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.errors import ConfigError
    from lllm.tools.ci import attach

    agent = Agent(name="coder", system_prompt="x", model="gpt-4o", llm_invoker=ScriptedInvoker(["ok"]))
    with pytest.raises(ConfigError, match=r"bad ci block: ci.shards"):
        attach(agent, {"shards": 0})
    with pytest.raises(ConfigError, match="ci.source .* is not a folder"):
        attach(agent, {"source": str(tmp_path / "nothing")})


def test_run_tests_refuses_options_in_place_of_node_ids() -> None:
    from lllm.core.agent import Agent
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.errors import UsageError
    from lllm.tools.ci import attach

    agent = Agent(name="coder", system_prompt="x", model="gpt-4o", llm_invoker=ScriptedInvoker(["ok"]))
    tools = attach(agent, {"path": "project"})
    assert [f.name for f in agent.tools] == ["run_tests"]
    with pytest.raises(UsageError, match="is not a node id"):
        tools.run("tests/test_x.py --rootdir=/")


@pytest.mark.docker
def test_run_tests_with_a_node_id_filter_and_shards_in_its_own_sandbox(sandbox_image: str, tmp_path: Path) -> None:
    from lllm.core.agent import Agent
    from lllm.invokers.scripted import ScriptedInvoker

    project = tmp_path / "proj"
    project.mkdir()
    (project / "test_nums.py").write_text("".join(f"def test_{i}():\n    assert {i} % 3\n\n" for i in range(1, 7)))
    records: list = []
    agent = Agent(name="coder", system_prompt="x", model="gpt-4o", llm_invoker=ScriptedInvoker(["ok"]),
                  tracer=records.append)
    from lllm.tools.ci import attach

    tools = attach(agent, {"path": "proj", "source": str(project), "shards": 2, "max_output_chars": 600})
    try:
        summary = tools.run()
        assert summary.startswith("NOT PASSED (exit code 1): 2 failed, 4 passed in ")
        assert "FAILED test_nums.py::test_3: assert (3 % 3)" in summary and len(summary) <= 600
        assert sorted({t.shard for t in tools.last_report.tests}) == [0, 1]
        only = tools.run("test_nums.py::test_1 test_nums.py::test_2")
        assert only.startswith("PASSED: 2 passed in ")
    finally:
        agent.shutdown()
    assert tools._own_sandbox is None
    assert [(r.kind, r.selection, r.total) for r in records] == [
        ("test_run", None, 6), ("test_run", "test_nums.py::test_1 test_nums.py::test_2", 2)]
