"""Shared test set-up: Docker/Chromium tests that fail (not skip) when required, and loopback fakes.

lllm's own pytest plugin (`lllm.testing.plugin`, loaded from its `pytest11` entry point) does the rest, as it
does for every user's suite: LLLM_ALLOW_MODEL_REQUESTS=0 (no test reaches a real model provider), and a
`LLLM_TEST_RUN` id whose sandbox containers it removes when the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

import pytest

pytest_plugins = ["pytester"]  # tests/unit/test_testing_plugin.py runs users' suites with it

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# The default runtime discovers a package on its first lookup, from the working folder: which test looks first
# would decide what every later test sees. Tests load packages explicitly; those about discovery run a fresh
# process without this variable.
os.environ["LLLM_AUTO_INIT"] = "0"


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
def require_root() -> None:
    """Tests of what root on the host may do (chown to the sandbox uid); under CI=true or
    LLLM_REQUIRE_DOCKER=1 a non-root run fails, never skips: CI runs as root."""
    if os.geteuid() == 0:
        return
    message = "needs root on the host (it gives files to the sandbox uid); run the test command as root"
    if _required("LLLM_REQUIRE_DOCKER"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # a developer run as non-root; never under CI=true or LLLM_REQUIRE_DOCKER=1


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


@pytest.fixture(scope="module", params=["mount", "relay"])
def each_transport(request: pytest.FixtureRequest) -> Any:
    """Run a module's Docker tests once per transport (`DockerSandbox(transport=...)` through
    LLLM_SANDBOX_TRANSPORT): the session directory bind-mounted, and the relay over the Docker API that remote
    engines use (`lllm.sandbox.remote`), here on the local engine. Use it with
    `pytest.mark.usefixtures("each_transport")` where what a test checks depends on the transport."""
    before = os.environ.get("LLLM_SANDBOX_TRANSPORT")
    os.environ["LLLM_SANDBOX_TRANSPORT"] = request.param
    yield request.param
    if before is None:
        os.environ.pop("LLLM_SANDBOX_TRANSPORT", None)
    else:
        os.environ["LLLM_SANDBOX_TRANSPORT"] = before


@pytest.fixture(scope="session")
def remote_engine(sandbox_image: str, require_root: None) -> Any:
    """A second Docker engine on loopback TCP with TLS that shares no files with this process, the sandbox
    image loaded into it (tests/remote_engine.py); stopped, and its folder removed, when the run ends."""
    sys.path.insert(0, os.path.dirname(__file__))
    from remote_engine import RemoteEngine

    engine = RemoteEngine()
    try:
        engine.start()
        engine.load(sandbox_image)
        yield engine
    finally:
        engine.stop()


# -- loopback fakes of external HTTP APIs (the built-in proxies are tested against these) ------------------
Route = Callable[[str, dict[str, str], dict[str, str], Any], tuple[int, Any]]


class FakeAPI:
    """A tiny HTTP server on 127.0.0.1: `route(path, query, headers, json_body) -> (status, body)`."""

    def __init__(self, route: Route) -> None:
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append({"method": self.command, "path": url.path, "query": query,
                                      "headers": headers, "json": body})
                status, payload = route(url.path, query, headers, body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    """A factory of loopback HTTP fakes of external APIs; each is closed when the test ends."""
    servers: list[FakeAPI] = []

    def make(route: Route) -> FakeAPI:
        servers.append(FakeAPI(route))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# -- a fake OpenAI-compatible model server on loopback (the real-model path, tests/fake_openai.py) ---------
@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch):
    """A factory of fake OpenAI-compatible servers on 127.0.0.1: `fake_openai([text("hi"), ...]) -> FakeOpenAI`
    (give its `.url` as api_base). Real model requests are allowed in the test so that litellm reaches them;
    nothing else is reachable from these machines, and each server is closed when the test ends."""
    import lllm.invokers.base as invoker_base
    from fake_openai import FakeOpenAI

    monkeypatch.setattr(invoker_base, "ALLOW_MODEL_REQUESTS", True)
    servers: list[FakeOpenAI] = []

    def make(replies: Any) -> FakeOpenAI:
        servers.append(FakeOpenAI(replies))
        return servers[-1]

    yield make
    for s in servers:
        s.close()
