"""Cassettes on the scripted model and an in-process proxy: record, replay with nothing live (also under a batch
of many threads in another order), failures recorded and replayed, the mismatch diff, requests never made,
secrets kept out of the file, and the `$LLLM_CASSETTE` variables through the registries' entry points."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from lllm import Tactic
from lllm.core.agent import Agent
from lllm.core.prompt import Prompt
from lllm.errors import (
    CassetteError,
    CassetteMismatch,
    EndpointNotFound,
    ModelRequestsDisabled,
    RateLimitError,
    ScriptError,
)
from lllm.invokers import RecordingStreamHandler, build_invoker, override
from lllm.invokers.recording import RecordingInvoker
from lllm.invokers.scripted import ScriptedInvoker
from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.redact import register_secret
from lllm.testing import Cassette, cassette


class Worker(Tactic, register=False):
    """One agent; a task "a|b" asks twice in one dialog, so every call makes a stream of requests."""

    name = "cassette_worker"
    agent_group = ["w"]
    turns: int | None = None
    """Ask only this many times (a run that changed and stops early), or as many as the task has parts."""
    more: tuple[str, ...] = ()
    """Ask these after the task's parts (a run that changed and asks more)."""

    def call(self, task: str, **kwargs: Any) -> list[str]:
        w = self.agents["w"]
        w.stream_handler = RecordingStreamHandler()
        w.open("main")
        out = []
        for part in [*task.split("|"), *self.more][:self.turns]:
            w.receive(part)
            out.append(w.respond().content)
        return out + ["".join(w.stream_handler.tokens)]


def responder(messages: list[dict[str, Any]]) -> str:
    return f"echo {messages[-1]['content']} after {len(messages)}"


def config(**invoker: Any) -> dict[str, Any]:
    return {"invoker": "scripted", "invoker_config": invoker or {"responder": responder},
            "agent_configs": [{"name": "w", "model_name": "gpt-4o", "system_prompt": "You echo."}]}


NOTHING = {"steps": []}  # a scripted model with no step: any request that reaches it fails


def test_a_batch_recorded_under_threads_replays_in_any_order_with_nothing_behind_it(tmp_path: Path) -> None:
    tasks = [f"t{i}|again{i}" for i in range(8)]
    tape = tmp_path / "batch.yaml"
    with cassette(tape, mode="record"):
        recorded = Worker(config()).bcall(tasks, max_workers=8)
    assert recorded[3] == ["echo t3 after 2", "echo again3 after 4", "echo t3 after 2echo again3 after 4"]
    text = tape.read_text()
    assert text.startswith("# An lllm cassette") and text.count("  n: 1\n") == 8
    with cassette(tape, mode="replay") as rep:
        replayed = Worker(config(**NOTHING)).bcall(list(reversed(tasks)), max_workers=8)
    assert list(reversed(replayed)) == recorded and rep.unused() == []
    # recorded twice: the file is the same (sorted, not in the order the threads happened to run)
    with cassette(tmp_path / "again.yaml", mode="record"):
        Worker(config()).bcall(tasks, max_workers=8)
    assert (tmp_path / "again.yaml").read_text() == text


def test_a_task_run_twice_keeps_its_calls_apart(tmp_path: Path) -> None:
    answers = iter(["first", "second"])
    lock = threading.Lock()

    def changing(messages: list[dict[str, Any]]) -> str:
        with lock:
            return next(answers)

    with cassette(tmp_path / "twice.yaml", mode="record"):
        tactic = Worker(config(responder=changing))
        assert [tactic("same")[0], tactic("same")[0]] == ["first", "second"]
    assert "  call: 1\n" in (tmp_path / "twice.yaml").read_text()
    with cassette(tmp_path / "twice.yaml", mode="replay"):
        tactic = Worker(config(**NOTHING))
        assert [tactic("same")[0], tactic("same")[0]] == ["first", "second"]


def test_streamed_pieces_reach_the_handler_and_on_done_comes_once(tmp_path: Path) -> None:
    inv = ScriptedInvoker(["Hello there, streaming world."], stream_chunk_chars=5)
    messages = [{"role": "user", "content": "hi"}]
    with cassette(tmp_path / "s.yaml", mode="record") as tape:
        live = RecordingStreamHandler()
        tape.wrap(inv).call(messages, model="m", stream_handler=live)
    with cassette(tmp_path / "s.yaml", mode="replay") as tape:
        handler = RecordingStreamHandler()
        result = tape.wrap(ScriptedInvoker([])).call(messages, model="m", stream_handler=handler)
    assert handler.tokens == live.tokens == ["Hello", " ther", "e, st", "reami", "ng wo", "rld."]
    assert handler.done == live.done == 1 and result.content == "Hello there, streaming world."
    assert result.model == "scripted" and result.usage.completion_tokens > 0


class Verdict(BaseModel):
    ok: bool
    why: str


def test_structured_output_and_retried_failures_replay_as_recorded(tmp_path: Path) -> None:
    steps = [{"error": "rate_limit", "message": "slow down"}, '{"ok": true, "why": "fine"}',
             {"error": "timeout", "message": "gone quiet"}, {"error": "timeout", "message": "gone quiet"}]
    inv = ScriptedInvoker(steps, retry=None)
    inv.retry = type(inv.retry)(max_retries=1, backoff=0.0, jitter=False)
    messages = [{"role": "user", "content": "judge"}]
    with cassette(tmp_path / "f.yaml", mode="record") as tape:
        wrapped = tape.wrap(inv)
        first = wrapped.call(messages, model="m", response_format=Verdict)
        with pytest.raises(Exception) as live_error:
            wrapped.call(messages, model="m")
    with cassette(tmp_path / "f.yaml", mode="replay") as tape:
        wrapped = tape.wrap(ScriptedInvoker([]))
        again = wrapped.call(messages, model="m", response_format=Verdict)
        with pytest.raises(type(live_error.value)) as replayed_error:
            wrapped.call(messages, model="m")
    assert again.parsed == first.parsed == Verdict(ok=True, why="fine")
    assert (again.attempts, again.errors) == (first.attempts, first.errors) == (2, first.errors)
    assert "RateLimitError" in again.errors[0]
    assert str(replayed_error.value) == str(live_error.value) and "gone quiet" in str(replayed_error.value)
    assert replayed_error.value.facts.get("status_code") == 408
    assert not isinstance(live_error.value, RateLimitError)


def test_a_changed_request_fails_with_a_diff_and_the_replay_stays_failed(tmp_path: Path) -> None:
    tape = tmp_path / "d.yaml"
    with cassette(tape, mode="record"):
        Worker(config())("one|two")
    changed = config(**NOTHING)
    changed["agent_configs"][0]["system_prompt"] = "You echo.\nAlways in capitals."
    # the cassette remembers: a later exchange fails too, and so does the end of the block (the run may have
    # swallowed the error, as a batch or the gateway would)
    with pytest.raises(CassetteMismatch, match="differs from the recorded one") as at_close:
        with cassette(tape, mode="replay") as rep:
            with pytest.raises(CassetteMismatch) as info:
                Worker(changed)("one|two")
            with pytest.raises(CassetteMismatch, match="already failed, at its first difference"):
                rep.wrap(ScriptedInvoker([])).call([{"role": "user", "content": "x"}], model="m")
    message = str(info.value)
    assert str(at_close.value) == message
    assert "model request 1 of agent 'w', dialog 'main', task 'one|two' differs from the recorded one" in message
    assert "--- recorded (d.yaml)\n+++ this run\n" in message
    assert "-  content: You echo.\n+  content: |-\n+    You echo.\n+    Always in capitals." in message
    assert "record the cassette again (mode='record')" in message


def test_a_run_that_stops_early_or_asks_more_is_reported(tmp_path: Path) -> None:
    tape = tmp_path / "e.yaml"
    with cassette(tape, mode="record"):
        Worker(config())("one|two")
    def worker(turns: int | None = None, more: tuple[str, ...] = ()) -> Worker:
        tactic = Worker(config(**NOTHING))  # built inside the cassette block: its invoker is wrapped
        tactic.turns, tactic.more = turns, more
        return tactic

    with pytest.raises(CassetteError, match=r"1 recorded exchange\(s\) were never replayed:\n  - model request 2 of "
                                            r"agent 'w', dialog 'main', task 'one\|two'\nThe run stopped earlier"):
        with cassette(tape, mode="replay"):
            worker(turns=1)("one|two")
    with cassette(tape, mode="replay", allow_unused=True):
        assert worker(turns=1)("one|two") == ["echo one after 2", "echo one after 2"]
    with pytest.raises(CassetteMismatch, match=r"has no model request 3 of agent 'w'.*it recorded 2 for it"):
        with cassette(tape, mode="replay", allow_unused=True):
            worker(more=("three",))("one|two")
    with pytest.raises(CassetteMismatch, match=r"task 'other'.*It holds requests of: agent 'w', dialog 'main', task "
                                               r"'one\|two'"):
        with cassette(tape, mode="replay"):
            Worker(config(**NOTHING))("other")


def test_modes_and_bad_files(tmp_path: Path) -> None:
    tape = tmp_path / "sub" / "auto.yaml"
    with cassette(tape) as first:  # auto, no file: records (and creates the folder)
        Worker(config())("hi")
    with cassette(tape) as second:  # auto, a file: replays
        Worker(config(**NOTHING))("hi")
    assert (first.mode, second.mode) == ("record", "replay")
    with pytest.raises(CassetteError, match="does not exist, so there is nothing to replay. Record it first"):
        Cassette(tmp_path / "missing.yaml", mode="replay")
    with pytest.raises(CassetteError, match=r"mode must be one of \['record', 'replay', 'auto'\], got 'play'"):
        Cassette(tape, mode="play")
    (tmp_path / "junk.yaml").write_text("just: [a, list")
    with pytest.raises(CassetteError, match="(?s)cannot be read: ParserError.*Record it again"):
        Cassette(tmp_path / "junk.yaml", mode="replay")
    (tmp_path / "cut.yaml").write_text("lllm_cassette: 1\nmodel_requests:\n- {agent: a, dialog: main, n: 0, request: {}}\n")
    with pytest.raises(CassetteError, match="is malformed .*a model request without its request and response"):
        Cassette(tmp_path / "cut.yaml", mode="replay")
    (tmp_path / "other.yaml").write_text("key: value\n")
    with pytest.raises(CassetteError, match="is not an lllm cassette"):
        Cassette(tmp_path / "other.yaml", mode="replay")


def test_the_guard_still_stops_a_recording_and_nothing_is_recorded(tmp_path: Path) -> None:
    tape = tmp_path / "guarded.yaml"
    live = {"invoker": "litellm",
            "agent_configs": [{"name": "w", "model_name": "gpt-4o", "system_prompt": "You echo."}]}
    with pytest.raises(ModelRequestsDisabled, match=r"was blocked.*The cassette '.*guarded.yaml' is recording \(its "
                                                    r"file did not exist, so mode 'auto' records\)"):
        with cassette(tape, mode="auto"):  # no file: it records, and a real request is still refused
            Worker(live)("hi")
    assert "model_requests: []" in tape.read_text()
    with cassette(tmp_path / "scripted.yaml", mode="record"), override(ScriptedInvoker(["only one"])):
        tactic = Worker(config())
        assert tactic("hi")[0] == "only one"
        with pytest.raises(ScriptError):  # out of steps: not an answer, not recorded; the stream index is given back
            tactic("hi")
    assert (tmp_path / "scripted.yaml").read_text().count("- task: hi") == 1


class Counter(BaseProxy):
    _proxy_name = "Counter"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @BaseProxy.endpoint(category="c", endpoint="add", description="Adds.", params={"a*": (int, 1), "b": (int, 2)})
    def add(self, a: int, b: int = 0) -> dict[str, int]:
        self.calls += 1
        return {"sum": a + b, "call": self.calls}


def test_call_api_answers_and_errors_are_recorded_and_replayed_without_the_proxy(tmp_path: Path) -> None:
    tape = tmp_path / "api.yaml"
    live = Counter()
    with cassette(tape, mode="record"):
        manager = ProxyManager(proxies={"count": live})
        assert manager.call("count/add", {"a": 1, "b": 2}) == {"sum": 3, "call": 1}
        assert manager.call("count/add", {"a": 1, "b": 2}) == {"sum": 3, "call": 2}  # same call, a new answer
        assert manager.call("count/add", {"a": 5}) == {"sum": 5, "call": 3}
        with pytest.raises(EndpointNotFound) as live_error:
            manager.call("count/sub", {"a": 1})
    idle = Counter()
    with cassette(tape, mode="replay") as rep:
        manager = ProxyManager(proxies={"count": idle})
        assert manager.call("count/add", {"a": 5}) == {"sum": 5, "call": 3}
        assert manager.call("count/add", {"b": 2, "a": 1}) == {"sum": 3, "call": 1}  # the same call: key order is not
        assert manager.call("count/add", {"a": 1, "b": 2}) == {"sum": 3, "call": 2}  # ... in recorded order
        with pytest.raises(EndpointNotFound) as replayed_error:
            manager.call("count/sub", {"a": 1})
        assert rep.unused() == []
    assert idle.calls == 0 and str(replayed_error.value) == str(live_error.value)
    with pytest.raises(CassetteMismatch) as info:
        with cassette(tape, mode="replay"):
            ProxyManager(proxies={"count": idle}).call("count/add", {"a": 6})
    message = str(info.value)
    assert "did not record CALL_API('count/add', {\"a\": 6}); the nearest recorded call differs:" in message
    assert "-  a: 5\n+  a: 6" in message and idle.calls == 0
    with pytest.raises(CassetteMismatch, match=r"was made 2 times in this run; the recording made it 1 times"):
        with cassette(tape, mode="replay", allow_unused=True):
            manager = ProxyManager(proxies={"count": idle})
            manager.call("count/add", {"a": 5})
            manager.call("count/add", {"a": 5})


def test_no_secret_enters_the_file_in_any_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = "env-PROVIDER-key-000111222"
    proxy_key = "proxy-SECRET-value-333444"
    invoker_key = "invoker-KEY-555666777888"
    monkeypatch.setenv("ACME_API_KEY", env_key)
    register_secret(proxy_key, "ACME_PROXY_KEY")
    blob = base64.b64encode(f"user:{proxy_key}".encode()).decode()
    leaky = ScriptedInvoker([f"the key is {env_key} and {proxy_key}; basic {blob}"])
    leaky.api_key = invoker_key  # type: ignore[attr-defined]  # as a litellm invoker holds one
    with cassette(tmp_path / "secret.yaml", mode="record") as tape:
        tape.wrap(leaky).call(
            [{"role": "user", "content": f"my key: {invoker_key}"}], model="m",
            model_args={"api_key": "sk-inline-000999888777", "api_base": "https://bob:hunter2hunter2@llm.example/v1",
                        "extra_headers": {"Authorization": "Bearer tok-AAA-BBB-CCC", "X-Trace": "keep-me"}})
    written = (tmp_path / "secret.yaml").read_text()
    for secret in (env_key, proxy_key, invoker_key, "sk-inline-000999888777", "hunter2hunter2", "tok-AAA-BBB-CCC",
                   base64.b64encode(proxy_key.encode()).decode()[:12]):
        assert secret not in written, secret
    assert "[redacted ACME_API_KEY]" in written and "[redacted ACME_PROXY_KEY]" in written
    assert "https://[redacted]@llm.example/v1" in written and "X-Trace: keep-me" in written
    # the replay scrubs this run's request the same way, so it matches
    with cassette(tmp_path / "secret.yaml", mode="replay") as tape:
        tape.wrap(ScriptedInvoker([])).call(
            [{"role": "user", "content": f"my key: {invoker_key}"}], model="m",
            model_args={"api_key": "sk-another-key-42424242", "api_base": "https://bob:hunter2hunter2@llm.example/v1",
                        "extra_headers": {"Authorization": "Bearer tok-AAA-BBB-CCC", "X-Trace": "keep-me"}})


PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(range(256)) * 4).decode()


class Images(BaseProxy):
    @BaseProxy.endpoint(category="i", endpoint="chart", description="A chart.")
    def chart(self) -> dict[str, str]:
        return {"png": PNG}


def test_images_in_requests_are_kept_as_digests_and_answers_are_replayed_whole(tmp_path: Path) -> None:
    png = PNG
    message = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                            {"type": "image_url", "image_url": {"url": png}}]}]
    with cassette(tmp_path / "img.yaml", mode="record") as tape:
        tape.wrap(ScriptedInvoker(["a png"])).call(message, model="m")
    written = (tmp_path / "img.yaml").read_text()
    assert png[40:80] not in written and "url: data:image/png;sha256," in written
    other = png[:-8] + "AAAAAAA="
    with pytest.raises(CassetteMismatch, match=r"-\s+url: data:image/png;sha256,"):
        with cassette(tmp_path / "img.yaml", mode="replay") as tape:
            tape.wrap(ScriptedInvoker([])).call(
                [{"role": "user", "content": [message[0]["content"][0],
                                              {"type": "image_url", "image_url": {"url": other}}]}], model="m")
    with cassette(tmp_path / "answer.yaml", mode="record"):
        assert ProxyManager(proxies={"img": Images()}).call("img/chart") == {"png": PNG}
    with cassette(tmp_path / "answer.yaml", mode="replay"):
        assert ProxyManager(proxies={"img": Images()}).call("img/chart") == {"png": PNG}


def test_the_environment_variables_wrap_every_built_invoker_and_hook_the_proxies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.testing.cassettes import close_env_cassette

    tape = tmp_path / "env.yaml"
    monkeypatch.setenv("LLLM_CASSETTE", str(tape))
    monkeypatch.setenv("LLLM_CASSETTE_MODE", "record")
    try:
        with override(ScriptedInvoker(["from the env cassette"])):
            invoker = build_invoker({"invoker": "litellm"})
            assert isinstance(invoker, RecordingInvoker) and isinstance(invoker.inner, ScriptedInvoker)
            agent = Agent(name="a", system_prompt=Prompt(path="p", prompt="Sys."), model="gpt-4o",
                          llm_invoker=invoker)
            agent.open("main")
            agent.receive("hi")
            assert agent.respond().content == "from the env cassette"
        assert ProxyManager(proxies={"count": Counter()}).call("count/add", {"a": 2}) == {"sum": 2, "call": 1}
        assert close_env_cassette() is not None and tape.exists()
        monkeypatch.setenv("LLLM_CASSETTE_MODE", "replay")
        invoker = build_invoker({"invoker": "scripted", "steps": []})
        agent = Agent(name="a", system_prompt=Prompt(path="p", prompt="Sys."), model="gpt-4o", llm_invoker=invoker)
        agent.open("main")
        agent.receive("hi")
        assert agent.respond().content == "from the env cassette"
        idle = Counter()
        assert ProxyManager(proxies={"count": idle}).call("count/add", {"a": 2}) == {"sum": 2, "call": 1}
        assert idle.calls == 0
    finally:
        close_env_cassette()
    monkeypatch.delenv("LLLM_CASSETTE")
    assert not isinstance(build_invoker({"invoker": "scripted", "steps": []}), RecordingInvoker)
