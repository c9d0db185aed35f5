"""DockerSandbox start failures: a clear SandboxStartError, and nothing left behind (container or directory)."""

from __future__ import annotations

import docker
import pytest

from lllm.errors import SandboxStartError, UsageError
from lllm.sandbox import DockerSandbox, SandboxState
from lllm.sandbox._docker import LABEL_SESSION
from lllm.sandbox._rundir import run_root

pytestmark = pytest.mark.docker


def leftovers(sandbox_id: str) -> tuple[list, list]:
    found = docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_SESSION}={sandbox_id}"})
    return found, [p for p in run_root().iterdir() if p.name.endswith(sandbox_id)]


def test_missing_image_fails_cleanly() -> None:
    sb = DockerSandbox(image="lllm-sandbox:does-not-exist")
    with pytest.raises(SandboxStartError, match="lllm sandbox build"):
        sb.start()
    assert sb.state is SandboxState.NEW
    assert leftovers(sb.sandbox_id) == ([], [])


def test_unknown_runtime_fails_cleanly(sandbox_image: str) -> None:
    sb = DockerSandbox(image=sandbox_image, runtime="no-such-runtime")
    with pytest.raises(SandboxStartError, match="runtime"):
        sb.start()
    assert leftovers(sb.sandbox_id) == ([], [])


def test_kernel_that_cannot_start_fails_cleanly_with_its_log(sandbox_image: str) -> None:
    # PYTHONPATH is reserved; a broken start-up is simulated with an environment that kills the interpreter.
    sb = DockerSandbox(image=sandbox_image, env={"PYTHONHOME": "/nonexistent"}, start_timeout=15)
    with pytest.raises(SandboxStartError, match="did not come up|did not answer") as info:
        sb.start()
    assert "container log" in str(info.value) or "kernel" in str(info.value)
    assert leftovers(sb.sandbox_id) == ([], [])


def test_reserved_env_is_refused() -> None:
    with pytest.raises(UsageError, match="LLLM_RUN_DIR"):
        DockerSandbox(env={"LLLM_RUN_DIR": "/elsewhere"})
