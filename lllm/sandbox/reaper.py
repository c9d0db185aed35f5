"""The reaper: remove sandbox containers (and session directories) whose owner is gone or whose time is up.

Every sandbox container is labelled with its owner: `lllm.owner.pid`, `lllm.owner.start` (the process start
time, so a reused pid does not count as the owner), `lllm.owner.host` (hostname + boot id), `lllm.owner.uid`,
and its session (`lllm.session`, `lllm.session_dir`); with its scope (`lllm.scope`), creation time and limits
(`lllm.created`, `lllm.idle_timeout`, `lllm.max_lifetime`); a kept one with its name (`lllm.name`). A process
killed with SIGKILL never runs its cleanup, so `lllm sandbox gc` and every `SandboxPool.start()` call `reap()`,
which force-removes, with their session directories and records, containers in any state (running, exited,
`created`) of this host that are:
- past their `max_lifetime`, or idle (no cell, no file operation: the record's `last_used`) past their
  `idle_timeout`, whether their owner lives or not;
- orphans: the owner process is gone (the one that started it, and the last one that attached to it), unless
  it is a `session` sandbox that still runs: that one is kept for `DockerSandbox.attach` until its limits;
and also session directories under the run root whose owning pid is gone (`<pid>-<id>`) or whose kept container
is gone (`keep-<id>`), and records of containers that no longer exist. Containers owned by another host are left
alone unless `all_hosts=True`.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lllm.sandbox import _docker
from lllm.sandbox._rundir import host_id, machine_name, owner_alive, remove_session_dir, run_root


@dataclass
class ReapReport:
    """What `reap()` removed (or would remove, with `dry_run`)."""

    containers: list[str] = field(default_factory=list)
    """Names of the removed containers."""
    session_dirs: list[str] = field(default_factory=list)
    kept: int = 0
    """Sandbox containers left alone because their owner lives (or is on another host), or kept by scope."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Container name -> why it was removed."""


def _sandbox_containers(engine: Any = None) -> list[Any]:
    with _docker.translate_errors("list sandbox containers", engine=engine):
        return list(_docker.client(engine).containers.list(all=True, filters={"label": f"{_docker.LABEL}=1"},
                                                      ignore_removed=True))  # one may vanish meanwhile


def is_orphan(labels: dict[str, str], *, all_hosts: bool = False) -> bool:
    """True when the container's owner process is gone (see the module docstring)."""
    try:
        pid = int(labels.get(_docker.LABEL_PID, "0"))
    except ValueError:
        return True
    if all_hosts and _docker.owned_elsewhere(labels):
        return True
    return not owner_alive(pid, labels.get(_docker.LABEL_START, ""), labels.get(_docker.LABEL_HOST, ""))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _record_owner_alive(record: dict[str, Any] | None) -> bool:
    owner = (record or {}).get("owner")
    if not isinstance(owner, dict):
        return False
    try:
        return owner_alive(int(owner.get("pid") or 0), str(owner.get("start") or ""), str(owner.get("host") or ""))
    except (TypeError, ValueError):
        return False


def last_used(labels: dict[str, str], record: dict[str, Any] | None) -> float:
    """The last use of a sandbox the host noted (its record's), else its creation time (0: unknown)."""
    return max(_number(labels.get(_docker.LABEL_CREATED)), _number((record or {}).get("last_used")))


def verdict(container: Any, record: dict[str, Any] | None, *, now: float, all_hosts: bool = False) -> str | None:
    """Why the reaper removes this container, or None to keep it (see the module docstring)."""
    labels = container.labels or {}
    if all_hosts or not _docker.owned_elsewhere(labels):
        created = _number(labels.get(_docker.LABEL_CREATED))
        lifetime = _number(labels.get(_docker.LABEL_LIFETIME))
        idle = _number(labels.get(_docker.LABEL_IDLE))
        if lifetime and created and now >= created + lifetime:
            return f"its lifetime of {lifetime:g}s ended"
        used = last_used(labels, record)
        if idle and used and now >= used + idle:
            return f"it was idle for {now - used:.0f}s (its idle_timeout is {idle:g}s)"
    if not is_orphan(labels, all_hosts=all_hosts) or _record_owner_alive(record):
        return None
    if labels.get(_docker.LABEL_SCOPE) == "session" and container.status == "running":
        return None  # kept for attach, until its limits
    return "its owner process is gone"


def remove_container(container: Any, engine: Any = None) -> None:
    """Force-remove a sandbox container (on `engine`, an `lllm.sandbox._docker.Engine`, when it came from one)
    with its session directory and record, which only exist on the host that started it."""
    from lllm.sandbox.lifetime import remove_record

    labels = container.labels or {}
    with _docker.translate_errors(f"remove container {container.name!r}", engine=engine):
        try:
            container.remove(force=True)
        except Exception as exc:  # noqa: BLE001 - already being removed / gone
            import docker.errors

            if not isinstance(exc, docker.errors.NotFound) and "already in progress" not in str(exc):
                raise
    if _docker.owned_elsewhere(labels):
        return  # another machine's sandbox (an engine both use): its directory and record are over there
    session_dir = labels.get(_docker.LABEL_DIR)
    if session_dir:
        remove_session_dir(Path(session_dir))
    if labels.get(_docker.LABEL_SESSION) and labels.get(_docker.LABEL_UID) == str(os.geteuid()):
        remove_record(labels[_docker.LABEL_SESSION])


_remove = remove_container  # the old private name


def reap(*, dry_run: bool = False, all_hosts: bool = False, engine: Any = None) -> ReapReport:
    """Remove orphaned or expired sandbox containers and stale session directories; see the module docstring.

    `engine` (`lllm.sandbox._docker.Engine`): reap that engine's containers (`lllm sandbox gc --docker-host`);
    then only the session directories of dead owner processes go with them, and the records of sandboxes on
    other engines are left alone."""
    from lllm.sandbox.lifetime import records, remove_record

    report = ReapReport()
    now = time.time()
    known = records()
    containers = _sandbox_containers(engine)
    for container in containers:
        labels = container.labels or {}
        why = verdict(container, known.get(labels.get(_docker.LABEL_SESSION, "")), now=now, all_hosts=all_hosts)
        if why is None:
            report.kept += 1
            continue
        report.containers.append(container.name)
        report.reasons[container.name] = why
        if not dry_run:
            remove_container(container, engine)
    alive = {(c.labels or {}).get(_docker.LABEL_SESSION) for c in containers
             if c.name not in report.containers}
    if engine is not None:  # this engine's containers only: what lives on others is not ours to judge
        report.session_dirs = reap_session_dirs(dry_run=dry_run)
        return report
    if not dry_run:
        for sandbox_id in set(known) - alive:
            remove_record(sandbox_id)
    report.session_dirs = reap_session_dirs(dry_run=dry_run, live_ids=alive)
    return report


def reap_session_dirs(*, dry_run: bool = False, live_ids: set[Any] | None = None) -> list[str]:
    """Remove `<run root>/<pid>-<id>` directories whose pid is no longer running, and `keep-<id>` ones whose
    sandbox is not among `live_ids` (when given)."""
    removed: list[str] = []
    try:
        entries = list(run_root().iterdir())
    except OSError:
        return removed
    me = host_id()
    for entry in entries:
        owner, _, rest = entry.name.partition("-")
        if not rest or not entry.is_dir():
            continue
        if owner == "keep":
            if live_ids is None or rest in live_ids:
                continue
        elif not owner.isdigit() or owner_alive(int(owner), "", me):
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
        remove_container(container)
        count += 1
    return count


def remove_sandbox(sandbox: str, engine: Any = None, *, force: bool = False, cli_flags: str = "") -> str:
    """`lllm sandbox rm`: remove this user's sandbox named `sandbox` (or with that id) from `engine` (an
    `lllm.sandbox._docker.Engine`; None: the environment's); return its container name.

    A sandbox another user started, or a process on another machine (an engine several machines use, whose
    process this one cannot check, as `reap()` and `DockerSandbox.attach` see it), is refused unless `force`.
    `cli_flags`: the engine options of the command line, repeated in the commands the message suggests.

    Raises:
        SandboxError: no such sandbox (`reason` `missing`), another user's (`foreign`) or another machine's
            (`other_host`); the message says whose and what to do.
        SandboxStartError: no engine answers at `engine`, or TLS failed.
    """
    from lllm.errors import SandboxError
    from lllm.sandbox.lifetime import find_container

    container = find_container(sandbox, engine)
    if container is None:
        where = f" on the Docker engine at {engine.describe()}" if engine is not None else ""
        raise SandboxError(f"no sandbox named {sandbox!r} (nor with that id){where}; `lllm sandbox ls` lists them",
                           sandbox=sandbox, reason="missing")
    labels = container.labels or {}
    uid = labels.get(_docker.LABEL_UID, str(os.geteuid()))
    elsewhere = _docker.owned_elsewhere(labels)
    if not force and (elsewhere or uid != str(os.geteuid())):
        what = (f"container {container.name}, scope {labels.get(_docker.LABEL_SCOPE, 'agent')}, "
                f"{container.status}")
        pid = labels.get(_docker.LABEL_PID, "")
        who = f"process {pid}" if pid else "a process"
        again = f"`lllm sandbox rm {shlex.quote(sandbox)} --force{cli_flags}`"
        if elsewhere:
            host = labels.get(_docker.LABEL_HOST) or "unknown"
            machine = machine_name(host)
            user = f" of another user (uid {uid})" if uid != str(os.geteuid()) else ""
            raise SandboxError(
                f"sandbox {sandbox!r} ({what}) belongs to {who}{user} on another machine"
                f"{', ' + machine if machine != '?' else ''} (host id {host}), which this one cannot check: it may "
                f"still be in use there. Remove it from that machine; if you are sure it is not in use, {again}; "
                f"if that machine is gone, `lllm sandbox gc --all-hosts{cli_flags}` removes what it left",
                sandbox=sandbox, reason="other_host")
        raise SandboxError(f"sandbox {sandbox!r} ({what}) belongs to another user (uid {uid}, {who} on this "
                           f"machine); only its owner should remove it (as that user); if you are sure, {again}",
                           sandbox=sandbox, reason="foreign")
    remove_container(container, engine)
    return str(container.name)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def list_sandboxes(engine: Any = None) -> list[dict[str, Any]]:
    """Every sandbox container on `engine` (an `lllm.sandbox._docker.Engine`; None: the environment's): ids, name,
    scope, status, age, idle time, owner, image, limits.

    `orphan` is True only when this host can tell that the owner process is gone: an owner on another machine
    (`owner_here` False, on an engine several machines use) is never judged from here, as for `reap()` without
    `all_hosts`."""
    from lllm.sandbox.lifetime import records

    known = records()
    now = time.time()
    rows = []
    for container in _sandbox_containers(engine):
        labels = container.labels or {}
        sandbox_id = labels.get(_docker.LABEL_SESSION, "")
        record = known.get(sandbox_id)
        created = _number(labels.get(_docker.LABEL_CREATED))
        used = last_used(labels, record)
        owner = record.get("owner") if record and _record_owner_alive(record) else None
        orphan = is_orphan(labels) and owner is None
        owner_pid = str(owner.get("pid")) if isinstance(owner, dict) else labels.get(_docker.LABEL_PID, "")
        rows.append({
            "name": container.name,
            "id": sandbox_id,
            "sandbox_name": labels.get(_docker.LABEL_NAME, ""),
            "scope": labels.get(_docker.LABEL_SCOPE, "agent"),
            "status": container.status,
            "session": sandbox_id,
            "age_s": round(now - created, 1) if created else None,
            "idle_s": round(now - used, 1) if used else None,
            "idle_timeout": _number(labels.get(_docker.LABEL_IDLE)) or None,
            "max_lifetime": _number(labels.get(_docker.LABEL_LIFETIME)) or None,
            "owner_pid": owner_pid,
            "owner_host": labels.get(_docker.LABEL_HOST, ""),
            "owner_here": not _docker.owned_elsewhere(labels),
            "owner_uid": labels.get(_docker.LABEL_UID, ""),
            "orphan": orphan,
            "image": (container.attrs.get("Config") or {}).get("Image", ""),
        })
    return rows


def format_age(seconds: float | None) -> str:
    """`12s`, `5m`, `3.2h`, or `-`."""
    return "-" if seconds is None else _age(seconds)


def current_owner() -> dict[str, str]:
    """This process's owner labels (for messages and tests)."""
    return {"pid": str(os.getpid()), "host": host_id()}
