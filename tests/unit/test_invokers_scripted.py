"""The scripted model: steps, tool calls, errors and retries, streaming, usage and cost, exhaustion, threads."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from pydantic import BaseModel

from lllm.errors import ConfigError, ModelAPIError, ModelTimeoutError, RateLimitError, ScriptError
from lllm.invokers import FunctionInvoker, InvokeContext, RecordingStreamHandler, ScriptedInvoker, build_invoker
from lllm.invokers.base import RetryPolicy

USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the world"}]


class Recorder(RecordingStreamHandler):
    def on_token(self, token: str) -> None:
        assert self.done == 0, "a token arrived after on_done"
        super().on_token(token)


def sleeps(inv: ScriptedInvoker) -> list[float]:
    waits: list[float] = []
    inv._sleep = waits.append
    return waits


def test_text_step_usage_costs_nothing_and_names_the_scripted_model() -> None:
    inv = ScriptedInvoker(["Hello, world!"])
    r = inv.call(USER, model="gpt-4o")
    assert r.content == "Hello, world!"
    assert r.tool_calls == []
    assert r.model == "scripted"  # not the gpt-4o the agent asked for: that model never answered
    assert r.finish_reason == "stop"
    assert r.attempts == 1 and r.errors == []
    # ~4 chars a token: "Hello, world!" is 13 chars -> 4 tokens; prompt = 2 messages * 4 + 4 + 6
    assert r.usage.completion_tokens == 4
    assert r.usage.prompt_tokens == 2 * 4 + 4 + 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.cost == 0.0  # nobody is billed for a scripted answer
    assert r.cost_note is None
    assert r.latency_s >= 0
    assert r.to_message() == {"role": "assistant", "content": "Hello, world!"}
    inv.assert_complete()


def test_given_usage_and_prices() -> None:
    inv = ScriptedInvoker(
        [{"content": "x", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}},
         {"content": "y", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.25}}],
        input_price=1.0,
        output_price=2.0,
    )
    r = inv.call(USER, model="m")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (1000, 500, 1500)
    assert r.usage.cost == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert r.cost_note.startswith("simulated: the scripted model priced at 1/2 USD") and r.model == "scripted"
    r = inv.call(USER, model="m")
    assert r.usage.cost == 0.25 and r.cost_note.startswith("simulated: the scripted step set this cost")


def test_a_simulated_gpt4o_price_is_asked_for_in_the_config() -> None:
    from lllm.invokers import build_invoker
    from lllm.invokers.scripted import GPT_4O_INPUT_PRICE, GPT_4O_OUTPUT_PRICE

    inv = build_invoker({"invoker": "scripted", "steps": ["Hello, world!"], "input_price": GPT_4O_INPUT_PRICE,
                         "output_price": GPT_4O_OUTPUT_PRICE})
    r = inv.call(USER, model="gpt-4o")
    assert r.usage.cost == pytest.approx((r.usage.prompt_tokens * 2.50 + r.usage.completion_tokens * 10.00) / 1e6)
    assert r.usage.cost > 0 and "no provider was billed" in r.cost_note and r.model == "scripted"


def test_zero_prices_report_no_cost() -> None:
    inv = ScriptedInvoker(["free"], input_price=0, output_price=0)
    r = inv.call(USER, model="m")
    assert r.usage.cost == 0.0 and r.cost_note is None


def test_tool_calls_dict_and_malformed_raw_arguments() -> None:
    inv = ScriptedInvoker([
        {"content": None, "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "echo", "arguments": "{not json", "id": "c9"}]},
    ])
    r = inv.call(USER, model="gpt-4o", tools=[{"type": "function", "function": {"name": "add", "parameters": {}}}])
    assert r.content is None
    assert r.finish_reason == "tool_calls"
    assert [(t.name, t.arguments) for t in r.tool_calls] == [("add", json.dumps({"a": 1, "b": 2})), ("echo", "{not json")]
    assert r.tool_calls[1].id == "c9"
    assert len({t.id for t in r.tool_calls}) == 2
    msg = r.to_message()
    assert msg["tool_calls"][0] == {"id": r.tool_calls[0].id, "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}


def test_calls_record_messages_and_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}]
    inv = ScriptedInvoker(["a", "b"])
    msgs = list(USER)
    inv.call(msgs, model="gpt-4o", tools=tools, context=InvokeContext(agent="ann", dialog="d1"))
    msgs.append({"role": "assistant", "content": "a"})  # the caller's later edits do not change the record
    inv.call(msgs, model="gpt-4o", model_args={"temperature": 0})
    assert len(inv.calls) == 2
    assert inv.calls[0].messages == USER and inv.calls[0]["tools"] == tools
    assert inv.calls[0].context == InvokeContext(agent="ann", dialog="d1")
    assert inv.calls[1]["messages"][-1] == {"role": "assistant", "content": "a"}
    assert inv.calls[1].tools is None and inv.calls[1].model_args == {"temperature": 0}


def test_rate_limit_then_good_step_succeeds_after_one_backoff() -> None:
    inv = ScriptedInvoker([{"error": "rate_limit", "message": "slow down"}, "fine"])
    waits = sleeps(inv)
    r = inv.call(USER, model="gpt-4o")
    assert r.content == "fine"
    assert r.attempts == 2
    assert len(waits) == 1 and 0 < waits[0] <= 0.05
    assert len(r.errors) == 1 and "RateLimitError" in r.errors[0] and "slow down" in r.errors[0]
    assert len(inv.calls) == 2
    inv.assert_complete()


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [("rate_limit", RateLimitError, 429), ("timeout", ModelTimeoutError, 408), ("api_error", ModelAPIError, 500)],
)
def test_error_steps_raise_the_litellm_path_errors(kind: str, cls: type, status: int) -> None:
    inv = ScriptedInvoker([{"error": kind, "message": "boom"}], retry=RetryPolicy(max_retries=0))
    with pytest.raises(cls) as info:
        inv.call(USER, model="gpt-4o")
    assert type(info.value) is cls
    assert info.value.status_code == status and info.value.model == "gpt-4o"
    assert "boom" in str(info.value)


def test_retries_are_bounded() -> None:
    inv = ScriptedInvoker([{"error": "rate_limit"}] * 5, retry=RetryPolicy(max_retries=2, backoff=0.001))
    waits = sleeps(inv)
    with pytest.raises(RateLimitError) as info:
        inv.call(USER, model="gpt-4o")
    assert "gave up after 3 attempts" in str(info.value)
    assert info.value.attempts == 3 and len(info.value.errors) == 3
    assert len(waits) == 2
    assert inv.steps_remaining == 2
    assert isinstance(info.value.__cause__, RateLimitError)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff=1.0, backoff_max=5.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(backoff=1.0, backoff_max=5.0)
    waits = [jittered.delay(3) for _ in range(50)]  # 4 s scaled into [2, 4]
    assert all(2.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 1


def test_client_error_is_not_retried_but_5xx_is() -> None:
    inv = ScriptedInvoker([{"error": "api_error", "status_code": 400, "message": "bad request"}, "never"])
    with pytest.raises(ModelAPIError) as info:
        inv.call(USER, model="gpt-4o")
    assert info.value.status_code == 400
    assert inv.steps_remaining == 1
    inv2 = ScriptedInvoker([{"error": "api_error", "status_code": 503}, {"error": "timeout"}, "ok"])
    sleeps(inv2)
    assert inv2.call(USER, model="gpt-4o").attempts == 3


def test_past_the_last_step_names_count_agent_dialog_and_last_message() -> None:
    inv = ScriptedInvoker(["one", "two"])
    inv.call(USER, model="gpt-4o")
    inv.call(USER, model="gpt-4o")
    msgs = [*USER, {"role": "user", "content": "and one more thing"}]
    with pytest.raises(ScriptError) as info:
        inv.call(msgs, model="gpt-4o", context=InvokeContext(agent="planner", dialog="plan"))
    text = str(info.value)
    assert "all 2 steps" in text and "'planner'" in text and "'plan'" in text and "and one more thing" in text
    assert info.value.agent == "planner" and info.value.dialog == "plan" and info.value.steps_total == 2


def test_assert_complete_and_context_manager() -> None:
    inv = ScriptedInvoker(["one", {"content": "two", "tool_calls": [{"name": "t"}]}])
    inv.call(USER, model="m")
    assert repr(inv) == "ScriptedInvoker(steps 1/2 used, 1 calls)"
    with pytest.raises(ScriptError, match=r"1 of 2 scripted steps were never requested.*'two' \+ tool calls t"):
        inv.assert_complete()
    with pytest.raises(ScriptError):
        with ScriptedInvoker(["left over"]):
            pass
    with ScriptedInvoker(["used"]) as used:
        used.call(USER, model="m")


def test_streaming_text_arrives_in_chunks_then_on_done() -> None:
    text = "Once upon a time, a robot learned to paint."
    inv = ScriptedInvoker([text])
    h = Recorder()
    r = inv.call(USER, model="gpt-4o", stream_handler=h)
    assert len(h.tokens) >= 5 and "".join(h.tokens) == text
    assert h.done == 1
    assert r.content == text and r.usage.completion_tokens == (len(text) + 3) // 4 and r.usage.cost == 0.0


def test_streaming_tool_calls_are_assembled_from_deltas() -> None:
    args = {"query": "a fairly long argument string that spans several deltas", "n": 3}
    inv = ScriptedInvoker([{"content": "Let me look.", "tool_calls": [{"name": "search", "arguments": args}, {"name": "noop"}]}])
    h = Recorder()
    r = inv.call(USER, model="gpt-4o", stream_handler=h)
    assert "".join(h.tokens) == "Let me look."
    assert [(t.name, json.loads(t.arguments)) for t in r.tool_calls] == [("search", args), ("noop", {})]
    assert r.finish_reason == "tool_calls" and h.done == 1


def test_on_done_not_called_when_the_call_fails() -> None:
    inv = ScriptedInvoker([{"error": "api_error", "status_code": 401}])
    h = Recorder()
    with pytest.raises(ModelAPIError):
        inv.call(USER, model="m", stream_handler=h)
    assert h.done == 0


def test_responder_one_and_two_arguments() -> None:
    echo = FunctionInvoker(lambda messages: "echo: " + messages[-1]["content"])
    assert echo.call(USER, model="m").content == "echo: Say hello to the world"
    seen = []

    def smart(messages, call):
        seen.append((call.model, call.context.agent if call.context else None))
        return {"content": None, "tool_calls": [{"name": "f", "arguments": {"n": len(messages)}}]} if len(messages) < 3 else "done"

    inv = build_invoker({"invoker": "scripted", "responder": smart})
    assert isinstance(inv, ScriptedInvoker)
    assert inv.call(USER, model="gpt-4o", context=InvokeContext(agent="a")).tool_calls[0].arguments == '{"n": 2}'
    assert inv.call([*USER, {"role": "user", "content": "x"}], model="gpt-4o").content == "done"
    assert seen == [("gpt-4o", "a"), ("gpt-4o", None)]
    inv.assert_complete()  # nothing is ever "left" for a responder
    assert len(inv.calls) == 2


def test_responder_may_raise_provider_errors_and_dotted_path() -> None:
    flaky = iter([{"error": "rate_limit"}, "ok"])
    inv = FunctionInvoker(lambda m: next(flaky))
    sleeps(inv)
    assert inv.call(USER, model="m").attempts == 2
    by_path = build_invoker({"invoker": "function", "responder": "json:dumps"})
    assert by_path.call(USER, model="m").content == json.dumps(USER)


def test_responder_bad_answer_is_a_clear_error() -> None:
    inv = FunctionInvoker(lambda m: 42)
    with pytest.raises(ConfigError, match="responder answer to request 1.*42"):
        inv.call(USER, model="m")


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (42, r"scripted step 1 is 42 \(int\)"),
        ({"content": "x", "tool_call": []}, r"step 1 .*tool_call: Extra inputs"),
        ({"error": "meltdown"}, r"step 1 .*error: Input should be 'rate_limit', 'timeout' or 'api_error'"),
        ({"tool_calls": [{"arguments": {}}]}, r"step 1 .*tool_calls.0.name: Field required"),
        ({"content": "x", "usage": {"prompt_tokens": -1, "completion_tokens": 0}}, r"usage.prompt_tokens"),
    ],
)
def test_bad_steps_are_config_errors_naming_the_step(step: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ScriptedInvoker(["fine", step])


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="either `steps` or `responder`"):
        ScriptedInvoker(["a"], responder=lambda m: "b")
    with pytest.raises(ConfigError, match="must be a list"):
        ScriptedInvoker("just a string")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="input_price"):
        ScriptedInvoker([], input_price=-1)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['step'\].*accepted: .*'steps'"):
        build_invoker({"invoker": "scripted", "step": ["a"]})
    with pytest.raises(ConfigError, match="max_retries must be an int >= 0"):
        build_invoker({"invoker": "scripted", "steps": [], "max_retries": -1})


def test_from_yaml_config() -> None:
    config = yaml.safe_load(
        """
        invoker: scripted
        max_retries: 1
        backoff: 0
        steps:
          - "Plan ready"
          - content: null
            tool_calls:
              - name: run_python
                arguments: {code: "print(1 + 1)"}
          - error: rate_limit
            message: too fast
          - content: done
            usage: {prompt_tokens: 10, completion_tokens: 2}
        """
    )
    inv = build_invoker(config)
    assert isinstance(inv, ScriptedInvoker) and inv.retry.max_retries == 1 and inv.steps_total == 4
    assert inv.call(USER, model="m").content == "Plan ready"
    assert json.loads(inv.call(USER, model="m").tool_calls[0].arguments) == {"code": "print(1 + 1)"}
    r = inv.call(USER, model="m")
    assert (r.content, r.attempts, r.usage.prompt_tokens) == ("done", 2, 10)
    inv.assert_complete()


def test_images_are_recorded_and_counted() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    inv = ScriptedInvoker(["a chart"])
    r = inv.call(msgs, model="gpt-4o")
    assert inv.calls[0].messages[0]["content"][1] == part
    assert r.usage.prompt_tokens == 4 + 4 + 85


def test_structured_output_is_validated() -> None:
    class Plan(BaseModel):
        steps: list[str]

    inv = ScriptedInvoker(['{"steps": ["a", "b"]}', "not json"])
    r = inv.call(USER, model="gpt-4o", response_format=Plan)
    assert r.parsed == Plan(steps=["a", "b"])
    assert inv.calls[0].response_format is Plan
    assert inv.call(USER, model="gpt-4o", response_format=Plan).parsed is None


def test_acall() -> None:
    inv = ScriptedInvoker(["async hello"])
    assert asyncio.run(inv.acall(USER, model="m")).content == "async hello"


def test_thread_safe_each_step_served_exactly_once() -> None:
    steps = [f"answer {i}" for i in range(1000)]
    inv = ScriptedInvoker(steps)
    barrier = threading.Barrier(50)

    def worker(w: int) -> list[str]:
        barrier.wait()
        return [inv.call([{"role": "user", "content": f"w{w}"}], model="m").content for _ in range(20)]

    with ThreadPoolExecutor(50) as pool:
        got = [c for chunk in pool.map(worker, range(50)) for c in chunk]
    assert sorted(got) == sorted(steps)
    assert len(inv.calls) == 1000
    inv.assert_complete()


def test_not_collected_by_pytest_and_no_litellm_import() -> None:
    assert ScriptedInvoker.__test__ is False and FunctionInvoker.__test__ is False
    if "litellm" not in sys.modules:  # another test in this process may have imported it on purpose
        ScriptedInvoker(["x"]).call(USER, model="m")
        assert "litellm" not in sys.modules


# ---- scripts keyed by task: every call replays its task's own script (issue 10) -------------------------------

def _tool_then_answer(label: str) -> list:
    return [{"content": None, "tool_calls": [{"name": "echo", "arguments": {"text": label}}]}, f"<label>{label}</label>"]


def test_scripts_give_every_call_of_a_concurrent_batch_its_own_script() -> None:
    from lllm.core.runtime import Runtime
    from lllm.core.tactic import Tactic

    class Labeller(Tactic, register=False):
        name = "labeller_scripts"
        agent_group = ["a"]

        def call(self, task: str) -> str:
            def echo(text: str) -> str:
                return text

            agent = self.agents["a"]
            agent.tools.append(echo)
            agent.open("main")
            agent.receive(task)
            return agent.respond().parsed["raw"].removeprefix("<label>").removesuffix("</label>")

    tasks = {"I love it": "positive", "awful": "negative", "meh": "neutral"}
    config = {"invoker": "scripted",
              "invoker_config": {"scripts": {t: _tool_then_answer(label) for t, label in tasks.items()}},
              "agent_configs": [{"name": "a", "model_name": "m", "system_prompt": "Label it."}]}
    tactic = Labeller(config, runtime=Runtime("scripts"))
    batch = list(tasks) * 10  # the same task 10 times: each call gets its own copy of that task's script
    results = tactic.bcall(batch, max_workers=16)
    assert results == [tasks[t] for t in batch]
    tactic.llm_invoker.assert_complete()
    assert {c.task for c in tactic.llm_invoker.calls} == set(tasks)


def test_a_task_script_that_runs_out_names_the_task_and_a_short_call_is_reported() -> None:
    from lllm.invokers.base import call_scope

    inv = ScriptedInvoker(scripts={"t1": ["one"], "t2": ["a", "b"]}, steps=["shared"])
    with call_scope("call-1", "t1"):
        assert inv.call(USER, model="m").content == "one"
        with pytest.raises(ScriptError, match=r"no step 2 of task 't1'.s script \(this call's copy\)"):
            inv.call(USER, model="m")
    with call_scope("call-2", "t1"):  # a new call on t1 starts its script again
        assert inv.call(USER, model="m").content == "one"
    with call_scope("call-3", "elsewhere"):  # no script of its own: the shared steps
        assert inv.call(USER, model="m").content == "shared"
    with call_scope("call-4", "t2"):
        assert inv.call(USER, model="m").content == "a"
    with pytest.raises(ScriptError, match=r"a call on task 't2' used 1 of the 2 steps of its script"):
        inv.assert_complete()
    with pytest.raises(ConfigError, match="scripts"):
        ScriptedInvoker(scripts={"t": "not a list"})  # type: ignore[dict-item]
