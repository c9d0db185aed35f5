"""Failures of the machinery end the run honestly (issue 9, "Failures must be honest").

When the Docker engine does not answer, the sandbox image is missing, a sandbox cannot start, the gateway
cannot open a session or Chromium is missing, the agent call ends with that error: the model is not handed it
as a tool result to work around, the session is logged as an error, and `lllm run` / `lllm demo` exit 1 with
the error's message (real subprocess runs). `lllm demo` never says the code ran in Docker when it did not.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lllm.errors import GatewayStartError, InfrastructureError, SandboxStartError

ROOT = Path(__file__).resolve().parents[2]
NO_ENGINE = "unix:///nonexistent/docker.sock"


def lllm(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "lllm.cli", *args], capture_output=True, text=True, env=full,
                          cwd=tmp_path, timeout=300)


def logged(db: Path) -> dict[str, Any]:
    """What the log holds about the (one) session: its row, model calls, agent calls and dialogs' text."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    (session,) = con.execute("SELECT * FROM sessions").fetchall()
    out = {
        "state": session["state"], "error": session["error"],
        "model_calls": con.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0],
        "agent_calls": [r["status"] for r in con.execute("SELECT status FROM agent_calls")],
        "cells": con.execute("SELECT COUNT(*) FROM cells").fetchone()[0],
        "dialogs": [json.loads(r["data"]) for r in con.execute("SELECT data FROM dialogs")],
    }
    con.close()
    return out


def check_ended_honestly(proc: subprocess.CompletedProcess[str], db: Path, message: str, error_type: str,
                         model_calls: int) -> dict[str, Any]:
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lllm: error: {message}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    log = logged(db)
    assert log["state"] == "error" and log["error"].startswith(f"{error_type}: {message}")
    assert log["agent_calls"] == ["error"]
    assert log["model_calls"] == model_calls  # no model call after the failure: nobody was asked to work around it
    messages = [m for d in log["dialogs"] for m in d["messages"]]
    sent_back = [str(m["content"]) for m in messages if m["role"] in ("tool", "user")]
    assert not any(error_type in text for text in sent_back)  # no message carried the error to the model
    (failed,) = [c for m in messages for c in (m.get("tool_calls") or []) if c.get("error_message")]
    assert failed["error_message"].startswith(f"not run: {error_type}: {message}")  # the record keeps it
    return log


def test_demo_with_no_docker_engine_exits_1_and_claims_nothing(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = lllm(["demo", "--db", str(db), "--workdir", str(tmp_path / "runs")], tmp_path, DOCKER_HOST=NO_ENGINE)
    message = "cannot connect to the Docker engine: no Docker engine answers"
    log = check_ended_honestly(proc, db, message, "SandboxStartError", model_calls=2)
    assert log["cells"] == 0
    assert "a Docker sandbox" not in proc.stdout and "the run FAILED; code ran in: nowhere (no cell ran)" in proc.stdout
    assert "[research_analyst -> run_python]" in proc.stdout  # the transcript up to the failure is shown
    assert "Findings" not in proc.stdout  # the scripted analyst never answered from an error text


def test_run_with_no_docker_engine_exits_1_with_the_same_message(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    proc = lllm(["run", "research", "--package", str(ROOT / "examples" / "research"), "--task", "How is AAPL?",
                 "--db", str(db)], tmp_path, DOCKER_HOST=NO_ENGINE)
    check_ended_honestly(proc, db, "cannot connect to the Docker engine: no Docker engine answers",
                         "SandboxStartError", model_calls=2)
    assert "[research] session " in proc.stderr and ": FAILED, logged to" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.docker
def test_demo_with_a_missing_image_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = lllm(["demo", "--db", str(db), "--workdir", str(tmp_path / "runs")], tmp_path,
                LLLM_SANDBOX_IMAGE="nonexistent")
    check_ended_honestly(proc, db, "LLLM_SANDBOX_IMAGE='nonexistent' does not exist on the Docker engine",
                         "SandboxStartError", model_calls=2)
    assert "a Docker sandbox" not in proc.stdout


CU_PACKAGE = {
    "lllm.toml": '[package]\nname = "cu_honest"\nversion = "0.1.0"\n\n[configs]\npaths = ["configs"]\n',
    "configs/browse.yaml": """\
tactic_type: computer_use
invoker: scripted
invoker_config:
  steps: ["I could not see the page, but the price is probably $10."]
agent_configs:
  - name: browser
    model_name: gpt-4o
    system_prompt: You operate a browser.
    computer_use:
      start_url: http://127.0.0.1:9/
      allowed_domains: ["127.0.0.1:9"]
""",
}


def test_computer_use_with_no_chromium_exits_1_without_asking_the_model(tmp_path: Path) -> None:
    for name, content in CU_PACKAGE.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(content)
    db = tmp_path / "cu.db"
    proc = lllm(["run", "browse", "--package", str(tmp_path / "pkg"), "--task", "Find the price", "--db", str(db)],
                tmp_path, LLLM_CHROMIUM="/nonexistent")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lllm: error: ") and "/nonexistent" in last, proc.stderr
    assert "no Chromium at '/nonexistent'" in last or "Playwright is not installed" in last
    con = sqlite3.connect(db)
    (state, error), = con.execute("SELECT state, error FROM sessions").fetchall()
    assert state == "error" and error.startswith("BrowserLaunchError: ")
    assert con.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0] == 0  # the model was never asked
    assert "probably $10" not in proc.stdout


# -- in-process: the gateway, and jupyter mode ---------------------------------------------------------------


def _tactic(tmp_path: Path, steps: list[Any] | Any, proxy: dict[str, Any]) -> Any:
    """A one-agent tactic with a proxy block, on a scripted model (`steps`, or a responder function)."""
    from lllm.core.tactic import Tactic
    from lllm.logging import sqlite_store

    class Analyst(Tactic, register=False):
        name = "honest_analyst"
        agent_group = ["analyst"]

        def call(self, task: str, **kwargs: Any) -> str:
            agent = self.agents["analyst"]
            agent.open("main")
            agent.receive(task)
            return agent.respond().content

    script = {"responder": steps} if callable(steps) else {"steps": steps}
    config = {"invoker": "scripted", "invoker_config": script, "workdir": str(tmp_path / "runs"),
              "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You analyse.",
                                 "proxy": proxy}]}
    return Analyst(config, log_store=sqlite_store(str(tmp_path / "log.db")))


def test_a_gateway_that_cannot_open_a_session_ends_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.proxies import gateway

    closed = gateway.Gateway()
    closed.close()  # a gateway that is gone: open_session refuses
    monkeypatch.setattr(gateway, "get_gateway", lambda: closed)
    steps = [{"tool_calls": [{"name": "run_python", "arguments": {"code": "print(1)"}}]}, "worked around it"]
    tactic = _tactic(tmp_path, steps, {"activate_proxies": [], "sandbox": {"backend": "local"}})
    with pytest.raises(GatewayStartError, match="the CALL_API gateway could not open a session") as info:
        tactic("go")
    assert isinstance(info.value, InfrastructureError) and "this Gateway is closed" in str(info.value)
    session = tactic.last_session
    assert session.state == "error" and session.error.startswith("GatewayStartError")
    tools = session.agents["analyst"].proxy_tools
    assert tools.sandbox is None and tools.ran_in is None  # the started kernel was discarded with the call
    assert tactic.llm_invoker.steps_remaining == 1
    tactic.log_store.close()


def test_jupyter_mode_ends_the_call_when_the_sandbox_cannot_start(tmp_path: Path) -> None:
    steps = ["Let me look.\n<python_cell>print(1 + 1)</python_cell>", "worked around it"]
    proxy = {"activate_proxies": [], "exec_env": "jupyter",
             "sandbox": {"backend": "local", "env": {"PYTHONHOME": "/nonexistent"}}}  # the kernel cannot start
    tactic = _tactic(tmp_path, steps, proxy)
    with pytest.raises(SandboxStartError, match="the local kernel did not come up"):
        tactic("go")
    assert tactic.llm_invoker.steps_remaining == 1  # the cell's failure was not sent back as a cell output
    row = tactic.log_store.get_session(tactic.last_session.session_id)
    assert row.state == "error" and row.error.startswith("SandboxStartError")
    data = json.dumps([d.data for d in tactic.log_store.load_session(row.id).dialogs])
    assert "could not run" not in data
    tactic.log_store.close()


@pytest.mark.docker
def test_a_container_removed_mid_session_ends_the_call(tmp_path: Path, sandbox_image: str) -> None:
    from lllm.core.tactic import current_session
    from lllm.errors import SandboxEngineError

    removed: list[str] = []

    def model(messages: list[dict[str, Any]]) -> Any:
        done = sum(1 for m in messages if m.get("role") == "tool")
        if done == 0:
            return {"tool_calls": [{"name": "run_python", "arguments": {"code": "x = 41\nprint(x + 1)"}}]}
        if done == 1:  # someone removes the container between two cells (another user's `lllm sandbox gc`)
            sandbox = current_session().agents["analyst"].proxy_tools.sandbox
            sandbox.container.remove(force=True)
            removed.append(sandbox.sandbox_id)
            return {"tool_calls": [{"name": "run_python", "arguments": {"code": "print(x)"}}]}
        return "I worked around the missing sandbox."

    tactic = _tactic(tmp_path, model, {"activate_proxies": [], "sandbox": {"backend": "docker"}})
    with pytest.raises(SandboxEngineError, match="the container is gone") as info:
        tactic("go")
    assert isinstance(info.value, InfrastructureError) and removed
    session = tactic.last_session
    dialog = session.agents["analyst"].current_dialog
    assert [m.role.value for m in dialog.messages].count("tool") == 1  # only the first cell's output went back
    assert "42" in dialog.messages[3].content
    row = tactic.log_store.get_session(session.session_id)
    assert row.state == "error" and row.error.startswith("SandboxEngineError")
    tactic.log_store.close()


def test_a_browser_tool_that_cannot_launch_chromium_ends_the_call(tmp_path: Path) -> None:
    from lllm.core.agent import Agent
    from lllm.errors import BrowserLaunchError
    from lllm.invokers import ScriptedInvoker
    from lllm.tools.cua import attach

    script = ScriptedInvoker([{"tool_calls": [{"name": "browser_navigate", "arguments": {"url": "http://127.0.0.1:9/"}}]},
                              "I guessed the answer without a browser."])
    agent = Agent(name="browser", system_prompt="You browse.", model="gpt-4o", llm_invoker=script)
    attach(agent, {"allowed_domains": ["127.0.0.1:9"], "executable_path": "/nonexistent/chromium"}, None)
    agent.open("main")
    agent.receive("find the price")
    try:
        with pytest.raises(BrowserLaunchError, match="/nonexistent/chromium"):
            agent.respond()  # the first browser tool call launches Chromium, which is not there
    finally:
        agent.shutdown()
    assert script.steps_remaining == 1  # the model was not told "Error: ..." and asked to go on
    assert not any(m.role.value == "tool" for m in agent.current_dialog.messages)
