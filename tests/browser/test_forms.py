"""Agents fill forms, walk a checkout, read a table and pick from a dropdown in real headless Chromium, driven
by the scripted model through the Agent and ComputerUseTactic; asserted on the server's records and on what
the model was shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cua_helpers import all_sent_text, call, ref_of

pytestmark = pytest.mark.browser


def test_contact_form_with_secret(run_tactic: Any, server: Any, cu_block: dict[str, Any], tmp_path: Path) -> None:
    block = {**cu_block, "start_url": server.url("form.html"), "secrets": {"PW": "hunter2-secret"}}
    steps = [
        lambda obs: call("browser_type", ref=ref_of(obs, r'textbox "Name"'), text="Ada Lovelace"),
        lambda obs: call("browser_type", ref=ref_of(obs, r'textbox "Email"'), text="ada@example.org"),
        lambda obs: call("browser_type", ref=ref_of(obs, r'textbox "Password"'), text="{{secret:PW}}"),
        lambda obs: call("browser_click", ref=ref_of(obs, r'checkbox "Send me the newsletter"')),
        lambda obs: call("browser_click", ref=ref_of(obs, r'button "Send"')),
        "Sent the contact form.",
    ]
    answer, plan, tactic, store = run_tactic(steps, block)
    assert answer == "Sent the contact form."
    # the page's side effect, seen by the server
    assert server.posts_to("contact") == [{"name": ["Ada Lovelace"], "email": ["ada@example.org"],
                                           "password": ["hunter2-secret"], "message": [""], "newsletter": ["yes"]}]
    # what the model saw: the start page with refs first, the thanks page last, never the secret
    assert 'heading "Contact us"' in plan.seen[0] and "[ref=e" in plan.seen[0]
    assert "Thanks, received" in plan.seen[-1]
    sent = all_sent_text(tactic)
    assert "hunter2-secret" not in sent
    assert "{{secret:PW}}" in sent
    # the log store has every action with its target, status, duration and code
    session = store.load_session(tactic.last_session.session_id)
    actions = session.of_kind("browser_action")
    assert [a.action for a in actions] == ["navigate", "type_text", "type_text", "type_text", "click", "click"]
    assert all(a.status == "ok" and a.duration_s > 0 and a.code for a in actions)
    assert actions[0].target == server.url("form.html") and actions[1].target.startswith("ref=e")
    assert 'get_by_role("button", name="Send").click()' in actions[-1].code
    assert actions[-1].result.startswith("clicked ref=e") and actions[3].result.startswith("typed '{{secret:PW}}'")
    assert 'os.environ["LLLM_SECRET_PW"]' in actions[3].code
    assert "hunter2-secret" not in json.dumps([a.model_dump() for a in actions])
    # the replay script is kept on the call session, and it replays the session without a model
    script = tactic.last_session.metadata["browser_replay"]
    assert "hunter2-secret" not in script
    path = tmp_path / "replay.py"
    path.write_text(script)
    env = {**os.environ, "LLLM_SECRET_PW": "replayed-pw"}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert server.posts_to("contact")[-1]["password"] == ["replayed-pw"]
    assert server.posts_to("contact")[-1]["name"] == ["Ada Lovelace"]
    # the same script comes back from the log store alone: `lllm browser replay SESSION --db ...`
    from lllm.cli import main as lllm_main

    out_file = tmp_path / "from_log.py"
    assert lllm_main(["browser", "replay", tactic.last_session.session_id, "--db", str(tmp_path / "log.db"),
                      "-o", str(out_file)]) == 0
    from_log = out_file.read_text()
    body = lambda text: text[text.index("def run(context):"):text.index("def main():")]  # noqa: E731
    assert body(from_log) == body(script)


def test_multi_step_checkout(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("checkout1.html"), "secrets": {"CARD": "4111111111111111"}}
    steps = [
        lambda obs: call("browser_type", ref=ref_of(obs, r'spinbutton "Quantity"'), text="3"),
        lambda obs: call("browser_click", ref=ref_of(obs, r'button "Continue to shipping"')),
        lambda obs: call("browser_type", ref=ref_of(obs, r'textbox "Address"'), text="1 Rue de Rivoli, Paris"),
        lambda obs: call("browser_select_option", ref=ref_of(obs, r'combobox "Country"'), values=["France"]),
        lambda obs: call("browser_type", ref=ref_of(obs, r'textbox "Card number"'), text="{{secret:CARD}}"),
        lambda obs: call("browser_click", ref=ref_of(obs, r'button "Pay now"')),
        "Order A-1042 is confirmed.",
    ]
    answer, plan, tactic, _ = run_tactic(steps, block, task="Buy three blue mugs, ship to Paris")
    assert answer == "Order A-1042 is confirmed."
    assert server.posts_to("checkout-1") == [{"quantity": ["3"]}]
    assert server.posts_to("checkout-2") == [{"address": ["1 Rue de Rivoli, Paris"], "country": ["fr"],
                                              "card": ["4111111111111111"]}]
    assert "Step 2 of 3" in plan.seen[2]
    assert "Order number A-1042 is confirmed." in plan.seen[-1]
    assert "Buy three blue mugs" in plan.seen[0]
    assert "4111111111111111" not in all_sent_text(tactic)


def test_read_a_table(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("table.html")}
    steps = [call("browser_find_text", text="teapot"), "The red teapot costs 34.00 and 3 are in stock."]
    answer, plan, tactic, _ = run_tactic(steps, block, task="What does the red teapot cost?")
    assert answer.startswith("The red teapot costs 34.00")
    first = plan.seen[0]
    for cell in ('columnheader "Price"', 'cell "Red teapot"', 'cell "34.00"', 'cell "120"'):
        assert cell in first
    assert 'cell "Red teapot"' in plan.seen[1] and "line(s) contain 'teapot'" in plan.seen[1]


def test_dropdown_with_fixed_steps(server: Any, cu_block: dict[str, Any], tmp_path: Path) -> None:
    """Plain `steps` (no responder): refs of a fresh page are stable, so a fixed script works."""
    from lllm.tools.cua.tactic import ComputerUseTactic

    config = {
        "invoker": "scripted",
        "invoker_config": {"steps": [
            call("browser_select_option", ref="e5", values=["Large"]),
            call("browser_click", selector="text=Save size"),
            "Saved size Large.",
        ]},
        "workdir": str(tmp_path),
        "agent_configs": [{"name": "browser", "model_name": "gpt-4o", "system_prompt": "You operate a browser.",
                           "computer_use": {**cu_block, "start_url": server.url("dropdown.html")}}],
    }
    tactic = ComputerUseTactic(config)
    assert tactic("Choose the large size") == "Saved size Large."
    tactic.llm_invoker.assert_complete()
    assert server.posts_to("dropdown") == [{"size": ["l"]}]
    first_request = tactic.llm_invoker.calls[0].messages
    assert 'combobox "Size" [ref=e5]' in first_request[-1]["content"]
    assert 'option "Medium" [selected]' in first_request[-1]["content"]
    after_select = tactic.llm_invoker.calls[1].messages[-1]["content"]
    assert "selected ['Large']" in after_select and 'option "Large" [selected]' in after_select


def test_two_agents_in_a_batch_use_the_browser_from_worker_threads(server: Any, cu_block: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    from lllm.tools.cua.tactic import ComputerUseTactic

    def responder(messages: list[dict[str, Any]]) -> Any:
        last = messages[-1]["content"]
        task = messages[1]["content"]
        who = "Grace" if "Grace" in task else "Alan"
        if messages[-1]["role"] == "user":
            return call("browser_type", ref=ref_of(last, r'textbox "Name"'), text=who)
        if "typed" in last:
            return call("browser_click", ref=ref_of(last, r'button "Send"'))
        return f"sent for {who}"

    config = {
        "invoker": "scripted",
        "invoker_config": {"responder": responder},
        "workdir": str(tmp_path),
        "agent_configs": [{"name": "browser", "model_name": "gpt-4o", "system_prompt": "You operate a browser.",
                           "computer_use": {**cu_block, "start_url": server.url("form.html")}}],
    }
    results = ComputerUseTactic(config).bcall(["send as Grace", "send as Alan"], max_workers=2)
    assert list(results) == ["sent for Grace", "sent for Alan"]
    assert sorted(p["name"][0] for p in server.posts_to("contact")) == ["Alan", "Grace"]


def test_step_limit_asks_for_the_final_answer(run_tactic: Any, server: Any, cu_block: dict[str, Any]) -> None:
    block = {**cu_block, "start_url": server.url("table.html"), "max_steps": 2}
    steps = [call("browser_snapshot"), call("browser_scroll"), call("browser_reload"), "Stopped at the limit."]
    answer, plan, tactic, store = run_tactic(steps, block)
    assert answer == "Stopped at the limit."
    assert plan.seen[3].startswith("Step limit reached (2 browser actions)")
    assert "at most 2 actions" in plan.seen[0]
    actions = store.load_session(tactic.last_session.session_id).of_kind("browser_action")
    assert [a.action for a in actions] == ["navigate", "scroll"]  # the reload past the limit never ran
