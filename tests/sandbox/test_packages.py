"""Packages without opening the network, against real containers and a package index on loopback.

- build time: `lllm sandbox build --pip` / `DockerSandbox(packages=[...])` (wheels fetched by the host's pip);
- run time: `DockerSandbox(packages="index")` / `sandbox: {packages: index}` (pip through the host's relay),
  every package recorded in the LogStore;
- pip with packages off fails at once and says how to get packages;
- images of your own `FROM lllm-sandbox:latest`, and an image without the guest code refused.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from lllm.errors import SandboxStartError
from lllm.sandbox import DockerSandbox, SandboxLimits
from lllm.sandbox._docker import LABEL, LABEL_TEST_RUN
from package_index import LocalIndex, make_wheel

pytestmark = pytest.mark.docker

LIMITS = SandboxLimits(memory="512m")
PROJECT = "lllm-test-tinypkg"
MODULE = "lllm_test_tinypkg"


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A PEP 503 index on loopback holding two wheels built here (one depends on the other)."""
    root = tmp_path_factory.mktemp("index")
    wheels = [make_wheel(root, PROJECT, "1.0", {f"{MODULE}/__init__.py": "from lllm_test_tinydep import X\nVALUE = 40 + X\n"},
                         requires=["lllm-test-tinydep>=2"]),
              make_wheel(root, "lllm-test-tinydep", "2.0", {"lllm_test_tinydep/__init__.py": "X = 2\n"})]
    index = LocalIndex(root / "served", wheels)
    yield index
    index.close()


def _run_containers() -> list[Any]:
    return docker.from_env().containers.list(
        all=True, filters={"label": [f"{LABEL}=1", f"{LABEL_TEST_RUN}={os.environ['LLLM_TEST_RUN']}"]})


def test_build_pip_makes_a_cached_image_from_wheels_the_host_fetched(sandbox_image: str, local_index: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.sandbox.derived import derived_image

    monkeypatch.setenv("PIP_INDEX_URL", local_index.simple)  # the host's pip configuration
    lines: list[str] = []
    name = derived_image([PROJECT], base=sandbox_image, rebuild=True, log=lines.append)
    assert name.startswith("lllm-sandbox:pkgs-")
    assert any("pip download" in line for line in lines)
    assert any(f"/{PROJECT.replace('-', '_')}-1.0-py3-none-any.whl" in p for p in local_index.files.requests)
    labels = docker.from_env().images.get(name).labels
    assert "lllm.guest" in labels  # built FROM the sandbox image: the guest code came along
    # the CLI prints the same name, from the cache, in well under a second of work
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lllm.sandbox.cli", "build", "--pip", PROJECT, "-q"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_INDEX_URL": local_index.simple})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name
    assert time.monotonic() - started < 30
    with DockerSandbox(image=name, limits=LIMITS) as sb:  # no network, the package is simply there
        result = sb.run_cell(f"import {MODULE}; print({MODULE}.VALUE)")
        assert result.stdout.strip() == "42", result.text


def test_a_config_packages_list_runs_the_derived_image(sandbox_image: str, local_index: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", local_index.simple)
    with DockerSandbox(image=sandbox_image, packages=[PROJECT], limits=LIMITS) as sb:
        assert sb.image.startswith("lllm-sandbox:pkgs-")
        assert sb.run_cell(f"import {MODULE}; print({MODULE}.VALUE)").stdout.strip() == "42"


def test_a_package_the_index_lacks_fails_the_build_on_the_host(sandbox_image: str, local_index: Any) -> None:
    out = subprocess.run([sys.executable, "-m", "lllm.sandbox.cli", "build", "--pip", "lllm-test-no-such-project"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_INDEX_URL": local_index.simple})
    assert out.returncode == 1
    assert "could not fetch lllm-test-no-such-project" in out.stderr
    assert f"Index: {local_index.simple} (PIP_INDEX_URL)" in out.stderr
    assert "No matching distribution found for lllm-test-no-such-project" in out.stderr
    assert "Check the names and versions there" in out.stderr


def test_pip_through_the_host_installs_and_records_every_package(sandbox_image: str, local_index: Any,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from lllm import Tactic
    from lllm.logging import sqlite_store

    monkeypatch.setenv("LLLM_PACKAGE_INDEX", local_index.simple)

    class Installer(Tactic, register=False):
        name = "pkg_installer"
        agent_group = ["analyst"]

        def call(self, task: str, **kwargs: Any) -> str:
            agent = self.agents["analyst"]
            agent.open("main")
            agent.receive(task)
            return agent.respond().content

    install = (f"!pip install -q {PROJECT}\nimport {MODULE}\nprint('value', {MODULE}.VALUE, {MODULE}.__file__)\n"
               "import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
               "except Exception as exc:\n    print('network:', type(exc).__name__)")
    steps = [{"tool_calls": [{"name": "run_python", "arguments": {"code": install}}]},
             {"tool_calls": [{"name": "run_python", "arguments": {"code": "!pip install lllm-test-nothing-here"}}]},
             "done"]
    config = {"invoker": "scripted", "invoker_config": {"steps": steps}, "workdir": str(tmp_path / "runs"),
              "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You install.",
                                 "proxy": {"activate_proxies": [], "timeout": 120,
                                           "sandbox": {"image": sandbox_image, "packages": "index",
                                                       "limits": {"memory": "512m"}}}}]}
    store = sqlite_store(str(tmp_path / "log.db"))
    tactic = Installer(config, log_store=store)
    session = tactic("install it", return_session=True)
    tools = [r for r in session.records if r.kind == "tool_call"]
    assert "value 42 /opt/lllm/packages/" in tools[0].result, tools[0].result
    assert "network: URLError" in tools[0].result  # pip reached the index; the code still has no network
    assert "No matching distribution found for lllm-test-nothing-here" in tools[1].result
    assert "pip looked for packages on" in tools[1].result and local_index.simple in tools[1].result
    rows = store.query(f"select package, version, status, session_id, agent from packages "
                       f"where session_id = '{session.session_id}' order by seq")
    got = {(r["package"], r["version"], r["status"]) for r in rows}
    assert ("lllm-test-tinypkg", "1.0", "ok") in got and ("lllm-test-tinydep", "2.0", "ok") in got
    assert ("lllm-test-nothing-here", None, "not_found") in got
    assert {r["agent"] for r in rows} == {"analyst"}
    store.close()
    assert not _run_containers() or all(c.labels.get("lllm.tactic_session") != session.session_id
                                        for c in _run_containers())  # removed with the call


def test_with_packages_off_pip_fails_at_once_and_says_how_to_get_packages(sandbox_image: str) -> None:
    with DockerSandbox(image=sandbox_image, limits=LIMITS) as sb:
        started = time.monotonic()
        result = sb.run_cell("!pip install requests")
        took = time.monotonic() - started
        assert "no network and no package index" in result.stdout
        assert "lllm sandbox build --pip PACKAGE" in result.stdout and 'packages="index"' in result.stdout
        assert took < 10, took
        # a pip that gets past the hint still fails at once: the configured index is a closed local port
        started = time.monotonic()
        result = sb.run_cell("import subprocess, sys\n"
                             "p = subprocess.run([sys.executable, '-c', 'from pip._internal.cli.main import main; "
                             "raise SystemExit(main([\"download\", \"-d\", \"/tmp/x\", \"requests\"]))'], "
                             "capture_output=True, text=True)\nprint(p.returncode, p.stdout[-300:], p.stderr[-300:])")
        took = time.monotonic() - started
        assert result.stdout.startswith("1 ") and "No matching distribution" in result.stdout, result.stdout
        assert took < 15, took


def test_an_image_of_your_own_from_latest_runs_and_one_without_guest_code_is_refused(sandbox_image: str) -> None:
    from lllm.sandbox.image import LATEST, tag_latest

    tag_latest(sandbox_image)
    client = docker.from_env()
    tag = f"lllm-test-own:{os.environ['LLLM_TEST_RUN']}"
    dockerfile = f"FROM {LATEST}\nENV LLLM_TEST_OWN=from-my-dockerfile\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    try:
        with DockerSandbox(image=tag, limits=LIMITS) as sb:
            assert sb.run_cell("import os; print(os.environ['LLLM_TEST_OWN'])").stdout.strip() == "from-my-dockerfile"
    finally:
        client.images.remove(tag, force=True)
    # an image that is not built on the sandbox image (here: imported from a bare file tree)
    bare = io.BytesIO()
    with tarfile.open(fileobj=bare, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    plain = f"lllm-test-noguest:{os.environ['LLLM_TEST_RUN']}"
    client.api.import_image_from_data(bare.getvalue(), repository=plain.split(":")[0], tag=plain.split(":")[1])
    try:
        before = {c.id for c in _run_containers()}
        with pytest.raises(SandboxStartError, match="has no lllm guest code") as refused:
            DockerSandbox(image=plain, limits=LIMITS).start()
        assert "FROM lllm-sandbox:latest" in str(refused.value)
        assert {c.id for c in _run_containers()} == before  # nothing was started
    finally:
        client.images.remove(plain, force=True)
