"""The seams a tactic offers other rooms, end to end on the real pieces: an agent config's `proxy:` block is
attached through AGENT_EXTENSIONS with an AgentBuildContext, and the cells and CALL_API calls it makes reach the
log store under the tactic call's session (a local kernel and the offline proxies: no Docker, no network)."""

from __future__ import annotations

from pathlib import Path

from lllm import Tactic
from lllm.logging import sqlite_store


class Analyst(Tactic, register=False):
    name = "unit_ext_analyst"
    agent_group = ["analyst"]

    def call(self, task: str, **kwargs) -> str:
        analyst = self.agents["analyst"]
        analyst.open("main")
        analyst.receive(task)
        return analyst.respond().content


CODE = "r = CALL_API('fmp/price', {'symbol': 'AAPL'})\nprint(type(r).__name__)"


def test_proxy_block_cells_and_api_calls_are_logged_under_the_session(tmp_path: Path) -> None:
    steps = [{"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": CODE}}]},
             "AAPL prices fetched."]
    config = {
        "invoker": "scripted", "invoker_config": {"steps": steps}, "workdir": str(tmp_path),
        "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You analyse markets.",
                           "proxy": {"activate_proxies": ["fmp"], "exec_env": "interpreter", "source": "offline",
                                     "sandbox": {"backend": "local"}}}],
    }
    store = sqlite_store(tmp_path / "runs.db")
    session = Analyst(config, log_store=store)("Fetch AAPL prices", return_session=True)

    assert session.delivery == "AAPL prices fetched." and session.state == "ok"
    detail = store.load_session(session.session_id)
    kinds = [r.kind for r in detail.records]
    assert kinds.count("cell") == 1 and kinds.count("api_call") == 1 and kinds.count("model_call") == 2
    (cell,) = detail.of_kind("cell")
    assert cell.session_id == session.session_id and cell.status == "ok" and cell.code == CODE
    (api,) = detail.of_kind("api_call")
    assert (api.proxy, api.endpoint, api.status) == ("fmp", "price", "ok")
    assert detail.session.last_event == "ended ok"
    assert (tmp_path / session.session_id / "analyst.ipynb").is_file()  # ctx.workdir: one folder per call
    tool_message = [m for m in detail.dialogs[0].to_dialog().messages if m.role.value == "tool"]
    assert tool_message and "list" in tool_message[0].content
