"""`TacticCallSession.state` as lllm-core's docs show it (Lesson 5: "success" or "failure"), still equal to the log
store's "ok" / "error"."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.core.tactic import CallState
from lllm.logging import sqlite_store

CONFIG = {"invoker": "scripted", "invoker_config": {"steps": ["fine", "fine"]},
          "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": "hi"}]}


class Flaky(Tactic, register=False):
    name = "compat_flaky"
    agent_group = ["a"]

    def call(self, task: str, **kwargs: Any) -> str:
        if task == "fail":
            raise RuntimeError("asked to fail")
        a = self.agents["a"]
        a.open("m")
        a.receive(task)
        return a.respond().content


def test_a_sessions_state_reads_as_lllm_core_writes_it() -> None:
    store = sqlite_store(":memory:")
    tactic = Flaky(CONFIG, log_store=store, runtime=Runtime("states"))
    ok = tactic("go", return_session=True)
    assert str(ok.state) == "success" and ok.state == "success" and ok.state == "ok" and ok.state != "error"
    assert "ok" == ok.state and "success" == ok.state  # from either side
    with pytest.raises(RuntimeError):
        tactic("fail")
    failed = tactic.last_session
    assert f"{failed.state}" == "failure" and failed.state == "error" and failed.state != "success"
    assert [r.state for r in store.list_sessions()] == ["error", "ok"]  # the log keeps its own words
    assert json.loads(json.dumps(ok.summary()))["state"] == "success"
    assert pickle.loads(pickle.dumps(ok.state)) == "ok"


def test_call_state_compares_like_a_string_otherwise() -> None:
    assert CallState("running") == "running" and CallState("running") != "ok"
    assert CallState("failure").log_word == "error" and CallState("initial").log_word == "initial"
    assert CallState("success") != 1 and hash(CallState("success")) == hash("success")
