"""Per-session host directories and owner identity: where they live, how they are made, who owns them.

A session directory is `<root>/<owner pid>-<sandbox id>` (root: `$LLLM_RUN_ROOT`, default `/tmp/lllm-run`;
kept short because unix socket paths are limited to 107 bytes). It holds the kernel's ipc sockets, its
connection file and state, and later the gateway's socket and token. It is mounted at `/run/lllm` in the
container, owned by the container's uid (1000 when the host runs as root) with mode 700, so no other
unprivileged host user can reach the kernel. The owner (pid + process start time + host id) is what the
reaper checks: a container or directory whose owner process is gone is an orphan.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

from lllm.errors import SandboxStartError

SANDBOX_UID = 1000
SANDBOX_GID = 1000
_DEFAULT_ROOT = "/tmp/lllm-run"


def run_root() -> Path:
    """The parent of every session directory (`$LLLM_RUN_ROOT` or /tmp/lllm-run), mode 700.

    Mode 700, not 711: the container reaches its session directory through the bind mount, never through this
    path, so no one but this user needs to traverse it; and the sandbox uid (1000) may be a real account on the
    host (it often is), which must not reach other sessions' kernel sockets, keys and gateway tokens.

    The default lives in /tmp, where any local user could create it first. Whoever controls the root can swap
    a session directory for a symlink between our mkdir and the tmpfs mount or the bind mount, so a root that
    is a symlink, not ours, or writable by group or others is refused.

    Raises:
        SandboxStartError: the root is not a directory this user alone controls (the message says how to fix it).
    """
    root = Path(os.environ.get("LLLM_RUN_ROOT", _DEFAULT_ROOT))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(root)
    problem = ""
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        raise SandboxStartError(
            f"the sandbox run root {str(root)!r} {problem}; another user could redirect session directories "
            "through it. Remove it (it is recreated mode 700) or set LLLM_RUN_ROOT to a short directory that "
            "only you own, such as /run/lllm-$USER.", path=str(root))
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, 0o700)  # ours and not a link (checked above): close a root made 711 by older versions
    return root


def new_sandbox_id() -> str:
    return secrets.token_hex(6)


def container_user() -> tuple[int, int]:
    """The uid:gid the container runs as: 1000 when the host is root, else the host's own ids (so the
    session directory stays mode 700 and still reachable from both sides)."""
    if os.geteuid() == 0:
        return SANDBOX_UID, SANDBOX_GID
    return os.geteuid(), os.getegid()


def make_session_dir(sandbox_id: str, *, chown: bool = True, size: int | None = None, keep: bool = False) -> Path:
    """Create `<root>/<pid>-<sandbox_id>` (`<root>/keep-<sandbox_id>` with `keep`), mode 700, owned by the
    container user.

    Args:
        sandbox_id: the sandbox's id.
        keep: the sandbox outlives this process (a named one): its directory is not named after the pid, so the
            reaper removes it with its container, not with this process.
        chown: give it to the container user (Docker sandboxes).
        size: make it a tmpfs of at most this many bytes (needs root; otherwise it stays a plain directory).
            The container can write into its session directory, so without this a hostile cell could fill
            the host's disk through it; a tmpfs written by the container is charged to its memory limit.

    Raises:
        SandboxStartError: it cannot be created (the message says where and why).
    """
    path = run_root() / f"{'keep' if keep else os.getpid()}-{sandbox_id}"
    if len(str(path)) > 80:
        raise SandboxStartError(f"session directory path {str(path)!r} is too long for unix sockets; set "
                                "LLLM_RUN_ROOT to a short directory such as /tmp/lllm-run", path=str(path))
    try:
        path.mkdir(mode=0o700)
        if size and os.geteuid() == 0:
            uid, gid = (SANDBOX_UID, SANDBOX_GID) if chown else (0, 0)
            _mount_tmpfs(path, f"size={size},mode=0700,uid={uid},gid={gid}")
        if chown and os.geteuid() == 0:
            os.chown(path, SANDBOX_UID, SANDBOX_GID)
        os.chmod(path, 0o700)
    except OSError as exc:
        remove_session_dir(path)
        raise SandboxStartError(f"cannot create session directory {str(path)!r}: {exc}; check LLLM_RUN_ROOT",
                                path=str(path)) from exc
    return path


_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount_tmpfs(path: Path, options: str) -> None:
    import ctypes

    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount tmpfs: {os.strerror(errno)}")


def _unmount(path: Path) -> None:
    if os.path.ismount(path):
        _libc().umount2(os.fsencode(path), _MNT_DETACH)


def chown_for_sandbox(path: Path) -> None:
    """Give a file the host created in a session directory to the container user (no-op unless root)."""
    if os.geteuid() == 0:
        os.chown(path, SANDBOX_UID, SANDBOX_GID, follow_symlinks=False)


def remove_session_dir(path: Path) -> None:
    """Delete a session directory (only ever one under the run root; anything else is left alone)."""
    try:
        resolved = path.resolve()
        root = run_root().resolve()
    except (OSError, SandboxStartError):
        return  # an untrusted run root: delete nothing through it
    if resolved.parent != root:
        return
    _unmount(resolved)
    shutil.rmtree(resolved, ignore_errors=True)


@lru_cache(maxsize=1)
def host_id() -> str:
    """This machine's identity for labels: hostname plus the boot id (so a reboot makes every pid stale)."""
    boot = ""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        pass
    return f"{socket.gethostname()}:{boot}"


def process_start_time(pid: int) -> str:
    """A token that changes when `pid` is reused ('' where /proc is not available)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def other_machine(host: str) -> bool:
    """True when `host` (an owner's `host_id()`; '' when unknown) is not this machine: on an engine several machines
    use, its owner process can neither be checked from here nor its session directory and record reached. The one
    test of "another machine's sandbox" for the reaper, `ls`, `rm` and `attach`."""
    return host != host_id()


def machine_name(host: str) -> str:
    """The hostname in an owner's host id (`host_id()`), '?' when it does not say."""
    return host.rpartition(":")[0] or "?"


def owner_alive(pid: int, start: str, host: str) -> bool:
    """True when the owning process may still be running. Owners on other hosts always count as alive."""
    if other_machine(host):
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start and process_start_time(pid) not in ("", start):
        return False  # the pid was reused by another process
    return True


def read_guest_json(path: Path, *, limit: int = 65536) -> dict[str, Any] | None:
    """A small JSON object the container may have written in a session directory, or None. Kernel code can write
    there, so the name may hold a symlink, a FIFO, a directory or junk: only a regular file is read (never
    followed, never blocking), and at most `limit` bytes of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = json.loads(fh.read(limit) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
