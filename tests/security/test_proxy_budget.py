"""Issue 9, item 7: one cell must not spend the host's API quota unchecked.

A live keyed proxy (FMP, its key on the host, its API faked on loopback) serves a real container through the
`proxy:` block. Every session has a budget per proxy (calls, and cost where the proxy declares a price): a low
default for live keyed proxies, configurable in the block; past it, calls are refused before they reach the
upstream with a clear CALL_API error of its own type, recorded once (a tallied record), not a row a call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lllm.core.agent import Agent
from lllm.core.config import AgentBuildContext
from lllm.invokers.scripted import ScriptedInvoker
from lllm.tools.code import attach

pytestmark = pytest.mark.docker

LOOP = """
import json
ok, refused = 0, []
for i in range({n}):
    try:
        CALL_API("fmp/quote", {{"symbol": "AAPL"}})
        ok += 1
    except CallAPIError as e:
        refused.append([e.type, e.message])
print(json.dumps({{"ok": ok, "refused": len(refused), "first": refused[0] if refused else None,
                  "types": sorted({{t for t, _ in refused}})}}))
"""


def quote_route(path: str, q: dict, h: dict, body: Any) -> tuple[int, Any]:
    return 200, [{"symbol": "AAPL", "price": 201.08}]


def run_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_url: str, image: str, block: dict,
             n: int) -> tuple[dict, list]:
    monkeypatch.setenv("FMP_API_KEY", "host-only-key-0123456789")
    monkeypatch.setenv("FMP_BASE_URL", api_url + "/stable")
    records: list = []
    agent = Agent(name="spender", system_prompt="You spend.", model="scripted", llm_invoker=ScriptedInvoker([]))
    ctx = AgentBuildContext(session_id="budget", tracer=records.append, workdir_base=tmp_path)
    tools = attach(agent, {"activate_proxies": ["fmp"], "source": "live", "timeout": 60.0,
                           "sandbox": {"backend": "docker", "image": image}, **block}, ctx)
    try:
        out = tools.run(LOOP.format(n=n))
    finally:
        agent.shutdown()
    return json.loads(str(out).strip().splitlines()[-1]), records


def test_a_configured_budget_stops_calls_before_the_upstream(sandbox_image: str, fake_api, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    api = fake_api(quote_route)
    out, records = run_loop(tmp_path, monkeypatch, api.url, sandbox_image, {"budgets": {"fmp": {"calls": 15}}}, 60)
    assert len(api.requests) == 15  # before the fix: 60 upstream calls, nothing refused
    assert out["ok"] == 15 and out["refused"] == 45 and out["types"] == ["ApiBudgetExceeded"]
    message = out["first"][1]
    assert "fmp" in message and "15 calls" in message and "proxy.budgets" in message
    over = [r for r in records if getattr(r, "status", None) == "over_budget"]
    assert len(over) == 1 and over[0].count == 45  # recorded once, with how many were refused
    assert len([r for r in records if getattr(r, "status", None) == "ok" and getattr(r, "endpoint", None) == "quote"]) == 15


def test_live_keyed_proxies_have_a_low_default_budget(sandbox_image: str, fake_api, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.proxies.manager import DEFAULT_LIVE_BUDGET

    api = fake_api(quote_route)
    calls = DEFAULT_LIVE_BUDGET.calls
    assert calls is not None and calls <= 250
    out, _ = run_loop(tmp_path, monkeypatch, api.url, sandbox_image, {}, calls + 40)
    assert len(api.requests) == calls and out["ok"] == calls and out["refused"] == 40
