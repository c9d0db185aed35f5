"""lllm-core's prompt and tool extras, as Lessons 3 and 4 describe them: `Prompt.template_vars`,
`validate_args`, `@tool(processor=)` and `Function(processor=)`, `MCP` servers on a prompt."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lllm import MCP, Agent, Prompt
from lllm.core.prompt import Function, FunctionCall, tool
from lllm.errors import ConfigError
from lllm.invokers import ScriptedInvoker


def test_template_vars_and_validate_args() -> None:
    p = Prompt(path="greet", prompt="Hello {name}, welcome to {place}! {{literal}}")
    assert p.template_vars == {"name", "place"} and isinstance(p.template_vars, set)
    assert p.validate_args({"name": "Ada"}) == ["place"]
    assert p.validate_args({"name": "Ada", "place": "x", "extra": 1}) == []
    assert Prompt(path="plain", prompt="No variables.").template_vars == set()


def call_weather(fn: Function, steps: list | None = None) -> tuple[str, ScriptedInvoker]:
    inv = ScriptedInvoker(steps or [{"content": None, "tool_calls": [{"name": fn.name, "arguments": {"city": "Paris"}}]},
                                    "done"])
    agent = Agent(name="a", system_prompt=Prompt(path="s", prompt="Weather bot.", function_list=[fn]),
                  model="gpt-4o", llm_invoker=inv)
    agent.open("c")
    agent.receive("Weather in Paris?")
    agent.respond()
    tool_message = next(m for m in agent.current_dialog.messages if m.role.value == "tool")
    return tool_message.content or "", inv


def test_a_processor_formats_what_the_model_reads() -> None:
    seen: list[FunctionCall] = []

    def my_processor(result: str, function_call: FunctionCall) -> str:
        seen.append(function_call)
        return f"[{function_call.name}] -> {result}"

    @tool(description="Get weather", processor=my_processor)
    def get_weather(city: str) -> str:
        return "Sunny"

    text, inv = call_weather(get_weather)
    assert text == "[get_weather] -> Sunny"
    assert seen[0].arguments == {"city": "Paris"} and inv.calls[1].messages[-1]["content"] == text
    plain, _ = call_weather(Function.from_callable(get_weather.function))
    assert plain == "Sunny"  # without a processor: the result itself


def test_a_processor_on_a_hand_declared_function_and_a_failing_one() -> None:
    fn = Function(name="get_weather", description="Weather", properties={"city": {"type": "string"}},
                  required=["city"], function=lambda city: {"sky": "clear"},
                  processor=lambda result, call: f"{call.arguments['city']}: {result['sky']}")
    assert call_weather(fn)[0] == "Paris: clear"
    broken = Function(name="get_weather", properties={"city": {"type": "string"}}, function=lambda city: 1,
                      processor=lambda result, call: 1 / 0)
    assert call_weather(broken)[0].startswith("Error: 'get_weather' returned a result that cannot be sent: "
                                              "ZeroDivisionError")
    with pytest.raises(ConfigError, match="processor must be a callable"):
        Function(name="x", processor="not callable")  # type: ignore[arg-type]


def test_mcp_servers_are_offered_with_the_prompts_tools() -> None:
    server = MCP(server_label="my_tools", server_url="http://localhost:8080", allowed_tools=["search", "fetch_url"])
    assert server.to_tool() == {"type": "mcp", "server_label": "my_tools", "server_url": "http://localhost:8080",
                                "require_approval": "never", "allowed_tools": ["search", "fetch_url"]}
    prompt = Prompt(path="agent/system", prompt="You are an assistant with web access.", mcp_servers_list=[server])
    assert prompt.mcp_servers == {"my_tools": server}
    assert prompt.extend(path="agent/other").mcp_servers_list == [server]
    inv = ScriptedInvoker(["ok"])
    agent = Agent(name="a", system_prompt=prompt, model="gpt-4o", llm_invoker=inv, api_type="response")
    agent.open("c")
    agent.receive("find it")
    agent.respond()
    assert inv.calls[0].tools == [server.to_tool()] and inv.calls[0].api_type == "response"
    with pytest.raises(ValidationError):
        MCP(server_label="x", server_url="y", require_approval="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mcp_servers_list holds"):
        Prompt(path="p", prompt="x", mcp_servers_list=[{"server_label": "x"}])  # type: ignore[list-item]
