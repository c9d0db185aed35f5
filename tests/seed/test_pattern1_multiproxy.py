"""Seed lesson, Pattern 1 (Multi-Proxy Orchestration), as written: three proxies (fmp, fred, exa), the agent
calls query_api_doc("fmp") then run_python turns that use CALL_API, with variables persisting across turns,
output capped at max_output_chars and the 90 s timeout applied. End to end: a Tactic, the scripted model, a
Docker sandbox with no network, the host gateway, and the live proxies pointed at local fakes of the three APIs
(so the API keys stay on the host: the test checks that the kernel cannot see them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from lllm.core.tactic import Tactic
from lllm.core.trace import ApiCallRecord, CellRecord
from lllm.invokers import override
from lllm.invokers.scripted import ScriptedInvoker
from lllm.logging import sqlite_store

pytestmark = pytest.mark.docker

# the seed's config.yaml, as written (model_name comes from `global:`, which the lesson leaves out)
SEED_CONFIG = """
agent_configs:
  - name: research_analyst
    system_prompt: >
      You are a financial research analyst. You have access to market data,
      macroeconomic indicators, and news search. Use them together.
    proxy:
      activate_proxies: [fmp, fred, exa]   # three proxies loaded
      exec_env: interpreter
      max_output_chars: 8000
      timeout: 90.0
"""

# the agent's typical session, turn by turn, as the lesson writes it
TURN_1 = ("query_api_doc", {"proxy_name": "fmp"})
TURN_2 = '''prices = CALL_API("fmp/price", {"symbol": "AAPL", "period": "1y"})
macro = CALL_API("fred/series", {"series_id": "GDP"})
print(f"Got {len(prices)} price points, latest GDP: {macro[-1]['value']}")'''
TURN_3 = '''news = CALL_API("exa/search", {"query": "Apple earnings outlook 2025", "num_results": 5})
for article in news:
    print(article["title"], article["url"])'''
TURN_4 = '''import os
print(len(prices), len(news), prices[-1]["close"], os.environ.get("FMP_API_KEY"), os.environ.get("EXA_API_KEY"))'''
TURN_5 = '''print("\\n".join(f"{p['date']} {p['close']:.2f} " + "#" * 60 for p in prices * 40))'''


def fake_apis_route(path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
    """Responses of the documented shapes of FMP (stable), FRED and Exa; each checks its key."""
    if path == "/fmp/stable/historical-price-eod/full":
        if headers.get("apikey") != "fmp-test-key":  # FMP takes its key in a header (never in the URL)
            return 401, {"Error Message": "Invalid API KEY."}
        return 200, [{"symbol": query["symbol"], "date": f"2025-06-{d:02d}", "open": 200.0, "high": 202.0,
                      "low": 199.0, "close": 200.0 + d, "volume": 1000 * d, "change": 1.0, "changePercent": 0.5,
                      "vwap": 200.5} for d in range(30, 0, -1)]
    if path == "/fred/series/observations":
        if query.get("api_key") != "fred-test-key":
            return 400, {"error_code": 400, "error_message": "Bad Request. api_key is not registered."}
        return 200, {"observations": [{"realtime_start": "2025-06-30", "realtime_end": "2025-06-30", "date": d,
                                       "value": v} for d, v in (("2024-10-01", "29374.914"),
                                                                ("2025-01-01", "29962.047"))]}
    if path == "/exa/search":
        if headers.get("x-api-key") != "exa-test-key":
            return 401, {"error": "invalid key"}
        return 200, {"requestId": "req-1", "results": [
            {"id": f"r{i}", "title": f"Apple outlook, part {i}", "url": f"https://news.example.com/apple/{i}",
             "publishedDate": "2025-06-01T00:00:00.000Z", "author": "Desk", "text": "Apple said ..."}
            for i in range(body["numResults"])]}
    return 404, {"error": f"no route {path}"}


@pytest.fixture
def fake_apis(fake_api, monkeypatch: pytest.MonkeyPatch):
    api = fake_api(fake_apis_route)
    for name, key, base in (("FMP", "fmp-test-key", f"{api.url}/fmp/stable"), ("FRED", "fred-test-key",
                                                                               f"{api.url}/fred"),
                            ("EXA", "exa-test-key", f"{api.url}/exa")):
        monkeypatch.setenv(f"{name}_API_KEY", key)
        monkeypatch.setenv(f"{name}_BASE_URL", base)
    monkeypatch.delenv("LLLM_PROXY_SOURCE", raising=False)
    return api.requests


class ResearchAnalyst(Tactic):
    name = "seed_pattern1_research"
    agent_group = ["research_analyst"]

    def call(self, task: str, **kwargs: Any) -> str:
        analyst = self.agents["research_analyst"]
        analyst.open("research")
        analyst.receive(task)
        return analyst.respond().content


def run_python(code: str) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}


def test_pattern1_multiproxy_end_to_end(fake_apis, sandbox_image: str, tmp_path, monkeypatch) -> None:
    from lllm.sandbox.notebook import JupyterSession

    timeouts: list[Any] = []
    original_run = JupyterSession.run

    def spy(self, code, *, timeout=...):  # records the timeout each cell was given, and the sandbox default
        timeouts.append((timeout, self.sandbox.cell_timeout, self.sandbox.image))
        return original_run(self, code, timeout=timeout)

    monkeypatch.setattr(JupyterSession, "run", spy)
    config = yaml.safe_load(SEED_CONFIG)
    config["global"] = {"model_name": "gpt-4o"}
    config["workdir"] = str(tmp_path / "runs")
    config["agent_configs"][0]["proxy"]["sandbox"] = {"image": sandbox_image}
    script = ScriptedInvoker([
        {"content": None, "tool_calls": [{"name": TURN_1[0], "arguments": TURN_1[1]}]},
        run_python(TURN_2), run_python(TURN_3), run_python(TURN_4), run_python(TURN_5),
        "Apple's price trend, GDP growth and the news point the same way.",
    ])
    store = sqlite_store(tmp_path / "runs.db")
    with override(script):
        tactic = ResearchAnalyst(config, log_store=store)
        answer = tactic("How do Apple's prices, US GDP and the news line up?")
    script.assert_complete()
    assert answer.startswith("Apple's price trend")

    session = tactic.last_session
    analyst = session.agents["research_analyst"]
    tools = [m for m in analyst.dialogs["research"].messages if m.role == "tool"]
    doc, turn2, turn3, turn4, turn5 = (m.content for m in tools)

    # Turn 1: discover what the market data proxy exposes -> endpoint list: price, earnings, balance-sheet, ...
    for endpoint in ("### fmp/price", "### fmp/earnings", "### fmp/balance-sheet"):
        assert endpoint in doc
    assert "symbol (str, required)" in doc
    # Turn 2: pull the data it needs
    assert turn2.strip() == "Got 30 price points, latest GDP: 29962.047"
    # Turn 3: cross-reference with news
    assert turn3.splitlines() == [f"Apple outlook, part {i} https://news.example.com/apple/{i}" for i in range(5)]
    # variables persist across turns; the keys stay on the host
    assert turn4.split() == ["30", "5", "230.0", "None", "None"]
    # output capped at max_output_chars, with the indicator where it was cut
    assert len(turn5) <= 8000 and "... (output truncated)" in turn5 and turn5.startswith("2025-06-01 201.00")
    # the 90 s timeout applied to every cell, in a Docker sandbox of the test image
    assert timeouts == [(90.0, 90.0, sandbox_image)] * 4

    # the proxies ran on the host against the fakes, with their keys
    assert [r["path"] for r in fake_apis] == ["/fmp/stable/historical-price-eod/full", "/fred/series/observations",
                                              "/exa/search"]
    # the system prompt got the compact directory, not the docs
    system = analyst.dialogs["research"].messages[0].content
    assert system.startswith("You are a financial research analyst.")
    assert "- exa (Exa web search): search, contents" in system and "symbol" not in system

    # the log store has every cell and every CALL_API of the session
    detail = store.load_session(session.session_id)
    calls = [r for r in detail.records if isinstance(r, ApiCallRecord)]
    cells = [r for r in detail.records if isinstance(r, CellRecord)]
    assert [(c.proxy, c.endpoint, c.status) for c in calls] == [
        ("fmp", "price", "ok"), ("fred", "series", "ok"), ("exa", "search", "ok")]
    assert all(c.response_bytes > 0 and c.latency_s > 0 for c in calls)
    assert [c.status for c in cells] == ["ok"] * 4 and cells[0].code == TURN_2
    assert cells[3].truncated and cells[3].output_chars > 8000

    # the sandbox was removed when the call ended; the notebook stays
    sandbox = analyst.proxy_tools
    assert sandbox.sandbox is None and sandbox.notebook_path.exists()
    nb = json.loads(sandbox.notebook_path.read_text())
    assert sum(c["cell_type"] == "code" for c in nb["cells"]) == 4
