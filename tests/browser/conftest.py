"""Browser test fixtures: fixture servers on loopback, one shared Chromium for the run, and a scripted model
that reads the observations it is sent (so its steps can name refs from the snapshot it saw)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cua_helpers import ModelPlan  # noqa: E402
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
