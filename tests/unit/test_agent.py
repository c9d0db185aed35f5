"""The Agent on the scripted model: dialogs, the tool loop, retries through handlers, structured output,
tracing and cleanups; every bad input is fed back to the model or raised with a clear error."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from lllm.core.agent import Agent
from lllm.core.const import Roles
from lllm.core.prompt import (
    AgentCallSession,
    DefaultSimpleHandler,
    DefaultTagParser,
    Function,
    ParseError,
    Prompt,
    ToolResult,
    tool,
)
from lllm.core.trace import AgentCallRecord, ModelCallRecord
from lllm.errors import (AgentException, BrowserLaunchError, ConfigError, GatewayStartError, InfrastructureError,
                         RateLimitError, SandboxEngineError, SandboxError, SandboxStartError, ScriptError,
                         ToolBugError, UsageError)
from lllm.invokers.base import RecordingStreamHandler
from lllm.invokers.scripted import ScriptedInvoker


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


@tool
def plot() -> ToolResult:
    """Draw a plot."""
    return ToolResult(content="a red square", images=[Image.new("RGB", (4, 4), "red")])


def make(steps: list[Any], *, system: Prompt | str = "You are helpful.", **kw: Any) -> tuple[Agent, ScriptedInvoker]:
    inv = ScriptedInvoker(steps)
    return Agent(name="tester", system_prompt=system, model="gpt-4o", llm_invoker=inv, **kw), inv


def roles(agent: Agent) -> list[str]:
    return [m.role.value for m in agent.current_dialog.messages]


# ---- dialogs ----------------------------------------------------------------------------------------------


def test_open_receive_respond() -> None:
    system = Prompt(path="t/system", prompt="You assist {user}.")
    agent, inv = make(["Hello Ann."], system=system)
    agent.open("chat", prompt_args={"user": "Ann"})
    agent.receive("Hi")
    msg = agent.respond()
    assert msg.content == "Hello Ann." and msg.role is Roles.ASSISTANT and msg.name == "tester"
    assert msg.parsed == {"raw": "Hello Ann."}
    assert msg.usage.prompt_tokens > 0 and msg.cost == msg.usage.cost == 0.0  # the scripted model bills nobody
    assert msg.metadata["model"] == "scripted"
    assert inv.calls[0].messages == [{"role": "system", "content": "You assist Ann."}, {"role": "user", "content": "Hi"}]
    assert inv.calls[0].context.agent == "tester" and inv.calls[0].context.dialog == "chat"
    assert agent.current_dialog.tail is msg and agent.current_alias == "chat"
    inv.assert_complete()


def test_missing_system_prompt_variable_names_it() -> None:
    agent, _ = make([], system=Prompt(path="t/s", prompt="Hi {user}"))
    with pytest.raises(UsageError, match="'user'"):
        agent.open("chat")


def test_no_dialog_and_unknown_alias_errors() -> None:
    agent, _ = make([])
    with pytest.raises(UsageError, match=r"agent\.open"):
        agent.receive("x")
    with pytest.raises(UsageError, match=r"agent\.open"):
        agent.respond()
    agent.open("a")
    with pytest.raises(UsageError, match=r"\['a'\]"):
        agent.switch("b")
    with pytest.raises(UsageError):
        agent.close("b")
    with pytest.raises(UsageError):
        agent.fork("b", "c")
    with pytest.raises(UsageError, match="receive_prompt"):
        agent.receive(Prompt(path="p", prompt="x"))  # type: ignore[arg-type]
    agent.close("a")
    assert agent.current_dialog is None
    with pytest.raises(UsageError, match="none is open"):
        agent.receive("x")


def test_fork_switch_close_make_independent_branches() -> None:
    agent, inv = make(["ack", "eval A", "eval B", "A wins"])
    base = agent.open("base")
    agent.receive("context")
    agent.respond()
    results = {}
    for i, h in enumerate(["A", "B"]):
        branch = agent.fork("base", f"branch_{i}")
        assert agent.current_dialog is branch and branch.parent is base and branch.split_point == 3
        agent.receive(f"evaluate {h}")
        results[h] = agent.respond().content
        agent.close(f"branch_{i}")
    agent.switch("base")
    agent.receive("which?")
    assert agent.respond().content == "A wins"
    assert results == {"A": "eval A", "B": "eval B"}
    # branch B never saw branch A's turn; base saw neither
    assert [m["content"] for m in inv.calls[2].messages][-1] == "evaluate B"
    assert "evaluate A" not in json.dumps(inv.calls[2].messages)
    assert "evaluate" not in json.dumps(inv.calls[3].messages)
    assert [c.name for c in base.children] == ["branch_0", "branch_1"]
    assert set(agent.dialogs) == {"base"}
    inv.assert_complete()


def test_dialog_hooks_see_forks_and_closes_and_a_refusing_hook_stops_the_fork() -> None:
    agent, _ = make([{"content": None, "tool_calls": [{"name": "where", "arguments": {}}]}, "done"])
    events: list[tuple[str, str, str | None]] = []
    agent.add_dialog_hook(lambda event, alias, source: events.append((event, alias, source)))
    seen: list[str | None] = []

    def where() -> str:
        """Say which dialog this tool acts for."""
        seen.append(agent.active_alias)
        return "ok"

    agent.tools.append(Function.from_callable(where))
    agent.open("base")
    agent.fork("base", "b1")
    agent.switch("base")
    agent.receive("go", alias="b1")
    agent.respond(alias="b1")  # not current: its tools still act for b1
    assert seen == ["b1"] and agent.active_alias == "base"
    agent.close("b1")
    assert events == [("fork", "b1", "base"), ("close", "b1", None)]

    def refuse(event: str, alias: str, source: str | None) -> None:
        if event == "fork":
            raise SandboxError("no room for another branch kernel")

    agent.add_dialog_hook(refuse)
    with pytest.raises(SandboxError, match="no room"):
        agent.fork("base", "b2")
    assert set(agent.dialogs) == {"base"} and agent.current_alias == "base"  # the fork did not happen
    with pytest.raises(UsageError, match="callable"):
        agent.add_dialog_hook("not a hook")  # type: ignore[arg-type]


def test_open_or_fork_onto_an_open_alias_is_an_error_and_dialogs_is_read_only() -> None:
    agent, _ = make([])
    first = agent.open("a")
    with pytest.raises(UsageError, match="already open"):
        agent.open("a")
    agent.open("b")
    with pytest.raises(UsageError, match="already open"):
        agent.fork("b", "a")
    assert agent.dialogs["a"] is first
    agent.close("a")
    assert agent.open("a") is not first
    with pytest.raises(TypeError):
        agent.dialogs["z"] = first  # type: ignore[index]
    with pytest.raises(UsageError, match="non-empty"):
        agent.open("")


def test_alias_keyword_acts_on_another_dialog_without_switching() -> None:
    agent, inv = make(["in a"])
    agent.open("a")
    agent.open("b")
    agent.receive("for a", alias="a")
    assert agent.respond(alias="a").content == "in a"
    assert agent.current_alias == "b" and len(agent.dialogs["b"]) == 1 and len(agent.dialogs["a"]) == 3
    assert inv.calls[0].context.dialog == "a"
    with pytest.raises(UsageError, match="'zz'"):
        agent.receive("x", alias="zz")


# ---- prompts in force ---------------------------------------------------------------------------------------


def test_system_prompt_tools_and_parser_stay_after_plain_receive() -> None:
    system = Prompt(path="t/s", prompt="Plan.", parser=DefaultTagParser(xml_tags=["step"]), function_list=[add])
    agent, inv = make(["<step>a</step>", "<step>b</step>"], system=system)
    agent.open("p")
    for _ in range(2):
        agent.receive("go")
        msg = agent.respond()
        assert msg.parsed["xml_tags"]["step"]
    assert [t["function"]["name"] for t in inv.calls[1].tools] == ["add"]


def test_receive_prompt_rules_one_turn_then_the_system_prompt_again() -> None:
    system = Prompt(path="t/s", prompt="Sys.", function_list=[add])
    special = Prompt(path="t/special", prompt="List {n} risks as <risk>..</risk>",
                     parser=DefaultTagParser(required_xml_tags=["risk"]), function_list=[explode])
    agent, inv = make(["<risk>r1</risk>", "plain"], system=system)
    agent.open("p")
    agent.receive_prompt(special, prompt_args={"n": 2})
    assert agent.current_dialog.tail.content == "List 2 risks as <risk>..</risk>"
    assert agent.respond().parsed["xml_tags"]["risk"] == ["r1"]
    assert [t["function"]["name"] for t in inv.calls[0].tools] == ["explode"]
    agent.receive("next")
    assert agent.respond().parsed == {"raw": "plain"}
    assert [t["function"]["name"] for t in inv.calls[1].tools] == ["add"]
    with pytest.raises(UsageError, match="'n'"):
        agent.receive_prompt(special)


def test_agent_tools_are_always_on_and_prompt_tool_wins_on_name_clash() -> None:
    other_add = Function.from_callable(lambda a, b: "prompt's add", name="add")
    system = Prompt(path="t/s", prompt="Sys.", function_list=[other_add])
    agent, inv = make([{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, "done"], system=system,
                      tools=[add, plot])
    agent.open("p")
    agent.receive("go")
    agent.respond()
    assert sorted(t["function"]["name"] for t in inv.calls[0].tools) == ["add", "plot"]
    assert agent.current_dialog.messages[3].content == "prompt's add"


# ---- the tool loop --------------------------------------------------------------------------------------------


def test_tool_calls_run_and_bad_calls_go_back_as_errors() -> None:
    system = Prompt(path="t/s", prompt="Sys.", function_list=[add, explode])
    steps = [
        {"content": "let me compute", "tool_calls": [
            {"name": "add", "arguments": {"a": 2, "b": 3}},
            {"name": "explode", "arguments": {"reason": "test"}},
            {"name": "missing_tool", "arguments": {}},
            {"name": "add", "arguments": '{"a": 1, "b": '},
            {"name": "add", "arguments": '{"a": "x", "b": 1}'},
            {"name": "add", "arguments": "[1, 2]"},
        ]},
        "The sum is 5.",
    ]
    agent, inv = make(steps, system=system)
    agent.open("p")
    agent.receive("add 2 and 3")
    msg = agent.respond()
    assert msg.content == "The sum is 5."
    d = agent.current_dialog.messages
    assert [m.role.value for m in d] == ["system", "user", "assistant"] + ["tool"] * 6 + ["assistant"]
    tool_texts = [m.content for m in d[3:9]]
    assert tool_texts[0] == "5"
    assert "RuntimeError: boom: test" in tool_texts[1]
    assert "no tool named 'missing_tool'" in tool_texts[2] and "['add', 'explode']" in tool_texts[2]
    assert "not valid JSON" in tool_texts[3]
    assert "bad arguments for 'add'" in tool_texts[4] and "a:" in tool_texts[4]
    assert "must be a JSON object" in tool_texts[5]
    assert all(t.startswith("Error: ") for t in tool_texts[1:])
    calls = d[2].tool_calls
    assert calls[0].success and calls[0].arguments == {"a": 2, "b": 3}
    assert not any(c.success for c in calls[1:])
    # the model saw every result, answering its call ids
    sent = inv.calls[1].messages
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == [c.id for c in calls]
    session = agent.last_session
    assert session.interrupts_count == 1 and len(session.model_calls) == 2


@pytest.mark.parametrize("error", [
    SandboxStartError("cannot connect to the Docker engine: no Docker engine answers"),
    SandboxEngineError("cannot run the cell: the Docker engine said 500 Server Error"),
    GatewayStartError("the CALL_API gateway could not open a session"),
    BrowserLaunchError("no Chromium at '/nonexistent'"),
], ids=lambda e: type(e).__name__)
def test_an_infrastructure_failure_in_a_tool_ends_the_call_and_never_reaches_the_model(error: Exception) -> None:
    def run_python(code: str) -> str:
        """Run code."""
        raise error

    records: list[Any] = []
    steps = [{"content": "let me run it", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}},
                                                         {"name": "run_python", "arguments": {"code": "1+1"}}]},
             "I worked around the broken sandbox."]  # must never be requested
    agent, inv = make(steps, tools=[run_python], system=Prompt(path="t/s", prompt="Sys.", function_list=[add]),
                      tracer=records.append)
    agent.open("p")
    agent.receive("compute")
    with pytest.raises(type(error)) as info:
        agent.respond()
    assert info.value is error and isinstance(error, InfrastructureError)
    assert "raised by tool 'run_python'" in "".join(getattr(error, "__notes__", []))
    assert len(inv.calls) == 1 and inv.steps_remaining == 1  # the model was not asked to work around it
    d = agent.current_dialog.messages
    assert [m.role.value for m in d] == ["system", "user", "assistant", "tool"]  # no tool message for the failure
    failed = d[2].tool_calls[1]
    assert not failed.success and failed.result_str is None
    assert failed.error_message == f"not run: {type(error).__name__}: {error}"
    assert agent.last_session.state == "failure" and type(error).__name__ in agent.last_session.error
    (call,) = [r for r in records if isinstance(r, AgentCallRecord)]
    assert call.status == "error" and str(error) in call.error


def test_a_sandbox_error_that_is_not_infrastructure_still_goes_back_to_the_model() -> None:
    def run_python(code: str) -> str:
        """Run code."""
        raise SandboxError("upload of 'x' refused: the path escapes the workspace")

    agent, inv = make([{"tool_calls": [{"name": "run_python", "arguments": {"code": "1"}}]}, "ok, another path"],
                      tools=[run_python])
    agent.open("p")
    agent.receive("go")
    assert agent.respond().content == "ok, another path"
    assert "raised SandboxError: upload of 'x' refused" in agent.current_dialog.messages[3].content


def _tool_in_module(module: str, source: str) -> Any:
    """A tool function compiled as if it were defined in `module` (its frames report that module's name)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(source, f"<{module}>", "exec"), namespace)  # noqa: S102 - test-only, fixed source
    return namespace["run_python"]


LLLM_TOOL_WITH_A_BUG = (
    "def run_python(code: str) -> str:\n"
    "    'Run code.'\n"
    "    session = None\n"
    "    return session.run_cell(code)\n")  # AttributeError inside lllm's own code


def test_a_bug_in_one_of_lllms_own_tools_ends_the_call_instead_of_reaching_the_model() -> None:
    run_python = _tool_in_module("lllm.tools.fake_builtin", LLLM_TOOL_WITH_A_BUG)
    agent, inv = make([{"tool_calls": [{"name": "run_python", "arguments": {"code": "1"}}]}, "worked around it"],
                      tools=[run_python])
    agent.open("p")
    agent.receive("go")
    with pytest.raises(ToolBugError, match=r"lllm's own tool 'run_python' failed with AttributeError: .*bug in "
                                           r"lllm") as info:
        agent.respond()
    assert isinstance(info.value, InfrastructureError) and isinstance(info.value.__cause__, AttributeError)
    assert info.value.tool == "run_python" and inv.steps_remaining == 1  # the model was not asked


@pytest.mark.parametrize("module, source", [
    ("my_project.tools", LLLM_TOOL_WITH_A_BUG),  # a user's tool with the same bug: the model reads it
    ("lllm.tools.fake_builtin", "def run_python(code: str) -> str:\n    'Run code.'\n"
                                "    raise __import__('lllm.errors').errors.UsageError('no such file: x.csv')\n"),
    ("lllm.tools.fake_builtin", "def run_python(code: str) -> str:\n    'Run code.'\n"
                                "    return __import__('json').loads(code)\n"),  # raised in a library, by its input
], ids=["user-tool", "lllm-error", "library"])
def test_other_tool_exceptions_still_go_back_to_the_model(module: str, source: str) -> None:
    agent, inv = make([{"tool_calls": [{"name": "run_python", "arguments": {"code": "{"}}]}, "ok"],
                      tools=[_tool_in_module(module, source)])
    agent.open("p")
    agent.receive("go")
    assert agent.respond().content == "ok"
    assert "'run_python' raised" in agent.current_dialog.messages[3].content


def test_tool_images_reach_the_model_after_the_tool_messages() -> None:
    system = Prompt(path="t/s", prompt="Sys.", function_list=[plot, add])
    steps = [{"tool_calls": [{"name": "plot", "arguments": {}}, {"name": "add", "arguments": {"a": 1, "b": 1}}]},
             "I see a red square."]
    agent, inv = make(steps, system=system)
    agent.open("p")
    agent.receive("plot it")
    agent.respond()
    sent = inv.calls[1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent[3]["content"] == "a red square"
    parts = sent[5]["content"]
    assert parts[0]["type"] == "text" and "plot" in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_tool_budget_then_on_interrupt_final_without_tools() -> None:
    system = Prompt(path="t/s", prompt="Sys.", function_list=[add])
    call = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}
    agent, inv = make([call, call, "final answer"], system=system, max_interrupt_steps=2)
    agent.open("p")
    agent.receive("loop")
    assert agent.respond().content == "final answer"
    assert inv.calls[1].tools is not None and inv.calls[2].tools is None
    last_user = [m for m in inv.calls[2].messages if m["role"] == "user"][-1]
    assert "all 2 rounds of tool calls" in last_user["content"]
    assert agent.last_session.interrupts_count == 2
    assert agent.last_session.model_calls[-1].phase == "interrupt_final"


def test_tool_call_after_the_budget_is_retried_then_gives_up() -> None:
    system = Prompt(path="t/s", prompt="Sys.", function_list=[add])
    call = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}
    agent, inv = make([call, call, call], system=system, max_interrupt_steps=1, max_exception_retry=1)
    agent.open("p")
    agent.receive("loop")
    with pytest.raises(AgentException, match="tool budget"):
        agent.respond()
    inv.assert_complete()


def test_custom_on_interrupt_text_is_added() -> None:
    class Nudge(DefaultSimpleHandler):
        def on_interrupt(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
            return prompt.extend(path="nudge", prompt="Round {interrupt_step}: {{call_results}}")

    system = Prompt(path="t/s", prompt="Sys.", function_list=[add], handler=Nudge())
    agent, _ = make([{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, "ok"], system=system)
    agent.open("p")
    agent.receive("go")
    agent.respond()
    assert agent.current_dialog.messages[4].content == "Round 1: add: 3"


# ---- retries ---------------------------------------------------------------------------------------------------


def test_parse_failures_retry_and_never_enter_the_dialog() -> None:
    system = Prompt(path="t/s", prompt="Sys.", parser=DefaultTagParser(required_xml_tags=["answer"]))
    steps = [{"content": "no tag", "usage": {"prompt_tokens": 10, "completion_tokens": 1, "cost": 0.1}},
             {"content": "<answer>42</answer>", "usage": {"prompt_tokens": 20, "completion_tokens": 2, "cost": 0.2}}]
    agent, inv = make(steps, system=system)
    agent.open("p")
    agent.receive("q")
    msg = agent.respond()
    assert msg.parsed["xml_tags"]["answer"] == ["42"]
    assert [m.content for m in agent.current_dialog.messages] == ["Sys.", "q", "<answer>42</answer>"]
    retry_req = inv.calls[1].messages
    assert retry_req[-2] == {"role": "assistant", "content": "no tag"}
    assert "missing <answer>" in retry_req[-1]["content"]
    session = agent.last_session
    assert session.exception_retries_count == 1 and "missing <answer>" in session.retries[0].error
    assert session.retries[0].content == "no tag" and session.cost.cost == pytest.approx(0.3)
    # the stored message carries what the retries cost too
    assert msg.usage.prompt_tokens == 30 and msg.cost == pytest.approx(0.3)
    assert agent.current_dialog.cost == pytest.approx(0.3)


def test_agent_exception_after_max_retries_carries_the_transcript() -> None:
    system = Prompt(path="t/s", prompt="Sys.", parser=DefaultTagParser(required_xml_tags=["answer"]))
    agent, inv = make(["bad 1", "bad 2", "bad 3"], system=system, max_exception_retry=2)
    agent.open("p")
    agent.receive("q")
    with pytest.raises(AgentException) as err:
        agent.respond()
    exc = err.value
    assert "3 answers were rejected" in str(exc) and "max_exception_retry=2" in str(exc)
    assert [r["content"] for r in exc.retries] == ["bad 1", "bad 2", "bad 3"]
    assert exc.retries[0]["retry_prompt"] and exc.retries[-1]["retry_prompt"] is None
    assert exc.agent == "tester" and exc.dialog == "p"
    assert roles(agent) == ["system", "user"]
    assert agent.last_session.state == "failure"
    inv.assert_complete()
    import pickle

    assert pickle.loads(pickle.dumps(exc)).retries == exc.retries


def test_callable_parser_raising_parse_error_retries() -> None:
    def parse_json(text: str, **_: Any) -> dict:
        try:
            return {"data": json.loads(text)}
        except json.JSONDecodeError as e:
            raise ParseError(f"not JSON: {e.msg}") from e

    agent, _ = make(["{oops", '{"a": 1}'], system=Prompt(path="t/s", prompt="JSON only.", parser=parse_json))
    agent.open("p")
    agent.receive("q")
    assert agent.respond().parsed == {"data": {"a": 1}, "raw": '{"a": 1}'}


class Plan(BaseModel):
    steps: list[str]
    risks: list[str] = []


def test_structured_output_validated_and_retried() -> None:
    system = Prompt(path="t/s", prompt="Plan.", format=Plan)
    agent, inv = make(['{"steps": "not a list"}', '{"steps": ["a", "b"]}'], system=system)
    agent.open("p")
    agent.receive("plan")
    msg = agent.respond()
    assert isinstance(msg.output, Plan) and msg.output.steps == ["a", "b"]
    assert msg.parsed == {"raw": '{"steps": ["a", "b"]}', "output": {"steps": ["a", "b"], "risks": []},
                          "steps": ["a", "b"], "risks": []}  # the fields at the top level: Plan(**msg.parsed)
    assert inv.calls[0].response_format is Plan
    assert "not a valid JSON object for Plan" in agent.last_session.retries[0].error


def test_invoker_errors_propagate_and_scripted_exhaustion_names_agent_and_dialog() -> None:
    agent, _ = make([])
    agent.open("lonely")
    agent.receive("hello?")
    with pytest.raises(ScriptError, match="'tester'.*'lonely'"):
        agent.respond()


# ---- tracing -----------------------------------------------------------------------------------------------------


def test_tracer_gets_model_and_agent_call_records() -> None:
    records: list[Any] = []
    system = Prompt(path="t/s", prompt="Sys.", parser=DefaultTagParser(required_xml_tags=["a"]), function_list=[add])
    steps = [{"error": "rate_limit", "message": "slow down"},
             {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]},
             "no tag", "<a>ok</a>"]
    agent, _ = make(steps, system=system, tracer=records.append)
    agent.open("p")
    agent.receive("q")
    agent.respond()
    model_calls = [r for r in records if isinstance(r, ModelCallRecord)]
    assert [(r.status, r.attempt) for r in model_calls] == [("error", 1), ("ok", 2), ("ok", 1), ("ok", 1)]
    assert "slow down" in model_calls[0].error
    assert all(r.agent == "tester" and r.dialog == "p" for r in model_calls)
    (call,) = [r for r in records if isinstance(r, AgentCallRecord)]
    assert call.status == "ok" and call.model_calls == 3 and call.exception_retries == 1 and call.interrupts == 1
    assert call.cost == pytest.approx(sum(r.cost for r in model_calls))
    assert call.detail["retries"][0]["content"] == "no tag"
    assert call.detail["interrupts"][0][0]["result"] == "2"
    json.dumps(call.detail)
    assert records[-1] is call


def test_tracer_records_a_failed_respond() -> None:
    records: list[Any] = []
    agent, _ = make([{"error": "api_error", "message": "bad request", "status_code": 400}], tracer=records.append)
    agent.open("p")
    agent.receive("q")
    with pytest.raises(Exception, match="bad request"):
        agent.respond()
    assert [r.kind for r in records] == ["model_call", "agent_call"]
    assert records[0].status == "error" and records[1].status == "error" and "bad request" in records[1].error


def test_rate_limits_are_retried_by_the_invoker_within_one_respond() -> None:
    agent, _ = make([{"error": "rate_limit"}] * 4)
    agent.open("p")
    agent.receive("q")
    with pytest.raises(RateLimitError, match="gave up after 4 attempts"):
        agent.respond()


# ---- streaming, images, cleanups, construction ----------------------------------------------------------------


def test_stream_handler_gets_tokens_of_every_call() -> None:
    handler = RecordingStreamHandler()
    agent, _ = make(["Once upon a time."], stream_handler=handler)
    agent.open("s")
    agent.receive("story")
    assert agent.respond().content == "Once upon a time."
    assert "".join(handler.tokens) == "Once upon a time." and len(handler.tokens) > 1 and handler.done == 1


def test_receive_image_sends_an_image_part(tmp_path: Any) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, format="JPEG")
    agent, inv = make(["a chart"])
    agent.open("v")
    agent.receive_image(base64.b64encode(buf.getvalue()).decode(), caption="Q1")
    agent.respond()
    parts = inv.calls[0].messages[1]["content"]
    assert parts[0] == {"type": "text", "text": "Q1"}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with pytest.raises(UsageError, match="does not exist"):
        agent.receive_image(str(tmp_path / "missing.png"))


def test_cleanups_run_once_in_reverse_order_collecting_errors() -> None:
    agent, _ = make([])
    order: list[str] = []
    agent.add_cleanup(lambda: order.append("first"))

    def broken() -> None:
        order.append("broken")
        raise OSError("disk gone")

    agent.add_cleanup(broken)
    agent.add_cleanup(lambda: order.append("last"))
    errors = agent.shutdown()
    assert order == ["last", "broken", "first"]
    assert [str(e) for e in errors] == ["disk gone"]
    assert agent.shutdown() == [] and order == ["last", "broken", "first"]
    agent.add_cleanup(broken)
    with pytest.raises(ExceptionGroup):
        agent.shutdown(raise_errors=True)
    with pytest.raises(UsageError):
        agent.add_cleanup("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "name"),
        ({"system_prompt": 3}, "system_prompt"),
        ({"llm_invoker": object()}, "llm_invoker"),
        ({"max_exception_retry": -1}, "max_exception_retry"),
        ({"max_interrupt_steps": 0}, "max_interrupt_steps"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"name": "a", "system_prompt": "x", "model": "m", "llm_invoker": ScriptedInvoker([])}
    with pytest.raises(ConfigError, match=match):
        Agent(**{**base, **kwargs})


def test_bad_agent_tool_is_a_config_error() -> None:
    agent, _ = make(["x"], tools=[42])  # type: ignore[list-item]
    agent.open("p")
    agent.receive("q")
    with pytest.raises(ConfigError, match="agent.tools"):
        agent.respond()


def test_agent_prompt_args_are_defaults_for_every_render() -> None:
    system = Prompt(path="t/s", prompt="Plan for: {task}")
    special = Prompt(path="t/p", prompt="{task} / {extra}")
    agent, inv = make(["ok"], system=system, prompt_args={"task": "ship", "extra": "default"})
    agent.open("plan")
    assert agent.current_dialog.head.content == "Plan for: ship"
    agent.receive_prompt(special, prompt_args={"extra": "given"})
    assert agent.current_dialog.tail.content == "ship / given"
    agent.open("other", prompt_args={"task": "override"})
    assert agent.current_dialog.head.content == "Plan for: override"


def test_tool_raising_validation_error_itself_is_reported_as_a_tool_error_and_unlinked_tool() -> None:
    @tool
    def strict(n: int) -> str:
        """Validates internally."""
        Plan.model_validate({"steps": n})
        return "unreachable"

    declared = Function(name="declared", description="No body.", properties={}, required=[])
    system = Prompt(path="t/s", prompt="Sys.", function_list=[strict, declared])
    steps = [{"tool_calls": [{"name": "strict", "arguments": {"n": 1}}, {"name": "declared", "arguments": {}}]}, "ok"]
    agent, _ = make(steps, system=system)
    agent.open("p")
    agent.receive("go")
    agent.respond()
    texts = [m.content for m in agent.current_dialog.messages if m.role is Roles.TOOL]
    assert texts[0].startswith("Error: 'strict' raised ValidationError") and "bad arguments" not in texts[0]
    assert "no implementation" in texts[1]


def test_tool_returning_json_values_and_bad_images() -> None:
    @tool
    def data() -> dict:
        """Data."""
        return {"a": [1, 2], "when": __import__("datetime").date(2024, 1, 2)}

    @tool
    def bad_image() -> ToolResult:
        """Bad image."""
        return ToolResult(content="x", images=["/no/such/plot.png"])

    system = Prompt(path="t/s", prompt="Sys.", function_list=[data, bad_image])
    steps = [{"tool_calls": [{"name": "data", "arguments": {}}, {"name": "bad_image", "arguments": {}}]}, "ok"]
    agent, _ = make(steps, system=system)
    agent.open("p")
    agent.receive("go")
    agent.respond()
    texts = [m.content for m in agent.current_dialog.messages if m.role is Roles.TOOL]
    assert json.loads(texts[0]) == {"a": [1, 2], "when": "2024-01-02"}
    assert "cannot be sent" in texts[1] and "does not exist" in texts[1]


def test_importing_the_core_loads_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = ("import sys, lllm.core.agent, lllm.core.prompt, lllm.core.dialog; "
            "print(sorted(m for m in ('litellm', 'docker', 'playwright', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_agents_in_threads_share_one_invoker_without_mixing_dialogs() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lllm.invokers.scripted import FunctionInvoker

    def responder(messages: list[dict[str, Any]]) -> str:
        return f"echo: {messages[-1]['content']}"

    inv = FunctionInvoker(responder)

    def work(i: int) -> list[str]:
        agent = Agent(name=f"w{i}", system_prompt="Echo.", model="gpt-4o", llm_invoker=inv)
        agent.open("d")
        out = []
        for turn in range(10):
            agent.receive(f"{i}-{turn}")
            out.append(agent.respond().content)
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(16)))
    assert results == [[f"echo: {i}-{t}" for t in range(10)] for i in range(16)]
    assert len(inv.calls) == 160
