"""Browser test fixtures: fixture servers on loopback, one shared Chromium for the run, and a scripted model
that reads the observations it is sent (so its steps can name refs from the snapshot it saw)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixture_server import FixtureServer  # noqa: E402


@pytest.fixture(scope="session")
def blocked_server() -> Iterator[FixtureServer]:
    """A second origin the allowlist does not name: any hit on it is a policy failure."""
    server = FixtureServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def server(blocked_server: FixtureServer) -> Iterator[FixtureServer]:
    """The allowed origin: serves tests/browser/pages and records posts and uploads."""
    server = FixtureServer(blocked_origin=blocked_server.origin).start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_records(request: pytest.FixtureRequest) -> Iterator[None]:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()
        request.getfixturevalue("blocked_server").reset()
    yield


@pytest.fixture(scope="session", autouse=True)
def _one_browser_for_the_run() -> Iterator[None]:
    """Every session in the run shares one Chromium (the shared driver); it is closed at the end."""
    yield
    from lllm.tools.cua import close_shared_drivers

    close_shared_drivers()


@pytest.fixture
def cu_block(server: FixtureServer, tmp_path: Path) -> dict[str, Any]:
    """A computer_use block allowing exactly the fixture origin."""
    return {"allowed_domains": [f"127.0.0.1:{server.port}"], "action_timeout_s": 5, "navigation_timeout_s": 8}


def ref_of(observation: str, pattern: str) -> str:
    """The ref of the first snapshot line matching `pattern` (a regex on the line)."""
    for line in observation.splitlines():
        if re.search(pattern, line):
            found = re.search(r"\[ref=(\w+)\]", line)
            if found:
                return found.group(1)
    raise AssertionError(f"no snapshot line matches {pattern!r} in:\n{observation[:3000]}")


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """A scripted step: one tool call."""
    return {"content": None, "tool_calls": [{"name": name, "arguments": arguments}]}


class ModelPlan:
    """A scripted model whose steps are functions of the last thing it was shown (a tool result or the task).

    Each request takes the next step; a step is a ready step (string or dict) or `f(observation) -> step`.
    `seen` keeps every observation, `.invoker.calls` every request.
    """

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.seen: list[str] = []
        self.used = 0

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        last = messages[-1]
        for m in reversed(messages):
            if m["role"] in ("tool", "user") and not (m["role"] == "user" and isinstance(m["content"], list)):
                last = m
                break
        text = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
        self.seen.append(text)
        if self.used >= len(self.steps):
            raise AssertionError(f"the model plan has {len(self.steps)} steps; request {self.used + 1} asked for more")
        step = self.steps[self.used]
        self.used += 1
        return step(text) if callable(step) else step

    def assert_complete(self) -> None:
        assert self.used == len(self.steps), f"{len(self.steps) - self.used} plan steps unused"


@pytest.fixture
def run_tactic(tmp_path: Path) -> Callable[..., Any]:
    """Run ComputerUseTactic with a `ModelPlan` and a computer_use block; returns (answer, plan, tactic, store)."""
    from lllm.logging import sqlite_store
    from lllm.tools.cua.tactic import ComputerUseTactic

    def run(steps: list[Any], block: dict[str, Any], task: str = "do the task", **kwargs: Any) -> Any:
        plan = ModelPlan(steps)
        config = {
            "invoker": "scripted",
            "invoker_config": {"responder": plan},
            "workdir": str(tmp_path / "runs"),
            "agent_configs": [{"name": "browser", "model_name": "gpt-4o", "system_prompt": "You operate a browser.",
                               "computer_use": block}],
        }
        store = sqlite_store(str(tmp_path / "log.db"))
        tactic = ComputerUseTactic(config, log_store=store)
        answer = tactic(task, **kwargs)
        plan.assert_complete()
        return answer, plan, tactic, store

    return run


def all_sent_text(tactic: Any) -> str:
    """Everything the model was sent, over all its requests, as one string."""
    return "\n".join(json.dumps(c.messages) for c in tactic.llm_invoker.calls)
