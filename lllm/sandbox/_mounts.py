"""Read-only host folders in a Docker sandbox: `DockerSandbox(mounts={"/host/path": "project"})`.

Each folder appears at `~/work/<name>` (`/home/sandbox/work/<name>`), bind-mounted read-only and not recursively
(folders mounted below it on the host are not carried in, so none of them can turn up writable). The workspace
is a tmpfs and the root filesystem is read-only: the engine mounts the tmpfs first and the bind mount on top
(mounts are applied by depth), creating the mount point in the fresh tmpfs as root. So the sandbox sees a
root-owned folder it cannot remove or rename (a mount point is busy), cannot remount or unmount (no
capabilities, and lllm's seccomp profile), and whose files it cannot write, create, delete or chmod
(read-only: EROFS). Files are read as the sandbox user (uid 1000 when the host runs as root): what that uid
may not read on the host it may not read inside either.

What a mount shows, the sandbox's code may read, and the model with it: mount a project, not a home folder.
Folders that would open the host (the engine's socket, /proc, /sys, /dev, /run, the sandboxes' run root, or a
folder holding any of them, such as `/` or `/var`) are refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lllm.errors import UsageError

MOUNT_ROOT = "/home/sandbox/work"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NEVER_INSIDE = ("/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd")
"""Host folders that are never mounted, nor anything in them."""
_NEVER_ABOVE = ("/etc", "/boot", "/root")
"""Host folders that are never mounted whole, nor any folder that holds them."""


def _protected() -> tuple[list[str], list[str]]:
    from lllm.sandbox._rundir import _DEFAULT_ROOT

    inside = [os.path.realpath(p) for p in _NEVER_INSIDE]
    inside.append(os.path.realpath(os.environ.get("LLLM_RUN_ROOT", _DEFAULT_ROOT)))  # the sessions' directories
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        inside.append(os.path.dirname(os.path.realpath(host[len("unix://"):])))
    return inside, [os.path.realpath(p) for p in _NEVER_ABOVE] + inside


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_mounts(mounts: Any) -> dict[str, str]:
    """`mounts` as {host folder (resolved): name}, checked; see the module docstring.

    Raises:
        UsageError: not a mapping; a host path that does not exist, is not a folder, or is refused; a name that
            is not one plain folder name, or comes twice.
    """
    if mounts is None:
        return {}
    if not isinstance(mounts, dict):
        raise UsageError(f"mounts must map host folders to names, like {{'/path/to/project': 'project'}}; got "
                         f"{mounts!r:.200}")
    checked: dict[str, str] = {}
    inside, above = _protected()
    for host, name in mounts.items():
        if not isinstance(host, (str, Path)) or not str(host):
            raise UsageError(f"mounts: {host!r} is not a host path")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
            raise UsageError(f"mounts: {name!r} (for {str(host)!r}) must be one plain folder name (letters, digits, "
                             "'.', '_', '-'), like 'project': it appears at ~/work/<name>")
        real = os.path.realpath(os.path.expanduser(str(host)))
        if not os.path.exists(real):
            raise UsageError(f"mounts: the host folder {str(host)!r} does not exist; create it, or fix the path "
                             "(nothing was started)", path=str(host))
        if not os.path.isdir(real):
            raise UsageError(f"mounts: {str(host)!r} is not a folder; mount the folder that holds it (or upload() "
                             "the file)", path=str(host))
        refused = [p for p in inside if _within(real, p)] + [p for p in above if _within(p, real)]
        if refused:
            raise UsageError(f"mounts: {str(host)!r} is refused: it is or holds {refused[0]!r}, which would open the "
                             "host to the sandbox; mount a project folder", path=str(host))
        if name in checked.values():
            raise UsageError(f"mounts: the name {name!r} is given twice; each folder needs its own name")
        checked[real] = name
    return checked


def mount_specs(checked: dict[str, str]) -> list[Any]:
    """The Docker SDK mounts for `check_mounts`'s result: read-only, non-recursive, private binds."""
    import docker.types

    specs = []
    for real, name in checked.items():
        spec = docker.types.Mount(f"{MOUNT_ROOT}/{name}", real, type="bind", read_only=True)
        spec["BindOptions"] = {"Propagation": "rprivate", "NonRecursive": True}
        specs.append(spec)
    return specs
