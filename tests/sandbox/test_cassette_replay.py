"""A cassette records a real run once and replays it with nothing live: the litellm invoker against the fake
OpenAI-compatible server on loopback (a streamed tool call, then a streamed answer), the agent's code in a real
Docker sandbox, and a CALL_API through the gateway to the built-in FMP proxy whose upstream is a loopback fake.
With both servers stopped the replay gives the same transcript, the same streamed text and the same log; a
changed prompt fails with a diff; no key is in the file."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fake_openai import text, tool_calls
from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.errors import CassetteMismatch
from lllm.invokers import RecordingStreamHandler
from lllm.logging import sqlite_store
from lllm.testing import cassette

pytestmark = pytest.mark.docker

MODEL_KEY = "sk-cassette-MODEL-key-0123456789"
HEADER_KEY = "hdr-cassette-SECRET-9876543210"
FMP_KEY = "fmp-cassette-SECRET-key-4567"
CODE = 'q = CALL_API("fmp/quote", {"symbol": "AAPL"})\nprint(q["symbol"], q["price"])'
TASK = "What does AAPL trade at?"


class Analyst(Tactic, register=False):
    """One agent, streaming; returns the answer, the dialog as the model saw it and the streamed text."""

    name = "cassette_analyst"
    agent_group = ["analyst"]

    def call(self, task: str, **kwargs: Any) -> dict[str, Any]:
        agent = self.agents["analyst"]
        agent.stream_handler = handler = RecordingStreamHandler()
        dialog = agent.open("main")
        agent.receive(task)
        answer = agent.respond()
        return {"answer": answer.content, "transcript": dialog.to_openai(), "streamed": handler.tokens,
                "stream_done": handler.done}


def config(api_base: str, image: str, system: str = "You are an analyst. Use run_python.") -> dict[str, Any]:
    return {
        "invoker": "litellm",
        "invoker_config": {"api_base": api_base, "api_key": MODEL_KEY, "max_retries": 0},
        "agent_configs": [{
            "name": "analyst", "model_name": "openai/fake-model", "system_prompt": system,
            "model_args": {"temperature": 0, "api_key": MODEL_KEY, "extra_headers": {"X-Api-Key": HEADER_KEY}},
            "proxy": {"activate_proxies": ["fmp"], "source": "live",
                      "sandbox": {"backend": "docker", "image": image}},
        }],
    }


def fmp_route(path: str, query: dict, headers: dict, body: Any) -> tuple[int, Any]:
    if headers.get("apikey") != FMP_KEY:
        return 401, {"error": "bad key"}
    assert path == "/stable/quote" and query == {"symbol": "AAPL"}
    return 200, [{"symbol": "AAPL", "price": 201.08, "name": "Apple Inc."}]


def run(cfg: dict[str, Any], db: Path, tmp: Path) -> dict[str, Any]:
    store = sqlite_store(db)
    try:
        tactic = Analyst({**cfg, "workdir": str(tmp / "work")}, runtime=Runtime("cassette-test"), log_store=store)
        return tactic(TASK)
    finally:
        store.close()


# columns that differ between any two runs (ids, clocks, durations, sizes that hold ids)
VOLATILE = {"id", "session_id", "sandbox_id", "started_at", "ended_at", "created_at", "at", "latency_s",
            "duration_s", "call_id", "request_bytes", "response_bytes", "detail"}


def log_of(db: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    out = {}
    for table in ("model_calls", "agent_calls", "tool_calls", "cells", "api_calls"):
        rows = [{k: r[k] for k in r.keys() if k not in VOLATILE} for r in conn.execute(f"SELECT * FROM {table}")]
        out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    conn.close()
    return out


def test_record_a_run_then_replay_it_with_nothing_live(fake_openai: Any, fake_api: Any, sandbox_image: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = fake_api(fmp_route)
    monkeypatch.setenv("FMP_BASE_URL", upstream.url + "/stable")
    monkeypatch.setenv("FMP_API_KEY", FMP_KEY)
    server = fake_openai([
        tool_calls(("run_python", {"code": CODE}), content="Let me look it up."),
        text("AAPL trades at 201.08 (FMP quote)."),
    ])
    tape = tmp_path / "cassettes" / "analyst.yaml"

    with cassette(tape, mode="record") as rec:
        recorded = run(config(server.url, sandbox_image), tmp_path / "recorded.db", tmp_path)
    assert rec.mode == "record" and tape.exists()
    assert recorded["answer"] == "AAPL trades at 201.08 (FMP quote)."
    assert "AAPL 201.08" in json.dumps(recorded["transcript"])  # the sandbox's CALL_API answer reached the model
    assert "".join(recorded["streamed"]) == "Let me look it up.AAPL trades at 201.08 (FMP quote)."
    assert len(server.requests) == 2 and len(upstream.requests) == 1
    assert all(r["json"].get("stream") for r in server.requests)

    # nothing live any more: the model server and the API are gone, and neither key is set
    server.close()
    upstream.close()
    monkeypatch.delenv("FMP_API_KEY")
    monkeypatch.setenv("FMP_BASE_URL", "http://127.0.0.1:9/stable")
    import lllm.invokers.base as invoker_base

    monkeypatch.setattr(invoker_base, "ALLOW_MODEL_REQUESTS", False)  # any real model request would fail
    with cassette(tape, mode="replay") as rep:
        replayed = run(config("http://127.0.0.1:9/v1", sandbox_image), tmp_path / "replayed.db", tmp_path)
    assert rep.mode == "replay" and rep.unused() == []
    assert replayed == recorded  # answer, transcript, every streamed piece, on_done once per answer
    assert replayed["stream_done"] == 2
    recorded_log, replayed_log = log_of(tmp_path / "recorded.db"), log_of(tmp_path / "replayed.db")
    assert recorded_log == replayed_log
    assert len(recorded_log["model_calls"]) == 2 and len(recorded_log["cells"]) == 1
    (api,) = recorded_log["api_calls"]
    assert (api["proxy"], api["endpoint"], api["status"]) == ("fmp", "quote", "ok") and "201.08" in api["answer"]

    # a changed prompt: the first request differs, and the error shows how
    changed = config("http://127.0.0.1:9/v1", sandbox_image, system="You are a careful analyst. Use run_python.")
    with pytest.raises(CassetteMismatch) as info:
        with cassette(tape, mode="replay"):
            run(changed, tmp_path / "changed.db", tmp_path)
    message = str(info.value)
    assert "model request 1 of agent 'analyst', dialog 'main', task 'What does AAPL trade at?'" in message
    assert "--- recorded (analyst.yaml)" in message and "+++ this run" in message
    assert "-    You are an analyst. Use run_python." in message
    assert "+    You are a careful analyst. Use run_python." in message
    assert "record the cassette again" in message

    # no key, in any form, entered the file
    written = tape.read_text()
    for key in (MODEL_KEY, HEADER_KEY, FMP_KEY):
        forms = {key, base64.b64encode(key.encode()).decode()[:-4]}
        assert not any(form in written for form in forms), key
    assert "X-Api-Key: '[redacted]'" in written
