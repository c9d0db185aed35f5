"""The run explorer in real Chromium (Playwright), served by the real command (`lllm logs serve --port 0`), over a
log made only by real producers: the demo (local kernel backend: its tool calls, cells, CALL_APIs as the gateway
recorded them, notebook), a forking tactic (the dialog tree, a simulated price for the cost chart), a
computer-use run against the browser tests' fixture pages (browser steps with their screenshots) and an agent
whose 200 run_python calls make a 200-cell session. No record is written by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.logging import sqlite_store
from lllm.tools.cua.config import LAUNCH_ARGS

pytestmark = pytest.mark.browser

BROWSER_TESTS = Path(__file__).resolve().parents[1] / "browser"
VIEWPORT = {"width": 640, "height": 400}


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
        a.fork("branch_0", "branch_0_deep")
        a.receive("And the dollar weakens.")
        a.respond()
        a.fork("base", "branch_1")
        a.receive("Now assume rates rise.")
        a.respond()
        return out


class Coder(Tactic, register=False):
    name = "coder"
    agent_group = ["analyst"]

    def call(self, task: str, **kwargs: object) -> str:
        a = self.agents["analyst"]
        a.open("main")
        a.receive(task)
        return a.respond().content


@pytest.fixture(scope="module")
def browser(require_browser: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=require_browser, args=list(LAUNCH_ARGS))
        yield chromium
        chromium.close()


def computer_use_run(db: Path, workdir: Path) -> str:
    """A computer-use session on the browser tests' contact form: type a name, send; its id."""
    sys.path.insert(0, str(BROWSER_TESTS))
    from fixture_server import FixtureServer

    from lllm.tools.cua.tactic import ComputerUseTactic

    server = FixtureServer().start()
    try:
        steps = [{"content": None, "tool_calls": [{"name": "browser_type", "arguments": {
                     "selector": "input[name=name]", "text": "Ada Lovelace"}}]},
                 {"content": None, "tool_calls": [{"name": "browser_click", "arguments": {"selector": "button"}}]},
                 "Sent the contact form."]
        block = {"start_url": server.url("form.html"), "allowed_domains": [f"127.0.0.1:{server.port}"],
                 "viewport": VIEWPORT, "action_timeout_s": 10, "navigation_timeout_s": 15}
        config = {"invoker": "scripted", "invoker_config": {"steps": steps}, "workdir": str(workdir),
                  "agent_configs": [{"name": "browser", "model_name": "gpt-4o", "system_prompt": "You use a browser.",
                                     "computer_use": block}]}
        store = sqlite_store(db)
        try:
            session = ComputerUseTactic(config, log_store=store)("Send the contact form as Ada Lovelace",
                                                                 return_session=True)
        finally:
            store.close()
        assert server.posts_to("contact"), "the form was not sent"
        return str(session.session_id)
    finally:
        server.close()


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[dict[str, Any]]:
    from lllm.demo import run_demo

    tmp = tmp_path_factory.mktemp("explorer")
    db = tmp / "demo.db"
    demo = run_demo(backend="local", db=db, workdir=tmp / "runs", out=open(tmp / "demo.txt", "w"))  # noqa: SIM115
    store = sqlite_store(db)
    config = {"tactic_type": "forker", "invoker": "scripted",
              "invoker_config": {"responder": lambda messages: f"answer to: {messages[-1]['content']}",
                                 "input_price": 2.5, "output_price": 10.0},  # a simulated price: the chart has bars
              "agent_configs": [{"name": "analyst", "model_name": "gpt-4o-mini", "system_prompt": "You analyse."}]}
    forked = Forker(config, log_store=store, runtime=Runtime("explorer-browser"))(
        "What do rates do to AAPL?", tags={"job": "forks"}, return_session=True)
    cells = [{"name": "run_python", "arguments": {"code": f"x = {i}\nprint('\\n'.join(f'row {{k}}: {{x * 2}}' "
                                                          "for k in range(20)))"}} for i in range(200)]
    cells[0]["arguments"]["code"] = ("from IPython.display import SVG, display\ndisplay(SVG('<svg xmlns=\"http://www."
                                     "w3.org/2000/svg\" width=\"40\" height=\"30\"><rect width=\"40\" height=\"30\" "
                                     "fill=\"teal\"/></svg>'))")
    config = {"invoker": "scripted", "invoker_config": {"steps": [{"content": None, "tool_calls": cells}, "done"]},
              "workdir": str(tmp / "runs"),
              "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You compute.",
                                 "proxy": {"activate_proxies": [], "sandbox": {"backend": "local"}}}]}
    big = Coder(config, log_store=store, runtime=Runtime("explorer-big"))("Print 200 tables", return_session=True)
    store.close()
    browsed = computer_use_run(db, tmp / "runs")
    proc = subprocess.Popen([sys.executable, "-m", "lllm.cli", "logs", "serve", "--db", str(db), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    try:
        yield {"url": match.group(1), "demo": demo.session_id, "forked": forked.session_id, "db": db,
               "big": big.session_id, "browsed": browsed}
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def page(browser: Any, explorer: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context()
    outside: list[str] = []

    def only_loopback(route: Any) -> None:  # the explorer must need nothing from the internet
        if route.request.url.startswith(explorer["url"]) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert outside == [], f"the explorer asked for outside resources: {outside}"


def test_from_the_sessions_page_to_the_demos_code_output_and_params(page: Any,
                                                                    explorer: dict[str, Any]) -> None:
    page.goto(explorer["url"])
    row = page.locator("tr", has=page.locator(f"a:text('{explorer['demo'][:12]}')"))
    assert "research" in row.inner_text() and "ok" in row.inner_text()
    row.locator("a.sid").click()
    page.wait_for_url(re.compile(r"/-/lllm/session/"))
    assert explorer["demo"] in page.locator("h1").inner_text()
    # the run_python code and what it printed (from the Agent's tool-call records)
    tool = page.locator(".item.tool", has=page.locator("pre.code:has-text('CALL_API(\"fmp/price\"')"))
    # (text_content: items off screen are not laid out, so their innerText is empty until scrolled to)
    assert "prices = CALL_API(\"fmp/price\", {\"symbol\": \"AAPL\", \"period\": \"1y\"})" in tool.locator(
        "pre.code").text_content()
    assert "Got 261 price points, latest GDP: 29962.0" in tool.locator("pre.result").text_content()
    # what ran inside that tool call is shown inside it: its cell (the code not repeated) and its two CALL_APIs
    assert tool.locator(".inside .item.cell").count() == 1 and tool.locator(".inside .item.cell pre.code").count() == 0
    assert tool.locator(".inside .item.api b").all_text_contents() == ["fmp/price", "fred/series"]
    # a CALL_API's params and answer
    api = page.locator(".item.api", has=page.locator("pre.params:has-text('AAPL')"))
    assert '"period": "1y"' in api.locator("pre.params").text_content()
    assert '"close"' in api.locator("pre.answer").text_content()  # the demo's own call, as the gateway recorded it
    # the timeline holds every kind the run produced
    kinds = set(page.locator(".tl-kind").all_inner_texts())
    assert {"model_call", "tool_call", "cell", "api_call", "agent_call"} <= kinds
    # the notebook can be downloaded
    with page.expect_download() as download:
        page.locator("a.notebook").first.click()
    assert download.value.suggested_filename.endswith(".ipynb")


def test_a_browser_step_shows_its_page_and_screenshot(page: Any, explorer: dict[str, Any]) -> None:
    page.goto(explorer["url"] + f"-/lllm/session/{explorer['browsed']}")
    steps = page.locator(".item.browser")
    assert steps.count() == 3  # the start page, typing the name, sending the form
    sent = page.locator("#browser-3")  # numbered in the order they ran
    assert "click" in sent.text_content() and "/submit/contact" in sent.text_content()
    shot = sent.locator("img.screenshot")
    shot.scroll_into_view_if_needed()
    assert shot.evaluate("img => img.complete && img.naturalWidth") == VIEWPORT["width"]
    assert page.locator(".item.tool .inside .item.browser").count() == 2  # typing and sending: inside their tool calls
    kinds = set(page.locator(".tl-kind").all_inner_texts())
    assert {"browser_action", "tool_call", "model_call"} <= kinds


def test_a_forked_dialog_is_drawn_as_a_tree(page: Any, explorer: dict[str, Any]) -> None:
    page.goto(explorer["url"] + f"-/lllm/session/{explorer['forked']}")
    tree = page.locator("ul.tree").first
    assert tree.locator(".tree-node").all_inner_texts() == ["base", "branch_0", "branch_0_deep", "branch_1"]
    # the drawing: branch_0_deep sits under branch_0, which sits under base
    base = tree.locator(":scope > li")
    assert base.locator(":scope > ul > li > a.tree-node").all_inner_texts() == ["branch_0", "branch_1"]
    assert base.locator(":scope > ul > li > ul > li > a.tree-node").all_inner_texts() == ["branch_0_deep"]
    boxes = [tree.locator(f".tree-node:text-is('{n}')").bounding_box() for n in ("base", "branch_0", "branch_0_deep")]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
    page.locator(".tree-node:text-is('branch_0_deep')").click()
    convo = page.locator(".conversation:target")
    assert "And the dollar weakens." in convo.inner_text() and "forked from branch_0" in convo.inner_text()


def test_the_cost_chart_is_drawn(page: Any, explorer: dict[str, Any]) -> None:
    page.goto(explorer["url"])
    page.locator("a:text('Costs')").first.click()
    page.wait_for_url(re.compile(r"/-/lllm/costs$"))
    page.wait_for_function("(document.getElementById('chart-model') || {dataset: {}}).dataset.ready === '1'")
    drawn = page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('chart-model'));
        return {labels: chart.data.labels, cost: chart.data.datasets[0].data,
                painted: document.getElementById('chart-model').toDataURL().length};
    }""")
    assert drawn["labels"] == ["scripted"] and drawn["cost"][0] > 0  # the scripted model answers as "scripted"
    blank = page.evaluate("""() => { const c = document.createElement('canvas');
        const m = document.getElementById('chart-model'); c.width = m.width; c.height = m.height;
        return c.toDataURL().length; }""")
    assert drawn["painted"] > blank * 2  # bars and axes were painted
    assert "job=forks" in page.locator("#table-tag").inner_text()


def test_a_cells_image_is_shown_under_its_tool_call(page: Any, explorer: dict[str, Any]) -> None:
    page.goto(explorer["url"] + f"-/lllm/session/{explorer['big']}")
    image = page.locator("#tool-1 .inside .item.cell img.shot")
    image.scroll_into_view_if_needed()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 40  # the cell's SVG, decoded


def test_a_200_cell_session_page_loads_within_a_second(page: Any, explorer: dict[str, Any]) -> None:
    loads = []
    for _ in range(3):
        page.goto(explorer["url"] + f"-/lllm/session/{explorer['big']}")
        loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
        assert page.locator(".item.cell").count() == 200
    print(f"200-cell session page, load event after: {[round(x) for x in loads]} ms")
    assert min(loads) <= 1000
