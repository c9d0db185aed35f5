"""Moving files between the host and a sandbox's workspace, refusing every path that leaves the workspace.

Paths are given relative to the workspace (an absolute path inside it is accepted too). They are refused with
`SandboxFileError` when they are empty, contain NUL, or climb out with `..`; and at the moment of the copy,
when any symlink on the way resolves outside the workspace (the check happens where the files are: on the host
for `LocalSandbox`, inside the container for `DockerSandbox`, by `CONTAINER_SCRIPT` run as the sandbox user).

Docker transfers pass through the session directory, the one host directory the container shares: the host
writes `<session_dir>/.xfer-<random>` and the container moves it into place, or the container copies a file
there and the host reads it with `O_NOFOLLOW` and checks it is a regular file, so a hostile kernel cannot
point the host at a file of its own choosing.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import stat
from pathlib import Path

from lllm.errors import SandboxFileError

MAX_TRANSFER_BYTES = 256 << 20
"""Largest file `upload`/`download` moves (the workspace itself is smaller by default)."""
MAX_LISTED = 10_000
"""`list_files` returns at most this many paths."""


def clean_relative(path: str, *, workspace: str) -> str:
    """`path` as a normalised path relative to the workspace.

    Raises:
        SandboxFileError: empty, NUL, not a str, or leaves the workspace.
    """
    if not isinstance(path, str) or not path or "\x00" in path:
        raise SandboxFileError(f"bad sandbox path {path!r}: give a non-empty path relative to the workspace",
                               path=path)
    text = path.replace("\\", "/")
    if text.startswith("/"):
        ws = workspace.rstrip("/")
        if text != ws and not text.startswith(ws + "/"):
            raise SandboxFileError(f"path {path!r} is outside the workspace {workspace!r}; use a path relative "
                                   "to the workspace", path=path)
        text = text[len(ws) :].lstrip("/") or "."
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../") or norm.startswith("/"):
        raise SandboxFileError(f"path {path!r} leaves the workspace (via '..'); use a path inside it", path=path)
    return norm


def read_source(src: str | Path | bytes) -> bytes:
    """The bytes to upload: `src` itself when bytes, else the content of that host file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        try:
            with open(src, "rb") as fh:
                data = fh.read(MAX_TRANSFER_BYTES + 1)
        except OSError as exc:
            raise SandboxFileError(f"cannot read upload source {str(src)!r}: {exc.strerror}", path=str(src)) from exc
    if len(data) > MAX_TRANSFER_BYTES:
        raise SandboxFileError(f"upload of {len(data):,} bytes is over the {MAX_TRANSFER_BYTES:,}-byte limit",
                               size=len(data))
    return data


# -- host-side workspace (LocalSandbox) ---------------------------------------------------------------------------
def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def local_upload(workspace: Path, data: bytes, dest: str) -> str:
    """Write `data` to `dest` under `workspace` (a host directory); return the relative path."""
    rel = clean_relative(dest, workspace=str(workspace))
    if rel == ".":
        raise SandboxFileError(f"upload destination {dest!r} names the workspace itself; give a file name", path=dest)
    root = os.path.realpath(workspace)
    target = os.path.join(root, rel)
    parent = os.path.realpath(os.path.dirname(target))
    if not _inside(parent, root):
        raise SandboxFileError(f"upload destination {dest!r} resolves outside the workspace (a symlink)", path=dest)
    os.makedirs(parent, exist_ok=True)
    final = os.path.join(parent, os.path.basename(target))
    if os.path.islink(final):
        raise SandboxFileError(f"upload destination {dest!r} is a symlink; refusing to write through it", path=dest)
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return rel


def local_download(workspace: Path, path: str) -> bytes:
    """Read `path` under `workspace`, refusing symlinks that lead outside it."""
    rel = clean_relative(path, workspace=str(workspace))
    root = os.path.realpath(workspace)
    real = os.path.realpath(os.path.join(root, rel))
    if not _inside(real, root):
        raise SandboxFileError(f"download of {path!r} refused: it resolves to {real!r}, outside the workspace "
                               "(a symlink)", path=path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SandboxFileError(f"cannot download {path!r}: {exc.strerror}", path=path) from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise SandboxFileError(f"cannot download {path!r}: not a regular file", path=path)
        data = fh.read(MAX_TRANSFER_BYTES + 1)
    if len(data) > MAX_TRANSFER_BYTES:
        raise SandboxFileError(f"{path!r} is over the {MAX_TRANSFER_BYTES:,}-byte download limit", path=path)
    return data


def local_list(workspace: Path, path: str = ".") -> list[str]:
    """Files under `path` in `workspace`, relative to the workspace (symlinks listed, never followed)."""
    rel = clean_relative(path, workspace=str(workspace))
    root = os.path.realpath(workspace)
    start = os.path.realpath(os.path.join(root, rel))
    if not _inside(start, root):
        raise SandboxFileError(f"cannot list {path!r}: it resolves outside the workspace", path=path)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
        if len(found) >= MAX_LISTED:
            break
    return sorted(found)[:MAX_LISTED]


# -- container side (DockerSandbox) ---------------------------------------------------------------------------------
def xfer_name() -> str:
    return f".xfer-{secrets.token_hex(12)}"


def host_write_xfer(session_dir: Path, data: bytes) -> str:
    """Write upload bytes into the session directory for the container to pick up; return the file name."""
    from lllm.sandbox._rundir import chown_for_sandbox

    name = xfer_name()
    fd = os.open(session_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    chown_for_sandbox(session_dir / name)
    return name


def host_take_xfer(session_dir: Path, name: str) -> bytes:
    """Read and delete a file the container left in the session directory (never following a symlink)."""
    path = session_dir / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise SandboxFileError(f"the sandbox did not hand over the file ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise SandboxFileError("the sandbox handed over something that is not a regular file")
            data = fh.read(MAX_TRANSFER_BYTES + 1)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    if len(data) > MAX_TRANSFER_BYTES:
        raise SandboxFileError(f"download is over the {MAX_TRANSFER_BYTES:,}-byte limit")
    return data


CONTAINER_SCRIPT = r"""
import json, os, shutil, stat, sys
ws = os.path.realpath(sys.argv[1]); run = os.path.realpath(sys.argv[2]); op = sys.argv[3]
def inside(p): return p == ws or p.startswith(ws + "/")
def fail(msg): print(json.dumps({"ok": False, "error": msg})); sys.exit(0)
try:
    if op == "put":
        xfer, rel = sys.argv[4], sys.argv[5]
        target = os.path.join(ws, rel)
        parent = os.path.realpath(os.path.dirname(target))
        if not inside(parent): fail("the destination's directory resolves outside the workspace (a symlink)")
        os.makedirs(parent, exist_ok=True)
        final = os.path.join(parent, os.path.basename(target))
        if os.path.islink(final): fail("the destination is a symlink; refusing to write through it")
        src = os.open(os.path.join(run, xfer), os.O_RDONLY | os.O_NOFOLLOW)
        dst = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(src, "rb") as a, os.fdopen(dst, "wb") as b: shutil.copyfileobj(a, b, 1 << 20)
        os.unlink(os.path.join(run, xfer))
        print(json.dumps({"ok": True}))
    elif op == "get":
        rel, xfer = sys.argv[4], sys.argv[5]
        real = os.path.realpath(os.path.join(ws, rel))
        if not inside(real): fail("it resolves to %r, outside the workspace (a symlink)" % real)
        src = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(src).st_mode): fail("not a regular file")
        dst = os.open(os.path.join(run, xfer), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(src, "rb") as a, os.fdopen(dst, "wb") as b: shutil.copyfileobj(a, b, 1 << 20)
        print(json.dumps({"ok": True}))
    elif op == "ls":
        start = os.path.realpath(os.path.join(ws, sys.argv[4]))
        if not inside(start): fail("it resolves outside the workspace")
        out = []
        for d, dirs, files in os.walk(start):
            for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                out.append(os.path.relpath(os.path.join(d, n), ws))
            if len(out) >= 10000: break
        print(json.dumps({"ok": True, "files": sorted(out)[:10000]}))
except OSError as exc:
    fail(exc.strerror or str(exc))
"""
