"""api_type="response": the request mapping to the OpenAI Responses API, the normalised result, and the path from
an agent config through `Agent` to `litellm.responses` (run offline with litellm's own mock_response)."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import BaseModel

import lllm.invokers.base as base
from lllm import Agent, Prompt
from lllm.core.config import parse_agent_configs
from lllm.errors import ConfigError, ModelRequestsDisabled
from lllm.invokers import RecordingStreamHandler, ScriptedInvoker, build_invoker
from lllm.invokers._responses import ResponsesStream, normalize_responses_output, to_responses_input, to_responses_tools
from lllm.invokers.base import InvokeContext, InvokeRequest
from lllm.invokers.litellm import load_litellm, responses_kwargs

litellm = load_litellm()
TOOL = {"type": "function", "function": {"name": "add", "description": "Add.",
                                         "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
MOCK_TEXT = "In the Responses API."


Recorder = RecordingStreamHandler


def test_chat_messages_become_responses_input_items() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2"},
        {"role": "assistant", "content": "It is 2."},
    ]
    assert to_responses_input(messages) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "2"},
        {"role": "assistant", "content": "It is 2."},
    ]


def test_a_role_the_responses_api_lacks_is_refused_by_name() -> None:
    with pytest.raises(Exception, match="role 'function'.*system, user, assistant or tool"):
        to_responses_input([{"role": "function", "content": "x"}])


def test_tools_are_flattened_and_built_in_tools_pass_through() -> None:
    assert to_responses_tools([TOOL, {"type": "web_search_preview"}]) == [
        {"type": "function", "name": "add", "description": "Add.", "parameters": TOOL["function"]["parameters"]},
        {"type": "web_search_preview"},
    ]


def test_request_kwargs_prompt_tools_then_model_args_tools_format_and_token_limit() -> None:
    class Answer(BaseModel):
        n: int

    request = InvokeRequest([{"role": "user", "content": "q"}], "gpt-4o", tools=[TOOL], response_format=Answer,
                            stream_handler=Recorder(), api_type="response")
    out = responses_kwargs(request, {"timeout": 5.0, "max_tokens": 50, "tools": [{"type": "web_search_preview"}],
                                     "stream_options": {"include_usage": True}})
    assert [t.get("name", t["type"]) for t in out["tools"]] == ["add", "web_search_preview"]
    assert out["input"] == [{"role": "user", "content": "q"}]
    assert out["text_format"] is Answer and out["max_output_tokens"] == 50 and "max_tokens" not in out
    assert out["stream"] is True and "stream_options" not in out and out["timeout"] == 5.0


def test_a_litellm_responses_object_with_text_and_a_function_call_is_normalised() -> None:
    from litellm.types.llms.openai import ResponsesAPIResponse

    raw = ResponsesAPIResponse(**{
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o",
        "output": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "message", "id": "m1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Let me add.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "add", "arguments": '{"a": 1}',
             "status": "completed"},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    })
    content, calls, finish, usage = normalize_responses_output(raw)
    assert content == "Let me add." and finish == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_9", "add", '{"a": 1}')]
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 5)
    incomplete = normalize_responses_output({"status": "incomplete", "output": []})
    assert incomplete[0] is None and incomplete[2] == "length"


def test_streamed_events_reach_the_handler_and_the_final_response_wins() -> None:
    handler = Recorder()
    stream = ResponsesStream(handler)
    for event in [{"type": "response.created"}, {"type": "response.output_text.delta", "delta": "Hel"},
                  {"type": "response.output_text.delta", "delta": "lo"},
                  {"type": "response.completed", "response": {"status": "completed", "output": [
                      {"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}],
                      "usage": {"input_tokens": 3, "output_tokens": 1}}}]:
        stream.feed(event)
    assert handler.tokens == ["Hel", "lo"]
    content, calls, finish, usage = stream.result()
    assert (content, calls, finish, usage.total_tokens) == ("Hello", [], "stop", 4)


def test_invoker_calls_litellm_responses_offline_with_usage_and_cost() -> None:
    inv = build_invoker({"invoker": "litellm"})
    result = inv.call([{"role": "user", "content": "q"}], model="gpt-4o", api_type="response",
                      model_args={"mock_response": MOCK_TEXT})
    assert result.content == MOCK_TEXT and result.finish_reason == "stop"
    assert type(result.raw).__name__ == "ResponsesAPIResponse"  # litellm.responses answered, not completion
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (36, 87)  # litellm's mock usage
    assert result.usage.cost > 0 and result.cost_note is None


def test_invoker_streams_the_responses_answer_then_on_done() -> None:
    handler = Recorder()
    result = build_invoker({"invoker": "litellm"}).call(
        [{"role": "user", "content": "q"}], model="gpt-4o", api_type="response", stream_handler=handler,
        model_args={"mock_response": MOCK_TEXT})
    assert "".join(handler.tokens) == MOCK_TEXT == result.content and handler.done == 1


def test_agent_with_api_type_response_goes_through_litellm_responses() -> None:
    agent = Agent(name="searcher", system_prompt=Prompt(path="s/system", prompt="You search."), model="gpt-4o",
                  llm_invoker=build_invoker({"invoker": "litellm"}), model_args={"mock_response": MOCK_TEXT},
                  api_type="response")
    agent.open("chat")
    agent.receive("What is new?")
    message = agent.respond()
    assert message.content == MOCK_TEXT
    assert agent.last_session.model_calls[0].usage.prompt_tokens == 36  # the Responses mock's usage, not a count
    plain = Agent(name="plain", system_prompt="You chat.", model="gpt-4o",
                  llm_invoker=build_invoker({"invoker": "litellm"}), model_args={"mock_response": MOCK_TEXT})
    plain.open("chat")
    plain.receive("hi")
    plain.respond()
    assert plain.last_session.model_calls[0].usage.prompt_tokens != 36  # completion path: litellm counts tokens


def test_api_type_from_an_agent_config_reaches_the_invoker() -> None:
    config = {"agent_configs": [{"name": "web", "model_name": "gpt-4o", "system_prompt": "You search.",
                                 "api_type": "response"},
                                {"name": "chat", "model_name": "gpt-4o", "system_prompt": "You chat."}]}
    specs = parse_agent_configs(config, ["web", "chat"], "t")
    for through_litellm in (False, True):
        script = ScriptedInvoker(["found it", "hello"], through_litellm=through_litellm)
        for name in ("web", "chat"):
            agent = specs[name].build(script)
            agent.open("d")
            agent.receive("go")
            agent.respond()
        assert [c.api_type for c in script.calls] == ["response", None]
        script.assert_complete()


@pytest.mark.parametrize("bad", ["responses", "chat", 1])
def test_an_unknown_api_type_names_the_choices(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"agent 'a': unknown api_type .*'completion'.*'response'"):
        Agent(name="a", system_prompt="x", model="gpt-4o", llm_invoker=ScriptedInvoker(["x"]), api_type=bad)
    with pytest.raises(ConfigError, match="unknown api_type"):
        ScriptedInvoker(["x"]).call([{"role": "user", "content": "q"}], model="m", api_type=bad,
                                    context=InvokeContext(agent="a"))


def test_the_guard_blocks_a_real_responses_call() -> None:
    with pytest.raises(ModelRequestsDisabled, match="'gpt-4o' by agent 'a'"):
        build_invoker({"invoker": "litellm"}).call([{"role": "user", "content": "q"}], model="gpt-4o",
                                                   api_type="response", context=InvokeContext(agent="a"))


def test_a_real_responses_call_without_mcp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real_find_spec(name, *a))
    monkeypatch.setattr(base, "ALLOW_MODEL_REQUESTS", True)
    with pytest.raises(ConfigError, match=r"agent 'a': api_type='response'.*pip install 'mcp>=2.2,<3'"):
        build_invoker({"invoker": "litellm", "api_base": "http://127.0.0.1:9/v1"}).call(
            [{"role": "user", "content": "q"}], model="gpt-4o", api_type="response", context=InvokeContext(agent="a"))


def test_litellm_stream_event_objects_are_understood() -> None:
    from litellm.types.llms.openai import OutputTextDeltaEvent, ResponseCompletedEvent, ResponsesAPIResponse

    final = ResponsesAPIResponse(**{
        "id": "r", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o",
        "output": [{"type": "message", "id": "m", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}],
        "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    })
    handler = Recorder()
    stream = ResponsesStream(handler)
    for delta in ("Hi", " there"):
        stream.feed(OutputTextDeltaEvent(type="response.output_text.delta", item_id="m", output_index=0,
                                         content_index=0, delta=delta))
    stream.feed(ResponseCompletedEvent(type="response.completed", response=final))
    assert handler.tokens == ["Hi", " there"]
    content, _, finish, usage = stream.result()
    assert (content, finish, usage.prompt_tokens, usage.completion_tokens) == ("Hi there", "stop", 4, 2)
