"""The session in code, without a tactic: an Agent given the toolset directly, WebSockets through the egress
proxy, refs inside frames, and a browser that dies under a session."""

from __future__ import annotations

from typing import Any

import pytest

from cua_helpers import call, ref_of
from lllm.errors import BrowserError
from lllm.tools.cua import BrowserDriver, BrowserSession, BrowserToolset
from lllm.tools.cua.config import DEFAULT_CHROMIUM, LAUNCH_ARGS

pytestmark = pytest.mark.browser


def test_toolset_given_to_an_agent_in_code(server: Any, cu_block: dict[str, Any]) -> None:
    from lllm import Agent
    from lllm.invokers import build_invoker

    invoker = build_invoker({"invoker": "scripted", "steps": [
        call("browser_navigate", url=server.url("dropdown.html")),
        call("browser_select_option", selector="select", values=["s"]),
        call("browser_click", selector="button"),
        "Saved.",
    ]})
    records: list[Any] = []
    agent = Agent(name="shopper", system_prompt="You use a browser.", model="gpt-4o", llm_invoker=invoker,
                  tracer=records.append)
    toolset = BrowserToolset(BrowserSession(cu_block, tracer=records.append, agent="shopper")).install(agent)
    assert {f.name for f in agent.tools} >= {"browser_navigate", "browser_click", "browser_type", "browser_screenshot"}
    agent.open("main")
    agent.receive("Pick the small size")
    assert agent.respond().content == "Saved."
    invoker.assert_complete()
    assert server.posts_to("dropdown") == [{"size": ["s"]}]
    browser_records = [r for r in records if r.kind == "browser_action"]
    assert [r.action for r in browser_records] == ["navigate", "select_option", "click"]
    assert all(r.agent == "shopper" for r in browser_records)
    tool_schema = next(t for t in invoker.calls[0].tools if t["function"]["name"] == "browser_click")
    assert {"ref", "selector", "x", "y"} <= set(tool_schema["function"]["parameters"]["properties"])
    assert agent.shutdown() == []
    assert toolset.session.state.value == "closed"


def test_websocket_to_a_blocked_origin_is_refused_by_the_proxy(server: Any, blocked_server: Any,
                                                               cu_block: dict[str, Any]) -> None:
    """Playwright routing never sees WebSockets; the egress proxy does."""
    ws_url = blocked_server.origin.replace("http://", "ws://") + "/socket"
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("table.html"))
        state = s.driver.run(lambda: s.page.evaluate(
            """url => new Promise(resolve => {
                 const ws = new WebSocket(url);
                 ws.onopen = () => resolve('open');
                 ws.onerror = () => resolve('error');
                 setTimeout(() => resolve('timeout'), 4000);
               })""", ws_url), timeout=10)
        obs = s.observe()
    assert state == "error"
    assert blocked_server.hits == []
    assert any(str(blocked_server.port) in url for url, _ in s.blocked)
    assert "blocked a request to" in obs.text


def test_refs_inside_a_same_origin_frame(server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("iframe.html"))
        ref = ref_of(s.observe().text, r'heading "A pop-up window"')
        assert ref.startswith("f") and "e" in ref
        outcome = s.perform("hover", ref=ref)
    assert "content_frame" in outcome.code[0] and 'get_by_role("heading", name="A pop-up window")' in outcome.code[0]


def test_a_dead_browser_fails_its_session_and_is_relaunched_for_the_next(server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserDriver(executable_path=DEFAULT_CHROMIUM, args=LAUNCH_ARGS) as driver:
        first = BrowserSession(cu_block, driver=driver).start()
        first.perform("navigate", url=server.url("table.html"))

        async def crash() -> None:
            await (await driver.browser()).close()

        driver.run(crash, timeout=30)
        with pytest.raises(BrowserError):
            first.perform("reload")
        first.close()
        with BrowserSession(cu_block, driver=driver) as second:
            second.perform("navigate", url=server.url("table.html"))
            assert 'cell "Red teapot"' in second.observe().text
        assert driver.launches == 2
