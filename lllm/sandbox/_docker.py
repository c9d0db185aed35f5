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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Engine:
    """Which Docker engine a sandbox runs on: `host` as DOCKER_HOST spells it (`tcp://10.0.0.5:2376`,
    `ssh://user@box`, `unix:///var/run/docker.sock`), and for TLS the CA, client certificate and key files.
    None as a whole: the environment's engine (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`)."""

    host: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def describe(self) -> str:
        return self.host + (" (TLS)" if self.tls else "")

    def cli_flags(self) -> str:
        """The same engine for the `docker` command line: `-H ... --tlsverify --tlscacert ...`."""
        flags = f"-H {self.host}"
        if self.tls:
            flags += " --tlsverify" + (f" --tlscacert {self.ca}" if self.ca else "")
            if self.cert and self.key:
                flags += f" --tlscert {self.cert} --tlskey {self.key}"
        return flags


def engine_from(docker_host: str | None = None, tls: Any = None) -> Engine | None:
    """An `Engine` from `DockerSandbox(docker_host=..., tls=...)` (or the `sandbox:` config block); None: the
    environment's. `tls`: None/False (no TLS; None with no `docker_host` means the environment decides), True
    (the files `ca.pem`, `cert.pem`, `key.pem` of `$DOCKER_CERT_PATH` or ~/.docker), a folder holding those
    files, or a dict with `ca`, `cert`, `key` paths.

    Raises:
        UsageError: a malformed host or TLS setting, or a certificate file that does not exist.
    """
    from lllm.errors import UsageError

    if docker_host is None and tls in (None, False):
        return None
    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not isinstance(host, str) or "://" not in host:
        raise UsageError(f"docker_host={host!r}: give it as DOCKER_HOST spells it, e.g. tcp://10.0.0.5:2376, "
                         "ssh://user@host or unix:///var/run/docker.sock")
    if tls in (None, False):
        return Engine(host)
    if tls is True or isinstance(tls, (str, Path)):
        folder = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker") if tls is True else Path(tls)
        files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    elif isinstance(tls, dict) and set(tls) <= {"ca", "cert", "key"} and tls:
        files = {k: Path(v) for k, v in tls.items()}
    else:
        raise UsageError(f"tls={tls!r}: give True (certificates of $DOCKER_CERT_PATH), a folder with ca.pem, "
                         "cert.pem and key.pem, or a dict with 'ca', 'cert' and 'key' paths")
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UsageError(f"TLS for the Docker engine at {host}: no such file {missing[0]!r}; give the folder of "
                         "the engine's CA (ca.pem) and your client certificate (cert.pem, key.pem)")
    return Engine(host, **{k: str(v) for k, v in files.items()})


def engine_from_env() -> Engine | None:
    """The environment's engine as an `Engine` when it is not the local default (for labels and messages)."""
    host = os.environ.get("DOCKER_HOST")
    if not host:
        return None
    verify = os.environ.get("DOCKER_TLS_VERIFY") not in (None, "", "0")
    return engine_from(host, True if verify else None)


def client(engine: Engine | None = None) -> Any:
    """A docker SDK client for this thread: the environment's engine (`DOCKER_HOST` etc.), or `engine`.

    A TLS client trusts the engine's CA only: `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` (set on many machines) would
    otherwise replace the CA it was given, and every TLS engine with a private CA would fail verification. A
    client made here for an engine is checked once with a ping, so an engine that does not answer or refuses
    TLS is an error before anything is created.

    Raises:
        SandboxStartError: the SDK is missing, no engine answers, or TLS failed.
    """
    if engine is None and os.environ.get("DOCKER_TLS_VERIFY") not in (None, "", "0"):
        engine = engine_from_env()  # TLS from the environment: the same client rules (its CA only)
    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    cached = clients.get(engine)
    if cached is not None:
        return cached
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        raise SandboxStartError('the docker SDK is not installed: pip install "docker>=7.1"') from exc
    if engine is None:
        with translate_errors("connect to the Docker engine"):
            made = docker.from_env(timeout=120)
    else:
        tls_config: Any = False
        if engine.tls:
            from docker.tls import TLSConfig

            tls_config = TLSConfig(ca_cert=engine.ca, verify=engine.ca or True,
                                   client_cert=(engine.cert, engine.key) if engine.cert and engine.key else None)
        with translate_errors(f"connect to the Docker engine at {engine.describe()}", engine=engine):
            # The oldest API version first, so that the constructor asks the engine nothing before the CA is
            # fixed; then the engine's own version, which is also the first contact (within PING_TIMEOUT).
            made = docker.DockerClient(base_url=engine.host, tls=tls_config, timeout=PING_TIMEOUT,
                                       version=docker.constants.MINIMUM_DOCKER_API_VERSION, use_ssh_client=False)
            _own_ca_only(made.api)
            made.api._version = made.api._retrieve_server_version()
            made.api.timeout = 120
    clients[engine] = made
    return made


PING_TIMEOUT = 10.0
"""Seconds an engine given by address has to answer its first ping."""


def _own_ca_only(api: Any) -> None:
    """Make requests verify against the CA the client was configured with, whatever the environment says."""
    original = api.merge_environment_settings

    def merged(url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = original(url, proxies, stream, verify, cert)
        settings["verify"] = api.verify
        return settings

    api.merge_environment_settings = merged


def is_local(made: Any) -> bool:
    """Whether a client talks to an engine on this machine's unix socket (bind mounts reach this host)."""
    return str(getattr(made.api, "base_url", "")).startswith("http+docker://localhost")


@contextlib.contextmanager
def translate_errors(action: str, engine: Engine | None = None) -> Iterator[None]:
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
        where = f" at {engine.describe()}" if engine is not None else ""
        if isinstance(exc, requests.exceptions.SSLError) or "SSLError" in str(exc):
            raise SandboxStartError(f"cannot {action}: the engine{where} refused TLS or could not be verified "
                                    f"({exc}); check the CA and the client certificate and key (tls=..., "
                                    "DOCKER_CERT_PATH)") from exc
        if engine is not None and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                                   docker.errors.DockerException)) and not isinstance(
                exc, docker.errors.APIError):
            raise SandboxStartError(f"cannot {action}: no Docker engine answers{where} ({exc}); check the "
                                    "address and that the engine listens there") from exc
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


def owned_elsewhere(labels: dict[str, str]) -> bool:
    """True when a sandbox container was started by a process on another machine (see `_rundir.other_machine`)."""
    from lllm.sandbox._rundir import other_machine

    return other_machine(labels.get(LABEL_HOST, ""))


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
