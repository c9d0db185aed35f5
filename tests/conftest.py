"""Shared test set-up: no real model provider, and Docker/Chromium tests that fail (not skip) when required."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

# No test may reach a real model provider; the invokers check this before every litellm call.
os.environ["LLLM_ALLOW_MODEL_REQUESTS"] = "0"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Sandbox containers started by this test run carry `lllm.test_run=<this>`, so the run removes exactly its own.
os.environ.setdefault("LLLM_TEST_RUN", uuid.uuid4().hex[:12])


def _required(var: str) -> bool:
    return os.environ.get(var) == "1" or os.environ.get("CI") == "true"


def _docker_answers() -> str | None:
    """None when a Docker engine answers, else the reason it does not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if out.returncode != 0:
        return f"no Docker engine answers: {out.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Tests that need Docker take this fixture; with LLLM_REQUIRE_DOCKER=1 (the test command) or CI=true a
    missing engine fails the test with the reason, it never skips."""
    reason = _docker_answers()
    if reason is None:
        return
    message = f"{reason}. Start the engine (README: the test command does it: scripts/setup.sh)."
    if _required("LLLM_REQUIRE_DOCKER"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # a developer run without Docker; never under CI=true or LLLM_REQUIRE_DOCKER=1


@pytest.fixture(scope="session")
def require_browser() -> str:
    """The Chromium executable; fails (never skips) under LLLM_REQUIRE_BROWSER=1 or CI=true when missing."""
    path = os.environ.get("LLLM_CHROMIUM", "/usr/bin/chromium")
    if os.path.exists(path):
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = 'playwright is not installed: pip install -e ".[browser]"'
        else:
            return path
    else:
        reason = f"no Chromium at {path!r}: apt-get install -y chromium (scripts/setup.sh does it)"
    if _required("LLLM_REQUIRE_BROWSER"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)  # a developer run without Chromium; never under CI=true or LLLM_REQUIRE_BROWSER=1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Marked tests get their requirement fixture automatically, so a marker alone is enough.
    for item in items:
        if item.get_closest_marker("docker") and "require_docker" not in getattr(item, "fixturenames", []):
            item.fixturenames.insert(0, "require_docker")
        if item.get_closest_marker("browser") and "require_browser" not in getattr(item, "fixturenames", []):
            item.fixturenames.insert(0, "require_browser")


@pytest.fixture(scope="session")
def sandbox_image(require_docker: None) -> str:
    """The sandbox image, built (with its base, when missing) once per run by `ensure_image()`."""
    from lllm.sandbox.image import ensure_image

    return ensure_image(log=lambda line: print(line, file=sys.stderr))


@pytest.fixture(scope="session", autouse=True)
def _remove_test_run_sandboxes():
    """After the run, force-remove every sandbox container labelled with this test run (even leaked ones)."""
    yield
    if "lllm.sandbox.docker" in sys.modules and _docker_answers() is None:
        from lllm.sandbox._docker import LABEL_TEST_RUN
        from lllm.sandbox.reaper import remove_labelled

        remove_labelled(LABEL_TEST_RUN, os.environ["LLLM_TEST_RUN"])
