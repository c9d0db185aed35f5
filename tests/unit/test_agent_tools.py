"""The `proxy:` block: run_python / query_api_doc on a real local kernel behind the real gateway (no Docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lllm.core.agent import Agent
from lllm.core.config import AgentBuildContext
from lllm.core.prompt import ToolResult
from lllm.core.trace import ApiCallRecord, CellRecord
from lllm.errors import ConfigError
from lllm.invokers.scripted import ScriptedInvoker
from lllm.tools.code import ProxyConfig, attach


def tool_step(name: str, **arguments: object) -> dict:
    return {"content": None, "tool_calls": [{"name": name, "arguments": arguments}]}


def make_agent(steps: list, tmp_path: Path, block: dict, records: list) -> tuple[Agent, ScriptedInvoker]:
    invoker = ScriptedInvoker(steps)
    agent = Agent(name="analyst", system_prompt="You are an analyst. Task: {task}", model="scripted",
                  llm_invoker=invoker, max_interrupt_steps=8)
    ctx = AgentBuildContext(session_id="sess-1", tracer=records.append, workdir_base=tmp_path)
    attach(agent, block, ctx)
    return agent, invoker


BLOCK = {"activate_proxies": ["fmp", "fred"], "source": "offline", "max_output_chars": 300, "timeout": 3.0,
         "sandbox": {"backend": "local"}}


def test_interpreter_tools_on_a_local_sandbox(tmp_path: Path) -> None:
    records: list = []
    steps = [
        tool_step("query_api_doc", proxy_name="fmp"),
        tool_step("run_python", code='prices = CALL_API("fmp/price", {"symbol": "AAPL", "period": "1m"})\n'
                                     'print(len(prices), prices[-1]["date"])'),
        tool_step("run_python", code='macro = CALL_API("fred/series", {"series_id": "GDP"})\n'
                                     'print("last close", prices[-1]["close"], "GDP", macro[-1]["value"])'),
        tool_step("run_python", code='print("x" * 5000)'),
        tool_step("run_python", code='CALL_API("exa/search", {"query": "x"})'),
        tool_step("run_python", code="import time\ntime.sleep(30)"),
        tool_step("run_python", code="print(type(prices).__name__)"),
        "Done.",
    ]
    agent, invoker = make_agent(steps, tmp_path, BLOCK, records)
    tools = agent.proxy_tools
    assert [f.name for f in agent.tools] == ["query_api_doc", "run_python"]
    agent.open("main", prompt_args={"task": "AAPL vs GDP"})
    system = agent.current_dialog.messages[0].content
    assert "AAPL vs GDP" in system and "## APIs" in system and "- fmp (Financial Modeling Prep" in system
    assert "symbol" not in system  # the directory only; parameters come from query_api_doc
    assert tools.sandbox is None  # nothing started before the first run_python
    agent.receive("Compare.")
    try:
        assert agent.respond().content == "Done."
        results = [m.content for m in agent.current_dialog.messages if m.role == "tool"]
        assert "### fmp/price" in results[0]
        assert results[1].split()[1] == "2025-06-30"
        assert results[2].startswith("last close") and "GDP 29962.0" in results[2]  # variables persisted
        assert len(results[3]) <= 300 and "\n... (output truncated)\n" in results[3] and results[3].startswith("xxx")
        assert "ProxyNotActivated" in results[4] and "'exa' is not activated" in results[4]
        assert results[5].startswith("[timeout: the cell ran past 3s")
        assert results[6].strip() == "list"  # the interrupt kept the variables
        sandbox, session_dir = tools.sandbox, tools.sandbox.session_dir
        assert (session_dir / "gateway.sock").exists()
    finally:
        errors = agent.shutdown()
    assert errors == []
    invoker.assert_complete()
    assert sandbox.state.value == "closed" and not (session_dir / "gateway.sock").exists()
    cells = [r for r in records if isinstance(r, CellRecord)]
    assert [c.status for c in cells] == ["ok", "ok", "ok", "error", "timeout", "ok"]
    assert all(c.agent == "analyst" for c in cells) and cells[2].truncated
    calls = [r for r in records if isinstance(r, ApiCallRecord)]
    assert [(c.proxy, c.endpoint, c.status) for c in calls] == [
        ("fmp", "price", "ok"), ("fred", "series", "ok"), ("exa", "search", "denied")]
    assert all(c.session_id == "sess-1" for c in calls)
    notebook = json.loads(tools.notebook_path.read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert len(code_cells) == 6 and "CALL_API" in "".join(code_cells[0]["source"])
    assert tools.notebook_path.parent == tmp_path / "sess-1"


def test_figures_come_back_as_images(tmp_path: Path) -> None:
    records: list = []
    agent, _ = make_agent([], tmp_path, BLOCK, records)
    code = ("import io\nfrom PIL import Image as PILImage\nfrom IPython.display import Image, display\n"
            "buf = io.BytesIO(); PILImage.new('RGB', (8, 8), 'red').save(buf, 'PNG')\n"
            "display(Image(data=buf.getvalue()))\nprint('drawn')")
    try:
        out = agent.proxy_tools.run(code)
        assert isinstance(out, ToolResult) and len(out.images) == 1
        assert "drawn" in out.content and "image/png" in out.content
    finally:
        agent.shutdown()


def test_the_sandbox_is_removed_when_the_call_fails(tmp_path: Path) -> None:
    records: list = []
    steps = [tool_step("run_python", code="a = 41"), {"error": "api_error", "message": "provider down"}] + [
        {"error": "api_error", "message": "provider down"}] * 5
    agent, _ = make_agent(steps, tmp_path, BLOCK, records)
    agent.open("main", prompt_args={"task": "t"})
    agent.receive("go")
    with pytest.raises(Exception):
        agent.respond()
    sandbox = agent.proxy_tools.sandbox
    assert sandbox is not None and sandbox.state.value == "running"
    agent.shutdown()  # what the tactic does when a call fails
    assert sandbox.state.value == "closed"
    with pytest.raises(Exception, match="sandbox was removed"):
        agent.proxy_tools.run("print(a)")


def test_jupyter_mode_runs_python_cells_from_the_answer(tmp_path: Path) -> None:
    records: list = []
    steps = ["Let me look.\n<python_cell>\nq = CALL_API('fmp/quote', {'symbol': 'NVDA'})\nprint(q['symbol'])\n"
             "</python_cell>", "<python_cell>print(round(q['price']))</python_cell>", "NVDA closed near 158."]
    agent, invoker = make_agent(steps, tmp_path, {**BLOCK, "exec_env": "jupyter"}, records)
    assert [f.name for f in agent.tools] == ["query_api_doc"]
    agent.open("main", prompt_args={"task": "t"})
    agent.receive("How is NVDA?")
    try:
        assert agent.respond().content == "NVDA closed near 158."
        users = [m.content for m in agent.current_dialog.messages if m.role == "user"]
        assert users[-2] == "<cell_output>\nNVDA\n</cell_output>" and users[-1] == "<cell_output>\n158\n</cell_output>"
    finally:
        agent.shutdown()
    invoker.assert_complete()
    cells = json.loads(agent.proxy_tools.notebook_path.read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "markdown", "code", "code"]
    assert "".join(cells[1]["source"]) == "Let me look."


def test_docs_only_mode_and_config_errors(tmp_path: Path) -> None:
    agent, _ = make_agent([], tmp_path, {"activate_proxies": "fred", "exec_env": None, "source": "offline"}, [])
    assert [f.name for f in agent.tools] == ["query_api_doc"]
    assert "### fred/series" in agent.tools[0].run({"proxy_name": "fred"})
    for block, needle in [({"activate_proxies": ["nope"]}, "'nope'"), ({"exec_env": "shell"}, "proxy.exec_env"),
                          ({"max_output_chars": 5}, "proxy.max_output_chars"), ({"sandbox": {"backend": "vm"}}, "backend"),
                          ({"activate_proxy": ["fmp"]}, "activate_proxy"),
                          ({"gateway": {"rate": -1}}, "proxy.gateway"), ({"gateway": {"rates": 5}}, "proxy.gateway"),
                          ({"sandbox": {"limits": {"memory": "lots"}}}, "proxy.sandbox.limits")]:
        with pytest.raises(ConfigError, match=needle):
            make_agent([], tmp_path, block, [])
    assert ProxyConfig().exec_env == "interpreter" and ProxyConfig(activate_proxies="fmp").activate_proxies == ["fmp"]


def test_python_without_apis(tmp_path: Path) -> None:
    agent, _ = make_agent([], tmp_path, {"sandbox": {"backend": "local"}}, [])
    assert [f.name for f in agent.tools] == ["run_python"]
    assert "## Python" in agent.system_prompt.prompt and "CALL_API" not in agent.system_prompt.prompt
    try:
        assert agent.proxy_tools.run("x = 6 * 7\nprint(x)").strip() == "42"
        out = agent.proxy_tools.run("CALL_API('fmp/price', {'symbol': 'AAPL'})")
        assert "ProxyNotActivated" in out and "activated: []" in out
    finally:
        agent.shutdown()


def test_the_model_sees_one_cut_and_every_notice_within_max_output_chars(tmp_path: Path) -> None:
    # The sandbox renders; the tool only adds its status line: one truncation marker, the timeout notice kept.
    from lllm.tools.code import ProxyTools
    from lllm.sandbox._output import OutputCollector

    cfg = ProxyConfig(max_output_chars=500, timeout=3.0)
    tools = ProxyTools(cfg, manager=None, agent_name="a", session_id="s", tracer=None,  # type: ignore[arg-type]
                       workdir=tmp_path)
    out = OutputCollector(max_output_chars=500, max_stored_chars=1000, max_display_bytes=1000)
    out.add("stream", {"name": "stdout", "text": "x" * 5000})
    out.fate.append("the cell ran past its 3s timeout and did not stop within 1s of an interrupt: the kernel was "
                    "killed and restarted, and every variable was lost")
    result = out.finish(status="timeout", duration_s=3.0, timeout_action="restarted", restarted=True)
    text = tools.view(result)
    assert len(text) <= 500
    assert text.startswith("[timeout: the cell ran past 3s; the kernel was restarted")
    assert text.count("... (output truncated)") == 1 and "characters of output omitted" not in text
    assert f"[sandbox: {result.notices[0]}]" in text  # the timeout notice, whole
