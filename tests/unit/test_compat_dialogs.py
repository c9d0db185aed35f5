"""lllm-core's agent and dialog surface, as its docs (Lesson 2, core/agent.md, core/dialog.md) describe it:
`respond(return_session=True)`, `fork(last_n=, first_k=, switch=)`, `active_alias`, `Message.is_function_call`,
`Dialog.overview`/`tree_overview`, and context managers (`DefaultContextManager`, a custom one, the YAML
block)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from lllm import Agent, Tactic
from lllm.core.dialog import ContextManager, DefaultContextManager, Dialog, Message, Roles
from lllm.core.runtime import Runtime
from lllm.errors import ConfigError
from lllm.invokers import ScriptedInvoker


def agent(inv: ScriptedInvoker, **kwargs: Any) -> Agent:
    return Agent(name="assistant", system_prompt="You are helpful.", model="gpt-4o", llm_invoker=inv, **kwargs)


def test_respond_can_return_its_session() -> None:
    inv = ScriptedInvoker([{"content": None, "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, "3"])

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    a = agent(inv, tools=[add])
    a.open("chat")
    a.receive("1 + 2?")
    session = a.respond(return_session=True)  # the session itself; the answer is its delivery
    message = session.delivery
    assert message.content == "3" and session is a.last_session and message is a.current_dialog.tail
    assert session.cost.total_tokens > 0 and len(session.interrupts) == 1
    assert session.state == "success" and session.delivery is message and session.interrupts_count == 1
    calls = [m for m in a.current_dialog.messages if m.is_function_call]
    assert len(calls) == 1 and calls[0].tool_calls[0].name == "add" and not message.is_function_call


def test_fork_keeps_the_last_n_and_can_stay_put() -> None:
    a = agent(ScriptedInvoker([]))
    a.open("planning")
    for i in range(4):
        a.receive(f"note {i}")
    child = a.fork("planning", "alt", last_n=2, switch=False)
    assert a.active_alias == a.current_alias == "planning"
    assert [m.content for m in child.messages] == ["You are helpful.", "note 2", "note 3"]
    assert child.parent is a.dialogs["planning"] and child.metadata["fork"] == {"last_n": 2, "first_k": 1}
    a.fork("planning", "full")
    assert a.active_alias == "full" and len(a.current_dialog) == 5


def test_overview_and_tree_overview() -> None:
    d = Dialog(name="main")
    d.append(Message(role=Roles.SYSTEM, content="You are helpful."))
    d.append(Message(role=Roles.USER, content="x" * 150))
    d.append(Message(role=Roles.ASSISTANT, content="ok", name="assistant"))
    assert d.overview() == ("[0. system (system)]: You are helpful.\n\n"
                            f"[1. user (user)]: {'x' * 100}...\n\n[2. assistant (assistant)]: ok")
    out = io.StringIO()
    assert d.overview(remove_tail=True, max_length=3, stream=out) == (
        "[0. system (system)]: You...\n\n[1. user (user)]: xxx...")
    assert out.getvalue().endswith("xxx...\n")
    d.fork(name="b1").fork(name="b2", last_n=1)
    lines = d.tree_overview().splitlines()
    assert lines[0] == f"[{d.id[:8]}] name=main msgs=3 split@None"
    assert lines[1].startswith("  └─ [") and lines[1].endswith("name=b1 msgs=3 split@3")
    assert lines[2].startswith("    └─ [") and lines[2].endswith("name=b2 msgs=2 split@3 (last_n=1, first_k=1)")


# -- context managers ----------------------------------------------------------------------------------------


def long_dialog_agent(inv: ScriptedInvoker, cm: Any) -> Agent:
    a = agent(inv, context_manager=cm)
    a.open("chat")
    for i in range(6):
        a.receive(f"message {i}: " + "word " * 400)
    return a


def test_the_default_manager_keeps_the_system_prompt_and_the_latest_messages() -> None:
    inv = ScriptedInvoker(["fine"])
    cm = DefaultContextManager("gpt-4o", max_tokens=1400)
    a = long_dialog_agent(inv, cm)
    assert a.respond().content == "fine"
    sent = inv.calls[0].messages
    assert sent[0]["content"] == "You are helpful." and sent[-1]["content"].startswith("message 5:")
    assert len(sent) < 7 and cm.count(sent) <= cm.budget
    border = sent[1]["content"]
    assert border.startswith("[...earlier content truncated...]\n") and border.endswith("word ")
    assert len(a.current_dialog) == 8  # the dialog itself keeps everything (and the answer)
    assert a.last_session.context == [{"messages": 7, "sent": len(sent)}]
    assert a.last_session.detail()["context"] == a.last_session.context


def test_a_big_enough_window_sends_everything() -> None:
    inv = ScriptedInvoker(["fine"])
    a = long_dialog_agent(inv, DefaultContextManager("gpt-4o"))  # litellm's input window: 128,000 tokens
    a.respond()
    assert len(inv.calls[0].messages) == 7 and a.last_session.context == []
    assert DefaultContextManager("gpt-4o").max_tokens == 128_000
    assert DefaultContextManager("no-such-model").budget == 4096 - 1024  # small window: a quarter as buffer


def test_a_tool_answer_never_goes_without_its_call() -> None:
    inv = ScriptedInvoker([{"content": None, "tool_calls": [{"name": "big", "arguments": {}}]}, "done"])

    def big() -> str:
        """Return a lot."""
        return "row " * 2000

    a = agent(inv, tools=[big], context_manager=DefaultContextManager("gpt-4o", max_tokens=1200))
    a.open("chat")
    a.receive("go")
    a.respond()
    # the tool answer does not fit, so it goes with its call (a tool message without one is refused by the API)
    assert [m["role"] for m in inv.calls[1].messages] == ["system"]
    assert [m.role.value for m in a.current_dialog.messages] == ["system", "user", "assistant", "tool", "assistant"]


class RollingWindow(ContextManager):
    name = "rolling_window"

    def __init__(self, model_name: str, keep_last: int = 2) -> None:
        self.model_name = model_name
        self.keep_last = keep_last

    def __call__(self, dialog: Dialog) -> Dialog:
        if len(dialog.messages) <= self.keep_last + 1:
            return dialog
        return dialog.fork(last_n=self.keep_last, first_k=1)


class Chat(Tactic, register=False):
    name = "compat_cm_chat"
    agent_group = ["small", "stateless"]

    def call(self, task: str, **kwargs: Any) -> list[int]:
        sizes = []
        for name in self.agent_group:
            a = self.agents[name]
            a.open("c")
            for i in range(4):
                a.receive(f"{task} {i}")
            a.respond()
            sizes.append(len(a.current_dialog))
        return sizes


def test_the_config_block_builds_a_registered_manager_per_agent() -> None:
    runtime = Runtime("cm")
    runtime.register_context_manager(RollingWindow)
    inv = ScriptedInvoker(["a", "b"])
    config = {
        "global": {"model_name": "gpt-4o", "system_prompt": "hi",
                   "context_manager": {"type": "rolling_window", "keep_last": 2}},
        "agent_configs": [{"name": "small"}, {"name": "stateless", "context_manager": {"type": None}}],
    }
    from lllm.invokers import override

    with override(inv):
        assert Chat(config, runtime=runtime)("t") == [6, 6]
    assert [len(c.messages) for c in inv.calls] == [3, 5]
    assert runtime.get_context_manager("default") is DefaultContextManager


def test_bad_context_manager_blocks_say_what_is_wrong() -> None:
    base = {"global": {"model_name": "gpt-4o", "system_prompt": "hi"}, "invoker": "scripted",
            "invoker_config": {"steps": []}}
    runtime = Runtime("cm-bad")
    with pytest.raises(ConfigError, match=r"agent_configs\[0\] \('small'\).context_manager.type: no context "
                                          r"manager 'summary'.*register_context_manager"):
        Chat({**base, "agent_configs": [{"name": "small", "context_manager": {"type": "summary"}},
                                        {"name": "stateless"}]}, runtime=runtime)
    with pytest.raises(ConfigError, match=r"context_manager: DefaultContextManager\('gpt-4o', \*\*\{'max_tokens': "
                                          r"-1\}\) failed: DefaultContextManager: max_tokens must be a positive int"):
        Chat({**base, "agent_configs": [{"name": "small", "context_manager": {"max_tokens": -1}},
                                        {"name": "stateless"}]}, runtime=runtime)
    with pytest.raises(ConfigError, match="context_manager must be a ContextManager"):
        Agent(name="x", system_prompt="s", model="m", llm_invoker=ScriptedInvoker([]), context_manager="default")


# -- structured output (Lesson 3, examples/structured_output.py) ---------------------------------------------


def test_a_format_answer_rebuilds_its_model_from_parsed_and_the_format_stays_in_force() -> None:
    from pydantic import BaseModel

    from lllm import Prompt

    class Review(BaseModel):
        title: str
        rating: float
        raw: str = ""  # a field named like one of our keys wins it

    review = '{"title": "Inception", "rating": 9.0, "raw": "field"}'
    inv = ScriptedInvoker([review, review])
    a = Agent(name="critic", system_prompt=Prompt(path="review", prompt="Review.", format=Review), model="gpt-4o",
              llm_invoker=inv)
    a.open("s")
    a.receive("Review 'Inception'.")
    first = a.respond()
    assert Review(**first.parsed) == first.output == Review(title="Inception", rating=9.0, raw="field")
    assert first.parsed["output"] == first.output.model_dump() and first.content == review
    a.receive("And again.")  # a plain receive: the system prompt's format is still in force
    assert Review(**a.respond().parsed).title == "Inception"
    assert [c.response_format for c in inv.calls] == [Review, Review]
