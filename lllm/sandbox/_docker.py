"""The one boundary to the Docker SDK: a lazily imported client, error translation, labels, OOM counters.

Only modules under `lllm/sandbox/` import `docker`, and only through `client()` and `translate_errors()` here:
`docker.errors.*` and `requests` connection failures become `SandboxStartError` (no engine, no image) or
`SandboxEngineError` (the engine failed, or the container is gone) with a message that says what to do, raised
`from` the original (like httpx's `map_httpcore_exceptions`). Both are infrastructure errors: they end the
agent's call instead of reaching the model as a tool result.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lllm.errors import SandboxEngineError, SandboxError, SandboxStartError

LABEL = "lllm.sandbox"
"""Every sandbox container carries `lllm.sandbox=1`; the reaper only ever looks at those."""
LABEL_PID = "lllm.owner.pid"
LABEL_START = "lllm.owner.start"
LABEL_HOST = "lllm.owner.host"
LABEL_SESSION = "lllm.session"
LABEL_DIR = "lllm.session_dir"
LABEL_TEST_RUN = "lllm.test_run"
"""Set from `$LLLM_TEST_RUN` so a test run can remove exactly its own containers."""
LABEL_UID = "lllm.owner.uid"
"""The host user that started it: only that user may attach to it."""
LABEL_SCOPE = "lllm.scope"
"""`agent`, `tactic` or `session`: a `session` sandbox is kept when its owner is gone (until its limits)."""
LABEL_NAME = "lllm.name"
"""The name of a kept sandbox (`DockerSandbox(name=...)`, a tactic call's `sandbox_session=`)."""
LABEL_CREATED = "lllm.created"
LABEL_IDLE = "lllm.idle_timeout"
LABEL_LIFETIME = "lllm.max_lifetime"

_local = threading.local()


def client() -> Any:
    """A docker SDK client for this thread (`DOCKER_HOST` etc. from the environment).

    Raises:
        SandboxStartError: the SDK is missing or no engine answers.
    """
    cached = getattr(_local, "client", None)
    if cached is not None:
        return cached
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        raise SandboxStartError('the docker SDK is not installed: pip install "docker>=7.1"') from exc
    with translate_errors("connect to the Docker engine"):
        made = docker.from_env(timeout=120)
    _local.client = made
    return made


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise docker/requests failures during `action` as lllm sandbox errors."""
    try:
        yield
    except SandboxError:
        raise
    except Exception as exc:
        import docker.errors
        import requests

        if isinstance(exc, docker.errors.ImageNotFound):
            raise SandboxStartError(f"cannot {action}: image not found ({exc.explanation}); build it with "
                                    "`lllm sandbox build`") from exc
        if isinstance(exc, docker.errors.NotFound):
            raise SandboxEngineError(f"cannot {action}: {exc.explanation}; the container is gone (removed by "
                                     "someone else, or by `lllm sandbox gc`)") from exc
        if isinstance(exc, (requests.exceptions.ConnectionError, docker.errors.DockerException)) and not isinstance(
            exc, docker.errors.APIError
        ):
            raise SandboxStartError(f"cannot {action}: no Docker engine answers ({exc}); start it (dockerd) or "
                                    "set DOCKER_HOST") from exc
        if isinstance(exc, docker.errors.APIError):
            raise SandboxEngineError(f"cannot {action}: the Docker engine said {exc.explanation or exc}") from exc
        if isinstance(exc, requests.exceptions.RequestException):
            raise SandboxEngineError(f"cannot {action}: {exc}") from exc
        raise


def owner_labels(sandbox_id: str, session_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The labels that name a container's owner and session (see `lllm.sandbox.reaper`)."""
    from lllm.sandbox._rundir import host_id, process_start_time

    labels = {
        LABEL: "1",
        LABEL_PID: str(os.getpid()),
        LABEL_START: process_start_time(os.getpid()),
        LABEL_HOST: host_id(),
        LABEL_SESSION: sandbox_id,
        LABEL_DIR: str(session_dir),
        LABEL_UID: str(os.geteuid()),
    }
    test_run = os.environ.get("LLLM_TEST_RUN")
    if test_run:
        labels[LABEL_TEST_RUN] = test_run
    labels.update(extra or {})
    return labels


def cgroup_oom_kills(container_id: str) -> int | None:
    """The container's OOM-kill counter read from the host's cgroup tree (v1 or v2), None when not found
    (a remote engine, another cgroup layout): the in-container supervisor's count is used then."""
    candidates = [
        f"/sys/fs/cgroup/memory/docker/{container_id}/memory.oom_control",
        f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.oom_control",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.events",
        f"/sys/fs/cgroup/docker/{container_id}/memory.events",
    ]
    for path in candidates:
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None
