"""Tool calls are recorded (one `ToolCallRecord` each: name, arguments, result, status, duration) and
`lllm logs show` prints them with their code and results instead of `assistant: null`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lllm import Tactic
from lllm.cli import main as lllm_main
from lllm.core.runtime import Runtime
from lllm.logging import sqlite_store


def run_python(code: str) -> str:
    """Run code (a stand-in that echoes what a cell would print)."""
    if "boom" in code:
        raise RuntimeError("kernel said no")
    return f"ran {len(code.splitlines())} line(s): 42"


class Coder(Tactic, register=False):
    name = "coder"
    agent_group = ["coder"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["coder"]
        agent.tools.append(run_python)
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def _steps() -> list[object]:
    return [
        {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": "x = 6 * 7\nprint(x)"}}]},
        {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": "boom()"}},
                                         {"name": "nope", "arguments": "{not json"}]},
        "The answer is 42.",
    ]


def test_tool_calls_are_recorded_and_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    store = sqlite_store(db)
    config = {"tactic_type": "coder", "invoker": "scripted", "invoker_config": {"steps": _steps()},
              "agent_configs": [{"name": "coder", "model_name": "gpt-4o", "system_prompt": "You code."}]}
    session = Coder(config, log_store=store, runtime=Runtime("t")).__call__("compute", return_session=True)
    store.close()
    tools = [r for r in session.records if r.kind == "tool_call"]
    assert [(t.name, t.status) for t in tools] == [("run_python", "ok"), ("run_python", "error"), ("nope", "error")]
    assert tools[0].arguments == '{"code": "x = 6 * 7\\nprint(x)"}' and tools[0].result == "ran 2 line(s): 42"
    assert "kernel said no" in tools[1].error and "no tool named" in tools[2].error and tools[2].arguments == "{not json"
    assert all(t.dialog == "main" and t.agent == "coder" and t.duration_s >= 0 for t in tools)

    assert lllm_main(["logs", "show", session.session_id[:10], "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "tool_call" in out and "run_python" in out
    assert "x = 6 * 7" in out and "print(x)" in out  # the code, on its own lines
    assert "ran 2 line(s): 42" in out  # the result
    assert "kernel said no" in out
    assert "assistant: null" not in out
    assert "calls run_python code: x = 6 * 7" in out  # the dialog shows the call, not null


def test_show_puts_a_cell_under_the_tool_call_that_ran_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run_python (local kernel): its cell is printed under the tool call, its code and output not twice;
    the session's notebook and sandbox are in the header."""
    db = tmp_path / "runs.db"
    store = sqlite_store(db)
    steps = [{"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": "print(6 * 7)"}}]}, "42."]
    config = {"tactic_type": "nb", "invoker": "scripted", "invoker_config": {"steps": steps},
              "workdir": str(tmp_path / "runs"),
              "agent_configs": [{"name": "coder", "model_name": "gpt-4o", "system_prompt": "You code.",
                                 "proxy": {"activate_proxies": [], "sandbox": {"backend": "local"}}}]}

    class Notebook(Coder, register=False):
        name = "nb"

        def call(self, task: str, **kwargs: object) -> str:
            agent = self.agents["coder"]
            agent.open("main")
            agent.receive(task)
            return agent.respond().content

    session = Notebook(config, log_store=store, runtime=Runtime("t"))("compute", return_session=True)
    store.close()
    assert lllm_main(["logs", "show", session.session_id, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.count("print(6 * 7)") == 2  # the tool call's code, and the dialog's line; not the cell again
    cell = next(line for line in out.splitlines() if " cell " in line)
    assert cell.startswith("  ") and "    cell" in cell and "(the code above)" in cell
    assert "notebook coder: " in out and "result:" in out and "output:" not in out  # printed once, as the result
