"""Dialogs, tabs and pop-ups, uploads and downloads, screenshots as images (only the last N kept), and the
pointer/keyboard actions, in real headless Chromium."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cua_helpers import call, ref_of
from fixture_server import REPORT_CSV
from lllm.errors import UsageError
from lllm.tools.cua import BrowserSession

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(("policy", "button", "result", "said"), [
    ("dismiss", "Delete all", "kept", "'Delete everything?'; it was dismissed"),
    ("accept", "Delete all", "deleted", "'Delete everything?'; it was accepted"),
    ("accept", "Ask name", '"name: Bob"', "prompt dialog said 'Your name?'"),
])
def test_dialogs_follow_the_policy_and_are_reported(server: Any, cu_block: dict[str, Any], policy: str, button: str,
                                                    result: str, said: str) -> None:
    with BrowserSession({**cu_block, "dialogs": policy, "prompt_text": "Bob"}) as s:
        s.perform("navigate", url=server.url("dialog.html"))
        s.perform("click", selector=f"text={button}")
        obs = s.observe()
    assert f'paragraph [ref=' in obs.text and f": {result}" in obs.text
    assert said in obs.text
    assert s.dialogs[-1]["action"] == ("dismissed" if policy == "dismiss" else "accepted")


def test_new_tab_link_popup_and_tab_actions(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("newtab.html")}
    steps = [
        lambda obs: call("browser_click", ref=ref_of(obs, r'link "Open the price list')),
        call("browser_tabs"),
        call("browser_switch_tab", index=0),
        lambda obs: call("browser_click", ref=ref_of(obs, r'button "Open pop-up"')),
        call("browser_close_tab"),
        call("browser_open_tab", url=server.url("form.html")),
        "The coupon code is SPRING24.",
    ]
    answer, plan, tactic, _ = run_tactic(steps, block)
    link, listing, switched, popup, closed, opened = plan.seen[1:7]
    assert "opened tab 1" in link and "it is now the current tab" in link and 'cell "Red teapot"' in link
    assert "[0] 'Links to other tabs'" in listing and "[1] 'Price list'" in listing and "(current)" in listing
    assert switched.startswith("switched to tab 0") and 'heading "Other tabs"' in switched
    assert "opened tab 2" in popup and "Coupon code: SPRING24" in popup
    assert closed.startswith("closed tab 2") and "Tab 1 of 2" in closed
    assert opened.startswith("opened tab 2 at") and 'textbox "Name"' in opened
    script = tactic.last_session.metadata["browser_replay"]
    assert "page = _wait_for_tab(context, 1)" in script and 'page = context.pages[0]' in script


def test_upload_from_the_workspace_and_download_into_it(run_tactic: Any, server: Any, cu_block: dict[str, Any],
                                                        tmp_path: Path) -> None:
    block = {**cu_block, "start_url": server.url("upload.html")}
    workdir_holder: dict[str, Path] = {}

    def upload(obs: str) -> Any:
        # the agent's workspace is the tactic call's workdir: put a file there as run_python would
        runs = tmp_path / "runs"
        workdir = next(p for p in runs.iterdir() if p.is_dir())
        workdir_holder["dir"] = workdir
        (workdir / "cv.txt").write_text("Ada's CV")
        return call("browser_upload", ref=ref_of(obs, r'button "CV file"'), paths=["cv.txt"])

    steps = [
        upload,
        lambda obs: call("browser_click", ref=ref_of(obs, r'button "Upload"')),
        call("browser_upload", selector="input", paths=["../../escape.txt"]),
        call("browser_navigate", url=server.url("download.html")),
        lambda obs: call("browser_click", ref=ref_of(obs, r'link "Download the quarterly report"')),
        "Uploaded the CV and downloaded the report.",
    ]
    _, plan, _, _ = run_tactic(steps, block)
    assert server.uploads == [("cv", "cv.txt", b"Ada's CV")]
    assert plan.seen[3].startswith("Error: UsageError: upload path '../../escape.txt' is outside the agent's workspace")
    assert "downloaded report.csv (30 bytes) to downloads/report.csv" in plan.seen[5]
    assert (workdir_holder["dir"] / "downloads" / "report.csv").read_bytes() == REPORT_CSV


def test_navigating_to_a_file_downloads_it(server: Any, cu_block: dict[str, Any], tmp_path: Path) -> None:
    with BrowserSession(cu_block, workdir=tmp_path) as s:
        outcome = s.perform("navigate", url=server.url("download/report.csv"))
        obs = s.observe()
    assert outcome.message.endswith("(the URL is a file: it started a download)")
    assert "downloaded report.csv (30 bytes)" in obs.text
    assert (tmp_path / "downloads" / "report.csv").read_bytes() == REPORT_CSV


def test_screenshots_are_images_and_only_the_last_n_stay(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("table.html"), "screenshots_kept": 2}
    steps = [call("browser_screenshot"), call("browser_screenshot"), call("browser_screenshot"),
             call("browser_snapshot"), "I looked three times."]
    _, plan, tactic, _ = run_tactic(steps, block)
    calls = tactic.llm_invoker.calls

    def images(messages: list[dict[str, Any]]) -> list[str]:
        return [part["image_url"]["url"] for m in messages if isinstance(m["content"], list)
                for part in m["content"] if part.get("type") == "image_url"]

    assert [len(images(c.messages)) for c in calls] == [0, 1, 2, 2, 2]
    assert all(url.startswith("data:image/png;base64,") for url in images(calls[-1].messages))
    notes = [m for m in calls[-1].messages if m["role"] == "user" and "older screenshot was removed" in str(m["content"])]
    assert len(notes) == 1
    assert "a screenshot of the viewport follows" in plan.seen[1]


def test_pointer_and_keyboard_actions(server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("widgets.html"))
        assert 'link "Price list"' not in s.observe().text
        s.perform("hover", selector="text=Account menu")
        assert 'link "Price list"' in s.observe().text
        s.perform("press", keys="Control+A", selector="#notes")
        s.perform("type_text", selector="#notes", text="new", clear=False)
        s.perform("press", keys="Control+k")
        s.perform("drag", selector="#item", to_selector="#zone")
        s.perform("double_click", selector="text=Double-click me")
        s.perform("click", selector="text=Make report")
        s.perform("wait", text="Report ready")
        obs = s.observe().text
        assert 'textbox "Notes" [ref=' in obs and ": new" in obs
        assert "Control+K pressed" in obs and "dropped: mug" in obs and 'button "double-clicked"' in obs
        assert "Report ready" in obs
        s.perform("scroll", direction="down", amount=900)
        assert "scrolled 900" in s.observe().title
        s.perform("scroll", selector="#bottom")
        s.perform("click", x=5, y=5)
        with pytest.raises(UsageError, match="outside the 1280x800 viewport"):
            s.perform("click", x=5000, y=5)
        with pytest.raises(UsageError, match="exactly one target"):
            s.perform("click", ref="e1", selector="h1")
        s.perform("navigate", url=server.url("table.html"))
        s.perform("back")
        assert s.observe().url.endswith("/widgets.html")
        s.perform("forward")
        s.perform("reload")
        assert s.observe().url.endswith("/table.html")
    codes = [line for entry in s.log for line in entry.code]
    for expected in ('page.locator("#notes").focus()', 'page.keyboard.press("Control+A")',
                     'page.locator("#item").drag_to(page.locator("#zone"))', "page.mouse.wheel(0, 900)",
                     'page.get_by_text("Report ready").first.wait_for(state="visible")', "page.go_back()",
                     "page.mouse.click(5.0, 5.0)"):
        assert expected in codes


def test_session_used_from_several_threads(server: Any, cu_block: dict[str, Any]) -> None:
    """Playwright's sync API is bound to one thread; sessions are not: calls are marshalled to the driver."""
    s = BrowserSession(cu_block).start()
    errors: list[BaseException] = []

    def worker(page: str) -> None:
        try:
            s.perform("open_tab", url=server.url(page))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in ("form.html", "table.html", "dropdown.html")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    assert errors == [] and len(s.log) == 3 and all(e.status == "ok" for e in s.log)
    with pytest.raises(UsageError, match="closed"):
        s.perform("reload")
