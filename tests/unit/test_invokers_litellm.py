"""The litellm invoker, run offline through litellm's own mock_response: text, tools, streaming, usage and cost,
error translation, bounded retries, the guard; and the scripted model sent through litellm."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys

import pytest
from pydantic import BaseModel

import lllm.invokers.base as base
from lllm.errors import ModelAPIError, ModelRequestsDisabled, ModelTimeoutError, RateLimitError, ScriptError
from lllm.invokers import InvokeContext, RecordingStreamHandler, ScriptedInvoker, build_invoker
from lllm.invokers.base import RetryPolicy
from lllm.invokers.litellm import LiteLLMInvoker, load_litellm

litellm = load_litellm()
USER = [{"role": "system", "content": "You are a storyteller."}, {"role": "user", "content": "Tell me a short story."}]


Recorder = RecordingStreamHandler


def fast(max_retries: int = 3) -> tuple[LiteLLMInvoker, list[float]]:
    inv = LiteLLMInvoker(retry=RetryPolicy(max_retries=max_retries, backoff=0.5))
    waits: list[float] = []
    inv._sleep = waits.append
    return inv, waits


def test_import_is_lazy_and_uses_the_local_cost_map() -> None:
    code = "import sys, lllm.invokers, lllm.invokers.litellm, lllm.invokers.scripted; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert litellm.suppress_debug_info is True


def test_plain_text_with_usage_and_gpt4o_cost() -> None:
    inv = LiteLLMInvoker()
    r = inv.call(USER, model="gpt-4o", model_args={"mock_response": "Once upon a time."})
    assert r.content == "Once upon a time."
    assert r.tool_calls == [] and r.finish_reason == "stop" and r.attempts == 1
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    expected = r.usage.prompt_tokens * 2.5e-6 + r.usage.completion_tokens * 10e-6  # gpt-4o list prices
    assert r.usage.cost == pytest.approx(expected)
    assert r.cost_note is None
    assert isinstance(r.raw, litellm.ModelResponse)


def test_extra_args_from_config_and_model_args_override_them() -> None:
    inv = build_invoker({"invoker": "litellm", "extra_args": {"mock_response": "from config"}, "max_retries": 1})
    assert isinstance(inv, LiteLLMInvoker) and inv.retry.max_retries == 1
    assert inv.call(USER, model="gpt-4o").content == "from config"
    assert inv.call(USER, model="gpt-4o", model_args={"mock_response": "per call"}).content == "per call"


def test_tool_calls() -> None:
    tools = [{"type": "function", "function": {"name": "add", "description": "add", "parameters": {"type": "object"}}}]
    mock_calls = [{"id": "call_7", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    r = LiteLLMInvoker().call(USER, model="gpt-4o", tools=tools, model_args={"mock_response": "", "mock_tool_calls": mock_calls})
    assert [(t.id, t.name, json.loads(t.arguments)) for t in r.tool_calls] == [("call_7", "add", {"a": 1, "b": 2})]
    assert r.to_message()["tool_calls"][0]["function"]["name"] == "add"


def test_streaming_text_chunks_usage_and_cost() -> None:
    text = "A robot found a flower in the rubble and kept it."
    h = Recorder()
    r = LiteLLMInvoker().call(USER, model="gpt-4o", stream_handler=h, model_args={"mock_response": text})
    assert len(h.tokens) > 5 and "".join(h.tokens) == text
    assert h.done == 1
    assert r.content == text
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0  # from the include_usage chunk
    assert r.usage.cost > 0 and r.cost_note is None


def test_stream_flag_without_a_handler_is_assembled_too() -> None:
    r = LiteLLMInvoker().call(USER, model="gpt-4o", model_args={"mock_response": "quiet stream", "stream": True})
    assert r.content == "quiet stream" and r.usage.completion_tokens > 0


def test_streaming_tool_calls_are_assembled() -> None:
    from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Message, ModelResponse

    tc = ChatCompletionMessageToolCall(id="c1", type="function", function={"name": "search", "arguments": '{"q": "x"}'})
    response = ModelResponse(model="gpt-4o", choices=[Choices(index=0, message=Message(content="Looking.", tool_calls=[tc]), finish_reason="tool_calls")])
    h = Recorder()
    r = LiteLLMInvoker().call(USER, model="gpt-4o", stream_handler=h, model_args={"mock_response": response})
    assert "".join(h.tokens) == "Looking." and h.done == 1
    assert [(t.id, t.name, t.arguments) for t in r.tool_calls] == [("c1", "search", '{"q": "x"}')]


def test_unknown_model_costs_zero_and_says_so() -> None:
    r = LiteLLMInvoker().call(
        USER, model="my-local-llama", model_args={"mock_response": "hi", "custom_llm_provider": "openai"}
    )
    assert r.content == "hi" and r.usage.cost == 0.0
    assert "no price for model 'my-local-llama'" in r.cost_note


def test_images_and_structured_output_pass_through() -> None:
    class Plan(BaseModel):
        steps: list[str]

    msgs = [{"role": "user", "content": [{"type": "text", "text": "Plan from this chart"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
    r = LiteLLMInvoker().call(msgs, model="gpt-4o", response_format=Plan, model_args={"mock_response": '{"steps": ["look", "plan"]}'})
    assert r.parsed == Plan(steps=["look", "plan"])


@pytest.mark.parametrize(
    ("make", "cls", "status"),
    [
        (lambda: litellm.RateLimitError(message="slow down", llm_provider="openai", model="gpt-4o"), RateLimitError, 429),
        (lambda: litellm.Timeout(message="too slow", llm_provider="openai", model="gpt-4o"), ModelTimeoutError, 408),
        (lambda: litellm.InternalServerError(message="oops", llm_provider="openai", model="gpt-4o"), ModelAPIError, 500),
        (lambda: litellm.ServiceUnavailableError(message="down", llm_provider="openai", model="gpt-4o"), ModelAPIError, 503),
    ],
)
def test_transient_errors_are_translated_and_retried_a_bounded_number_of_times(make, cls, status) -> None:
    inv, waits = fast(max_retries=2)
    exc = make()
    with pytest.raises(cls) as info:
        inv.call(USER, model="gpt-4o", model_args={"mock_response": exc})
    err = info.value
    assert type(err) is cls and err.status_code == status and err.model == "gpt-4o"
    assert "gave up after 3 attempts" in str(err) and err.attempts == 3
    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0
    cause = err.__cause__
    assert isinstance(cause, cls) and isinstance(cause.__cause__, type(exc))  # raise ... from the litellm error
    assert "litellm." not in str(err).split(":")[0]
    again = pickle.loads(pickle.dumps(err))  # errors cross process boundaries (bcall results, logs)
    assert type(again) is cls and str(again) == str(err) and again.status_code == status


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        (lambda: litellm.BadRequestError(message="bad field", llm_provider="openai", model="gpt-4o"), "bad field"),
        (lambda: litellm.AuthenticationError(message="no key", llm_provider="openai", model="gpt-4o"), "API key"),
        (lambda: litellm.ContextWindowExceededError(message="too long", llm_provider="openai", model="gpt-4o"), "context window"),
    ],
)
def test_client_errors_are_not_retried_and_say_what_to_do(exc, hint) -> None:
    inv, waits = fast()
    with pytest.raises(ModelAPIError) as info:
        inv.call(USER, model="gpt-4o", model_args={"mock_response": exc()})
    assert type(info.value) is ModelAPIError and 400 <= info.value.status_code < 500
    assert hint in str(info.value) and waits == []


def test_connection_error_is_retryable() -> None:
    inv, waits = fast(max_retries=1)
    exc = litellm.APIConnectionError(message="connection refused", llm_provider="openai", model="gpt-4o")
    with pytest.raises(ModelAPIError, match="could not reach openai") as info:
        inv.call(USER, model="gpt-4o", model_args={"mock_response": exc})
    assert info.value.retryable is True and len(waits) == 1


def test_rate_limit_then_success_through_litellm_after_one_backoff() -> None:
    inv = ScriptedInvoker([{"error": "rate_limit", "message": "slow down"}, "done"], through_litellm=True)
    waits: list[float] = []
    inv._sleep = waits.append
    r = inv.call(USER, model="gpt-4o")
    assert (r.content, r.attempts, len(waits)) == ("done", 2, 1)
    assert "rate limit from openai for model 'gpt-4o': slow down" in r.errors[0]


def test_guard_blocks_real_calls_and_says_how_to_use_the_scripted_model() -> None:
    assert base.ALLOW_MODEL_REQUESTS is False  # the lllm pytest plugin (lllm.testing.plugin) turns requests off
    inv = LiteLLMInvoker()
    with pytest.raises(ModelRequestsDisabled, match=r"'gpt-4o' by agent 'ann' was blocked.*scripted") as info:
        inv.call(USER, model="gpt-4o", context=InvokeContext(agent="ann"))
    assert info.value.model == "gpt-4o"
    # an empty mock_response is falsy: litellm would call the provider, so the guard must stop it
    with pytest.raises(ModelRequestsDisabled):
        inv.call(USER, model="gpt-4o", model_args={"mock_response": ""})
    with pytest.raises(ModelRequestsDisabled):
        asyncio.run(inv.acall(USER, model="gpt-4o"))


def test_guard_flag_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, allowed in [("0", False), ("false", False), (" OFF ", False), ("no", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv("LLLM_ALLOW_MODEL_REQUESTS", value)
        assert base._env_allows_requests() is allowed
    monkeypatch.delenv("LLLM_ALLOW_MODEL_REQUESTS")
    assert base._env_allows_requests() is True


def test_with_the_guard_open_a_request_reaches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allowed, a call really goes out: here to a closed local port, which fails as a retryable connection error."""
    monkeypatch.setattr(base, "ALLOW_MODEL_REQUESTS", True)
    inv = LiteLLMInvoker(api_base="http://127.0.0.1:9/v1", api_key="sk-test", timeout=5, retry=RetryPolicy(max_retries=0))
    with pytest.raises(ModelAPIError, match="could not reach") as info:
        inv.call(USER, model="openai/gpt-4o")
    assert info.value.retryable is True


def test_acall() -> None:
    r = asyncio.run(LiteLLMInvoker().acall(USER, model="gpt-4o", model_args={"mock_response": "async"}))
    assert r.content == "async" and r.usage.cost > 0


# ---- the scripted model through litellm --------------------------------------------------------------


def test_scripted_through_litellm_text_tools_stream_and_cost() -> None:
    inv = ScriptedInvoker(
        [
            "plain answer",
            {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": "1+1"}}, {"name": "bad", "arguments": "{oops"}]},
            "a streamed answer in several chunks",
            {"content": "costed", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
        ],
        through_litellm=True,
        input_price=2.5,  # a simulated gpt-4o price (the scripted model costs $0 unless asked)
        output_price=10.0,
    )
    r = inv.call(USER, model="gpt-4o")
    assert r.content == "plain answer" and isinstance(r.raw, litellm.ModelResponse) and r.usage.cost > 0
    r = inv.call(USER, model="gpt-4o")
    assert [(t.name, t.arguments) for t in r.tool_calls] == [("run_python", '{"code": "1+1"}'), ("bad", "{oops")]
    h = Recorder()
    r = inv.call(USER, model="gpt-4o", stream_handler=h)
    assert len(h.tokens) > 3 and "".join(h.tokens) == "a streamed answer in several chunks" and h.done == 1
    assert r.usage.completion_tokens > 0 and r.usage.cost > 0
    r = inv.call(USER, model="gpt-4o")
    assert r.usage.prompt_tokens == 1000 and r.usage.cost == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
    inv.assert_complete()
    with pytest.raises(ScriptError, match="all 4 steps"):
        inv.call(USER, model="gpt-4o")


def test_scripted_through_litellm_errors_and_unknown_models() -> None:
    inv = ScriptedInvoker(
        [{"error": "timeout"}, {"error": "api_error", "status_code": 400, "message": "nope"}, "ok"],
        through_litellm=True,
        retry=RetryPolicy(max_retries=0),
    )
    with pytest.raises(ModelTimeoutError):
        inv.call(USER, model="gpt-4o")
    with pytest.raises(ModelAPIError, match="status 400.*nope"):
        inv.call(USER, model="gpt-4o")
    r = inv.call(USER, model="scripted-demo-model")  # litellm cannot place it: sent as OpenAI-compatible
    # litellm has no price for that name, but that is not why it costs nothing: the scripted model bills nobody
    assert r.content == "ok" and r.usage.cost == 0.0 and r.cost_note is None and r.model == "scripted"


@pytest.mark.parametrize("stream", [False, True])
def test_in_process_and_through_litellm_give_the_same_result(stream: bool) -> None:
    """The default in-process path and the litellm path normalise a step the same way (simulated prices match)."""
    steps = [
        {"content": "Sure.", "tool_calls": [{"name": "add", "arguments": {"a": 1}, "id": "c1"}], "usage": {"prompt_tokens": 40, "completion_tokens": 9}},
        {"content": "The answer is 2.", "usage": {"prompt_tokens": 55, "completion_tokens": 6}},
    ]
    results = {}
    for via in (False, True):
        inv = ScriptedInvoker(steps, through_litellm=via, input_price=2.5, output_price=10.0)
        handler = Recorder() if stream else None
        got = [inv.call(USER, model="gpt-4o", stream_handler=handler) for _ in steps]
        results[via] = [
            (r.content, [(t.id, t.name, t.arguments) for t in r.tool_calls], r.finish_reason, r.usage.prompt_tokens,
             r.usage.completion_tokens, round(r.usage.cost, 12))
            for r in got
        ]
        if handler is not None:
            assert "".join(handler.tokens) == "Sure.The answer is 2." and handler.done == 2
    assert results[False] == results[True]
