"""Keys stay on the driver's node: which environment variables are secrets, a local cluster started without
them, and the hand-over of what needs them (the driver's environment and its invokers) to the hub.

The hand-over never goes through Ray: the driver writes it to a file only its user can read, in a fresh
private directory, and the hub (pinned to the same node) reads and deletes it. So keys never enter the
cluster's object store or its control store, which may live on other machines.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["read_handoff", "remove_handoff", "scrubbed_environ", "secret_env_names", "write_handoff"]

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PRIVATE", re.I)
"""A variable whose name says it holds a secret (`OPENAI_API_KEY`, `FMP_API_KEY`, `HF_TOKEN`, ...)."""

_ENV_LOCK = threading.Lock()


def secret_env_names(env: dict[str, str] | None = None) -> list[str]:
    """The names of the variables of `env` (default: this process's) that look like secrets."""
    return sorted(name for name in (os.environ if env is None else env) if SECRET_NAME.search(name))


@contextmanager
def scrubbed_environ() -> Iterator[list[str]]:
    """Within this block this process's environment lacks the secret-looking variables (restored after), so
    that processes started meanwhile (a local Ray cluster's raylet, and through it every worker) never get
    them. Yields their names."""
    with _ENV_LOCK:
        names = secret_env_names()
        saved = {name: os.environ.pop(name) for name in names}
        try:
            yield names
        finally:
            os.environ.update(saved)


def write_handoff(data: bytes) -> Path:
    """Write `data` to a new file only this user can read (mode 0600 in a mode 0700 directory); returns it."""
    folder = Path(tempfile.mkdtemp(prefix="lllm-handoff-"))
    path = folder / "handoff"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def read_handoff(path: str | os.PathLike[str]) -> bytes:
    """Read a hand-over file and delete it (and its directory): it is read once."""
    p = Path(path)
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read()
    finally:
        if fd >= 0:
            os.close(fd)
    remove_handoff(p)
    return data


def remove_handoff(path: str | os.PathLike[str]) -> None:
    """Delete a hand-over file and its private directory, if they are still there."""
    shutil.rmtree(Path(path).parent, ignore_errors=True)
