"""The reaper: remove sandbox containers (and session directories) whose owner process is gone.

Every sandbox container is labelled with its owner: `lllm.owner.pid`, `lllm.owner.start` (the process start
time, so a reused pid does not count as the owner), `lllm.owner.host` (hostname + boot id) and its session
(`lllm.session`, `lllm.session_dir`). A process killed with SIGKILL never runs its cleanup, so `lllm sandbox
gc` and every `SandboxPool.start()` call `reap()`: containers in any state (running, exited, `created`) whose
owner on this host is gone are force-removed, with their session directories; so are session directories under
the run root whose owning pid is gone. Containers owned by another host are left alone unless `all_hosts=True`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lllm.sandbox import _docker
from lllm.sandbox._rundir import host_id, owner_alive, remove_session_dir, run_root


@dataclass
class ReapReport:
    """What `reap()` removed (or would remove, with `dry_run`)."""

    containers: list[str] = field(default_factory=list)
    """Names of the removed containers."""
    session_dirs: list[str] = field(default_factory=list)
    kept: int = 0
    """Sandbox containers left alone because their owner lives (or is on another host)."""


def _sandbox_containers() -> list[Any]:
    with _docker.translate_errors("list sandbox containers"):
        return list(_docker.client().containers.list(all=True, filters={"label": f"{_docker.LABEL}=1"},
                                                      ignore_removed=True))  # one may vanish meanwhile


def is_orphan(labels: dict[str, str], *, all_hosts: bool = False) -> bool:
    """True when the container's owner process is gone (see the module docstring)."""
    try:
        pid = int(labels.get(_docker.LABEL_PID, "0"))
    except ValueError:
        return True
    host = labels.get(_docker.LABEL_HOST, "")
    if all_hosts and host != host_id():
        return True
    return not owner_alive(pid, labels.get(_docker.LABEL_START, ""), host)


def _remove(container: Any) -> None:
    with _docker.translate_errors(f"remove container {container.name!r}"):
        try:
            container.remove(force=True)
        except Exception as exc:  # noqa: BLE001 - already being removed / gone
            import docker.errors

            if not isinstance(exc, docker.errors.NotFound) and "already in progress" not in str(exc):
                raise


def reap(*, dry_run: bool = False, all_hosts: bool = False) -> ReapReport:
    """Remove orphaned sandbox containers and session directories; see the module docstring."""
    report = ReapReport()
    for container in _sandbox_containers():
        labels = container.labels or {}
        if not is_orphan(labels, all_hosts=all_hosts):
            report.kept += 1
            continue
        report.containers.append(container.name)
        if dry_run:
            continue
        _remove(container)
        session_dir = labels.get(_docker.LABEL_DIR)
        if session_dir:
            remove_session_dir(Path(session_dir))
    report.session_dirs = reap_session_dirs(dry_run=dry_run)
    return report


def reap_session_dirs(*, dry_run: bool = False) -> list[str]:
    """Remove `<run root>/<pid>-<id>` directories whose pid is no longer running."""
    removed: list[str] = []
    try:
        entries = list(run_root().iterdir())
    except OSError:
        return removed
    me = host_id()
    for entry in entries:
        pid_text, _, rest = entry.name.partition("-")
        if not rest or not pid_text.isdigit() or not entry.is_dir():
            continue
        if owner_alive(int(pid_text), "", me):
            continue
        removed.append(str(entry))
        if not dry_run:
            remove_session_dir(entry)
    return removed


def remove_labelled(label: str, value: str) -> int:
    """Force-remove every sandbox container with `label=value` (a test run's own containers); return how many."""
    count = 0
    with _docker.translate_errors("list containers"):
        found = _docker.client().containers.list(all=True, filters={"label": f"{label}={value}"}, ignore_removed=True)
    for container in found:
        session_dir = (container.labels or {}).get(_docker.LABEL_DIR)
        _remove(container)
        if session_dir:
            remove_session_dir(Path(session_dir))
        count += 1
    return count


def list_sandboxes() -> list[dict[str, Any]]:
    """Every sandbox container on the engine: name, status, session, owner pid/host, and whether orphaned."""
    rows = []
    for container in _sandbox_containers():
        labels = container.labels or {}
        rows.append({
            "name": container.name,
            "status": container.status,
            "session": labels.get(_docker.LABEL_SESSION, ""),
            "owner_pid": labels.get(_docker.LABEL_PID, ""),
            "owner_host": labels.get(_docker.LABEL_HOST, ""),
            "orphan": is_orphan(labels),
            "image": (container.attrs.get("Config") or {}).get("Image", ""),
        })
    return rows


def current_owner() -> dict[str, str]:
    """This process's owner labels (for messages and tests)."""
    return {"pid": str(os.getpid()), "host": host_id()}
