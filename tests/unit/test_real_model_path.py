"""The real-model path, end to end over HTTP: the litellm invoker against a fake OpenAI-compatible server on
127.0.0.1 (tests/fake_openai.py). Retry-After is honoured, a stalled stream is a timeout, a malformed body is
called malformed, the time limits hold, and the zero cost of an unpriced model says why, up to the log."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fake_openai import Reply, error, hang, malformed, stall, text, tool_calls
from lllm import cli
from lllm.core.agent import Agent
from lllm.core.trace import ModelCallRecord
from lllm.errors import ConfigError, ModelAPIError, ModelTimeoutError, RateLimitError
from lllm.invokers import RecordingStreamHandler, build_invoker
from lllm.invokers.base import RetryPolicy
from lllm.invokers.litellm import LiteLLMInvoker

USER = [{"role": "user", "content": "Say hello."}]
MODEL = "openai/fake-model"


def invoker(server: Any, **kw: Any) -> LiteLLMInvoker:
    return LiteLLMInvoker(api_base=server.url, api_key="sk-fake", **kw)


def gaps(server: Any) -> list[float]:
    return [b["at"] - a["at"] for a, b in zip(server.requests, server.requests[1:])]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_over_http_with_usage_and_an_explained_zero_cost(fake_openai: Any, stream: bool) -> None:
    server = fake_openai([tool_calls(("add", {"a": 1, "b": 2}), content="Adding.", usage=(30, 9))])
    handler = RecordingStreamHandler() if stream else None
    r = invoker(server).call(USER, model=MODEL, stream_handler=handler)
    assert r.content == "Adding." and [(c.name, c.arguments) for c in r.tool_calls] == [("add", '{"a": 1, "b": 2}')]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (30, 9)
    assert r.usage.cost == 0.0 and r.cost_note.startswith("litellm has no price for model 'openai/fake-model'")
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-fake"
    assert server.requests[0]["json"]["model"] == "fake-model" and bool(server.requests[0]["json"].get("stream")) is stream
    if stream:
        assert handler.text == "Adding." and handler.done == 1


def test_the_cost_note_reaches_the_message_the_log_and_logs_cost(fake_openai: Any, tmp_path: Any,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lllm.logging import sqlite_store

    server = fake_openai([text("Hello.")])
    db = tmp_path / "runs.db"
    store = sqlite_store(str(db))
    store.start_session("s1", tactic="unit", started_at=time.time())
    records: list[Any] = []

    def tracer(record: Any) -> None:
        record.session_id = "s1"
        records.append(record)
        store.record(record)

    agent = Agent(name="a", system_prompt="Sys.", model=MODEL, llm_invoker=invoker(server), tracer=tracer)
    agent.open("main")
    agent.receive("hi")
    message = agent.respond()
    assert message.cost == 0.0 and "litellm has no price for model 'openai/fake-model'" in message.metadata["cost_note"]
    (record,) = [r for r in records if isinstance(r, ModelCallRecord)]
    assert record.cost_note == message.metadata["cost_note"]
    store.end_session("s1", state="ok", cost=0.0)
    (row,) = store.query("SELECT cost, cost_note FROM model_calls")
    assert row["cost"] == 0.0 and row["cost_note"] == record.cost_note
    (summary,) = store.cost_summary(group_by="model")
    # the model that answered, as the server named it; the note names the model the call asked for
    assert summary.group == "fake-model" and summary.notes == [f"1 call(s) of 'fake-model': {record.cost_note}"]
    store.close()
    assert cli.main(["logs", "cost", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "notes on these costs:" in out and "unit: 1 call(s) of 'fake-model': litellm has no price" in out
    assert cli.main(["logs", "show", "s1", "--db", str(db)]) == 0
    assert "(cost: litellm has no price for model 'openai/fake-model'" in capsys.readouterr().out


def test_a_429_retry_after_is_honoured(fake_openai: Any) -> None:
    # a 50 ms backoff would retry at once: only the server's Retry-After makes the invoker wait 2 s
    server = fake_openai([error(429, "slow down", retry_after=2), text("after the wait")])
    r = invoker(server, retry=RetryPolicy(backoff=0.05, deadline=60)).call(USER, model=MODEL)
    assert r.content == "after the wait" and r.attempts == 2 and "RateLimitError" in r.errors[0]
    assert gaps(server)[0] >= 1.9


def test_retry_after_ms_and_an_http_date(fake_openai: Any) -> None:
    from email.utils import formatdate

    def answer(request: dict[str, Any]) -> Any:  # built when the request arrives: the date is 3 s from then
        n = len(server.requests)
        if n == 1:
            return Reply(status=429, body=error(429).body, headers={"retry-after-ms": "1500"})
        if n == 3:
            return Reply(status=429, body=error(429).body,
                         headers={"retry-after": formatdate(time.time() + 3, usegmt=True)})
        return text("one" if n == 2 else "two")

    server = fake_openai(answer)
    inv = invoker(server, retry=RetryPolicy(backoff=0.01, deadline=60))
    assert inv.call(USER, model=MODEL).content == "one"
    assert inv.call(USER, model=MODEL).content == "two"
    first, _, second = gaps(server)
    assert first >= 1.4 and second >= 1.0  # (an HTTP date has whole seconds)


def test_a_retry_after_past_the_deadline_gives_up_at_once_and_says_why(fake_openai: Any) -> None:
    server = fake_openai([error(429, "quota", retry_after=3600), text("never asked for")])
    start = time.monotonic()
    with pytest.raises(RateLimitError, match=r"asked to wait 3600s \(Retry-After\).*deadline of 300s") as info:
        invoker(server).call(USER, model=MODEL)
    assert time.monotonic() - start < 10 and len(server.requests) == 1
    assert info.value.retry_after == 3600 and info.value.attempts == 1


def test_a_stream_that_stalls_mid_way_is_a_model_timeout(fake_openai: Any) -> None:
    server = fake_openai([stall("The answer is forty-two, because", after=4)])
    handler = RecordingStreamHandler()
    with pytest.raises(ModelTimeoutError, match="stopped sending mid-stream") as info:
        invoker(server, timeout=1.0, retry=RetryPolicy(max_retries=0)).call(USER, model=MODEL, stream_handler=handler)
    assert "could not reach" not in str(info.value)
    assert "nothing more arrived within 1s after 4 chunk(s)" in str(info.value)
    assert handler.text == "The answer i" and handler.done == 0  # what had arrived reached the handler; no on_done


def test_a_stalled_stream_is_retried(fake_openai: Any) -> None:
    server = fake_openai([stall("partial", after=2), text("complete answer")])
    r = invoker(server, timeout=1.0, retry=RetryPolicy(backoff=0.01)).call(USER, model=MODEL,
                                                                           stream_handler=RecordingStreamHandler())
    assert r.content == "complete answer" and r.attempts == 2 and r.errors[0].startswith("ModelTimeoutError")


@pytest.mark.parametrize("body,shown", [
    ('{"id": "chatcmpl-1", "choices": [', "not JSON"),
    ("<html><body>502 Bad Gateway</body></html>", "it begins '<html>"),
    ('{"object": "list", "data": []}', "'choices' that is not a list"),
], ids=["cut-off", "html", "not-a-completion"])
def test_a_malformed_body_is_called_malformed_not_status_500(fake_openai: Any, body: str, shown: str) -> None:
    server = fake_openai([malformed(body)])
    with pytest.raises(ModelAPIError) as info:
        invoker(server, retry=RetryPolicy(max_retries=0)).call(USER, model=MODEL)
    message = str(info.value)
    assert "status 500" not in message and "malformed body" in message and shown in message
    assert info.value.malformed is True and info.value.status_code is None and info.value.retryable is True


def test_a_stream_without_sse_events_is_malformed_and_a_malformed_answer_is_retried(fake_openai: Any) -> None:
    server = fake_openai([malformed("<html>maintenance</html>"), text("fine now")])
    r = invoker(server, retry=RetryPolicy(backoff=0.01)).call(USER, model=MODEL, stream_handler=RecordingStreamHandler())
    assert r.content == "fine now" and r.attempts == 2
    assert "ended without an answer" in r.errors[0] and "status 500" not in r.errors[0]


def test_a_server_that_never_answers_fails_within_the_deadline(fake_openai: Any) -> None:
    server = fake_openai([hang(), hang(), hang(), hang()])
    start = time.monotonic()
    with pytest.raises(ModelTimeoutError, match=r"did not answer within [\d.]+s") as info:
        invoker(server, timeout=1.5, retry=RetryPolicy(backoff=0.01, deadline=4)).call(USER, model=MODEL)
    took = time.monotonic() - start
    assert 3.5 <= took < 12, took  # the deadline, not max_retries x timeout (nor the old 4 x 300 s)
    assert "deadline of 4s" in str(info.value) or info.value.attempts >= 2


def test_the_defaults_bound_a_call_to_minutes_not_twenty() -> None:
    inv = build_invoker({"invoker": "litellm"})
    assert (inv.timeout, inv.connect_timeout, inv.retry.deadline, inv.retry.max_retries) == (120.0, 10.0, 300.0, 3)
    custom = build_invoker({"invoker": "litellm", "timeout": 30, "connect_timeout": 2, "deadline": 90})
    assert (custom.timeout, custom.connect_timeout, custom.retry.deadline) == (30.0, 2.0, 90)
    with pytest.raises(ConfigError, match="deadline must be a number of seconds > 0"):
        build_invoker({"invoker": "litellm", "deadline": 0})
    with pytest.raises(ConfigError, match="connect_timeout must be a number of seconds > 0"):
        build_invoker({"invoker": "litellm", "connect_timeout": "soon"})
