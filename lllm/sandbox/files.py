"""Moving files between the host and a sandbox's workspace, refusing every path that leaves the workspace.

Paths are given relative to the workspace (an absolute path inside it is accepted too). They are refused with
`SandboxFileError` when they are empty, contain NUL, or climb out with `..`; and at the moment of the copy,
when any symlink on the way resolves outside the workspace (the check happens where the files are: on the host
for `LocalSandbox`, inside the container for `DockerSandbox`, by `CONTAINER_SCRIPT` run as the sandbox user).

Docker transfers pass through the session directory, the one host directory the container shares: the host
writes `<session_dir>/.xfer-<random>` and the container moves it into place, or the container copies a file
there and the host reads it with `O_NOFOLLOW` and checks it is a regular file, so a hostile kernel cannot
point the host at a file of its own choosing.

The helper that does the container's side runs as the sandbox user, the same uid as kernel code, so nothing it
says is trusted further than it must be: it runs as `python3 -I` (no user site directory, where kernel code
could plant a `usercustomize.py`; no PYTHON* variables; no cwd on `sys.path`); it gets its request and a
per-call nonce on stdin and the host believes only the output line that starts with that nonce (`parse_reply`,
validated by `HelperReply`); its output is read with a byte cap and a deadline and it is killed past either
(`lllm.sandbox._exec`); every file it opens is opened non-blocking and must be a regular file, so a FIFO where
a file should be fails at once instead of holding a host thread for ever. `LocalSandbox` opens files the same
way on the host.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import secrets
import stat
from pathlib import Path
from typing import IO, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def read_source(src: str | Path | bytes, *, limit: int = MAX_TRANSFER_BYTES) -> bytes:
    """The bytes to upload: `src` itself when bytes, else the content of that host file, which must be a regular
    file (not a link, FIFO or device: a FIFO would block the caller), of at most `limit` bytes."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        if os.path.islink(src):
            raise SandboxFileError(f"upload source {str(src)!r} is a symlink: links are not copied (pass the file it "
                                   f"points to: {os.path.realpath(src)!r})", path=str(src))
        fd = _open_regular(str(src), os.O_RDONLY, what=f"read upload source {str(src)!r}", path=str(src))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise SandboxFileError(f"upload of {len(data):,} bytes is over the {limit:,}-byte limit (the sandbox's "
                               "workspace, or the largest single transfer)", size=len(data))
    return data


# -- folders: one archive each way (both backends) ----------------------------------------------------------------
def pack_folder(src: Path, *, limit: int, limit_name: str, what: str = "upload",
                label: str | None = None) -> tuple[IO[bytes], int]:
    """A host folder packed as a tar (in a spooled temporary file, at its start) and its size, after checking that
    it holds only folders and regular files and that it fits in `limit` bytes (`limit_name` says what that is,
    for the error).

    Raises:
        SandboxFileError: a link or special file in it, unreadable, or too large; nothing has been sent.
    """
    import tempfile

    from lllm.sandbox import _tarsafe

    name = label if label is not None else str(src)
    try:
        entries, size = _tarsafe.scan(str(src), limit=limit)
    except _tarsafe.TooLarge:
        raise SandboxFileError(f"cannot {what} folder {name!r}: it is larger than {limit_name} ({limit:,} "
                               f"bytes); {what} less, or give the sandbox a larger SandboxLimits(workspace_size=...)",
                               path=str(src), limit=limit) from None
    except _tarsafe.ArchiveError as exc:
        raise SandboxFileError(f"cannot {what} folder {name!r}: {exc}", path=str(src)) from None
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - returned to the caller
    try:
        _tarsafe.pack(str(src), entries, spool)
    except _tarsafe.ArchiveError as exc:
        spool.close()
        raise SandboxFileError(f"cannot {what} folder {name!r}: {exc}", path=str(src)) from None
    spool.seek(0)
    return spool, size


def unpack_folder(source: IO[bytes], dest: str | Path, *, max_bytes: int, what: str) -> Path:
    """Unpack an archive the sandbox sent into the host folder `dest`, which must be missing or empty; every
    member is checked first (`lllm.sandbox._tarsafe.extract`). On a refused member nothing is kept.

    Raises:
        SandboxFileError: `dest` is not a missing or empty folder, or the archive is refused.
    """
    import shutil

    from lllm.sandbox import _tarsafe

    target = check_download_dest(dest, what=what)
    existed = os.path.lexists(target)
    try:
        _tarsafe.extract(source, str(target), fresh=True, max_bytes=max_bytes)
    except _tarsafe.ArchiveError as exc:
        if existed:
            for child in target.iterdir():
                (shutil.rmtree if child.is_dir() and not child.is_symlink() else os.unlink)(child)
        else:
            shutil.rmtree(target, ignore_errors=True)
        raise SandboxFileError(f"{what} refused: {exc}; nothing was kept", path=str(target)) from None
    return target


def check_download_dest(dest: str | Path, *, what: str) -> Path:
    """`dest` as a Path, after checking it is a new or empty folder (checked again when unpacking).

    Raises:
        SandboxFileError: it is a file, a link, or a folder with something in it.
    """
    target = Path(dest)
    if os.path.lexists(target):
        if os.path.islink(target) or not target.is_dir():
            raise SandboxFileError(f"{what}: the destination {str(target)!r} is not a folder; give a new or empty "
                                   "folder", path=str(target))
        if any(target.iterdir()):
            raise SandboxFileError(f"{what}: the destination {str(target)!r} is not empty; give a new or empty "
                                   "folder", path=str(target))
    return target


def default_dest(src: str | Path | bytes, dest: str | None) -> str:
    """Where an upload goes when no `dest` is given: the file's or folder's name."""
    if dest is not None:
        return dest
    if isinstance(src, (bytes, bytearray, memoryview)):
        raise SandboxFileError("upload of bytes needs a destination: upload(data, 'name.ext')")
    name = Path(src).name
    if not name or name in (".", ".."):
        raise SandboxFileError(f"cannot tell a destination name from {str(src)!r}; give dest=", path=str(src))
    return name


def is_folder(src: str | Path | bytes) -> bool:
    """A path (not bytes) that is a folder, not a link to one."""
    return isinstance(src, (str, Path)) and os.path.isdir(src) and not os.path.islink(src)


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
    fd = _open_regular(final, os.O_WRONLY | os.O_CREAT, 0o644, what=f"upload to {dest!r}", path=dest)
    with os.fdopen(fd, "wb") as fh:
        fh.truncate(0)
        fh.write(data)
    return rel


def _open_regular(target: str, flags: int, mode: int = 0o600, *, what: str, **facts: str) -> int:
    """Open without following a final symlink and without blocking (a FIFO would block the caller for ever),
    and refuse what is not a regular file. Returns a blocking descriptor."""
    try:
        fd = os.open(target, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise SandboxFileError(f"cannot {what}: not a regular file (a FIFO, device or directory)",
                                   **facts) from None
        raise SandboxFileError(f"cannot {what}: {exc.strerror}", **facts) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SandboxFileError(f"cannot {what}: not a regular file (a FIFO, device or directory)", **facts)
    os.set_blocking(fd, True)
    return fd


def local_download(workspace: Path, path: str) -> bytes:
    """Read `path` under `workspace`, refusing symlinks that lead outside it."""
    rel = clean_relative(path, workspace=str(workspace))
    root = os.path.realpath(workspace)
    real = os.path.realpath(os.path.join(root, rel))
    if not _inside(real, root):
        raise SandboxFileError(f"download of {path!r} refused: it resolves to {real!r}, outside the workspace "
                               "(a symlink)", path=path)
    fd = _open_regular(real, os.O_RDONLY, what=f"download {path!r}", path=path)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_TRANSFER_BYTES + 1)
    if len(data) > MAX_TRANSFER_BYTES:
        raise SandboxFileError(f"{path!r} is over the {MAX_TRANSFER_BYTES:,}-byte download limit", path=path)
    return data


def local_upload_folder(workspace: Path, src: Path, dest: str) -> str:
    """Copy the host folder `src` into `dest` under `workspace` as one checked archive; return the relative path."""
    from lllm.sandbox import _tarsafe

    rel = clean_relative(dest, workspace=str(workspace))
    if rel == ".":
        raise SandboxFileError(f"upload destination {dest!r} names the workspace itself; give a folder name", path=dest)
    root = os.path.realpath(workspace)
    target = os.path.join(root, rel)
    if not _inside(os.path.realpath(os.path.dirname(target)), root) or os.path.islink(target):
        raise SandboxFileError(f"upload destination {dest!r} resolves outside the workspace (a symlink)", path=dest)
    archive, _ = pack_folder(src, limit=MAX_TRANSFER_BYTES, limit_name="the largest transfer")
    with archive:
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _tarsafe.extract(archive, target, fresh=False, max_bytes=MAX_TRANSFER_BYTES)
        except _tarsafe.ArchiveError as exc:
            raise SandboxFileError(f"upload of folder {str(src)!r} to {dest!r} refused: {exc}", path=dest) from None
    return rel


def local_download_folder(workspace: Path, path: str, dest: str | Path) -> Path:
    """Copy the folder `path` of `workspace` to the host folder `dest` (missing or empty) as one checked archive."""
    rel = clean_relative(path, workspace=str(workspace))
    root = os.path.realpath(workspace)
    real = os.path.realpath(os.path.join(root, rel))
    if not _inside(real, root):
        raise SandboxFileError(f"download of folder {path!r} refused: it resolves to {real!r}, outside the "
                               "workspace (a symlink)", path=path)
    if not os.path.isdir(real):
        raise SandboxFileError(f"download of folder {path!r} refused: it is not a folder (download() takes files)",
                               path=path)
    check_download_dest(dest, what=f"download of folder {path!r}")
    archive, _ = pack_folder(Path(real), limit=MAX_TRANSFER_BYTES, limit_name="the largest transfer",
                             what="download", label=rel)
    with archive:
        return unpack_folder(archive, dest, max_bytes=MAX_TRANSFER_BYTES, what=f"download of folder {path!r}")


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


MAX_REPLY_BYTES = 8 << 20
"""Most output a file helper may write (a `list_files` reply of `MAX_LISTED` long names fits); more is a flood."""
MAX_LISTED_BYTES = 4 << 20
"""`list_files` stops listing (in the container) when the names reach this many bytes."""


class HelperReply(BaseModel):
    """The one line of a file helper's output the host believes: the one that starts with this call's nonce."""

    model_config = ConfigDict(extra="forbid")
    ok: bool
    error: str | None = Field(default=None, max_length=2000)
    files: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=MAX_LISTED)


def helper_request(op: str, nonce: str, *, workspace: str, run_dir: str, **args: str) -> bytes:
    """The line a helper reads on stdin: the operation, its arguments and the nonce its reply must carry."""
    return (json.dumps({"op": op, "nonce": nonce, "ws": workspace, "run": run_dir, **args}) + "\n").encode()


def parse_reply(stdout: bytes, stderr: bytes, nonce: str, *, op: str) -> HelperReply:
    """The reply line tagged with `nonce`; any other output (a forged reply without the nonce, noise) is ignored.

    Raises:
        SandboxFileError: no line, or more than one, carries the nonce, or it is not a valid reply.
    """
    tag = nonce.encode() + b" "
    tagged = [line[len(tag):] for line in stdout.splitlines() if line.startswith(tag)]
    if len(tagged) != 1:
        tail = (stderr or stdout)[-400:].decode("utf-8", "replace")
        raise SandboxFileError(f"file operation {op!r} got no valid answer from its helper in the sandbox "
                               f"({len(tagged)} tagged replies); its last output: {tail!r}", op=op)
    try:
        return HelperReply.model_validate_json(tagged[0])
    except ValidationError as exc:
        raise SandboxFileError(f"file operation {op!r}: the helper's reply is malformed "
                               f"({exc.error_count()} errors)", op=op) from None


# Runs as `python3 -I -c CONTAINER_SCRIPT` (isolated: no user site, no PYTHON* variables, no cwd on sys.path),
# as the sandbox user, with the request on stdin. First it makes itself non-dumpable, so that other processes
# of the same uid (kernel code) cannot read or write its memory through /proc, and only then reads the nonce.
# Every open is O_NOFOLLOW and O_NONBLOCK and checked to be a regular file: a FIFO or device where a file
# should be is refused at once instead of blocking.
CONTAINER_SCRIPT = r"""
import ctypes, errno, json, os, stat, sys
try:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
except Exception:
    pass
req = json.loads(sys.stdin.buffer.readline(1 << 16))
nonce = req["nonce"]; ws = os.path.realpath(req["ws"]); run = os.path.realpath(req["run"]); op = req["op"]
LIMIT = %(limit)d
STREAM = not req.get("xfer")  # put/get without a transfer file: the file's bytes are on stdin/stdout
OUT = sys.stderr if op == "getdir" or (op == "get" and STREAM) else sys.stdout  # then stdout is the data
def reply(**kw):
    OUT.write(nonce + " " + json.dumps(kw) + "\n"); OUT.flush(); os._exit(0)
def fail(msg): reply(ok=False, error=msg[:1000])
def inside(p): return p == ws or p.startswith(ws + "/")
NB = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
def open_regular(path, flags, what, mode=0o600):
    try:
        fd = os.open(path, flags | NB, mode)
    except OSError as exc:  # ENXIO: a FIFO without a reader, opened for writing
        if exc.errno != errno.ENXIO: raise
        fail(what + " is not a regular file (a FIFO, device or directory)")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd); fail(what + " is not a regular file (a FIFO, device or directory)")
    os.set_blocking(fd, True)
    return fd
def copy(src, dst, size=None):
    done = 0
    while True:
        if size is not None:
            chunk = sys.stdin.buffer.read(min(1 << 20, size - done)) if size > done else b""
        else:
            chunk = os.read(src, 1 << 20)
        if not chunk: return
        done += len(chunk)
        if done > LIMIT: fail("the file is over the %%d-byte transfer limit" %% LIMIT)
        view = memoryview(chunk)
        while view: view = view[os.write(dst, view):]
try:
    if op == "put":
        target = os.path.join(ws, req["rel"])
        parent = os.path.realpath(os.path.dirname(target))
        if not inside(parent): fail("the destination's directory resolves outside the workspace (a symlink)")
        os.makedirs(parent, exist_ok=True)
        final = os.path.join(parent, os.path.basename(target))
        if os.path.islink(final): fail("the destination is a symlink; refusing to write through it")
        src = None if STREAM else open_regular(os.path.join(run, req["xfer"]), os.O_RDONLY, "the transfer file")
        dst = open_regular(final, os.O_WRONLY | os.O_CREAT, "the destination", 0o644)
        os.ftruncate(dst, 0)
        copy(src, dst, int(req["size"]) if STREAM else None)
        if not STREAM: os.unlink(os.path.join(run, req["xfer"]))
        reply(ok=True)
    elif op == "get":
        real = os.path.realpath(os.path.join(ws, req["rel"]))
        if not inside(real): fail("it resolves to %%r, outside the workspace (a symlink)" %% real)
        src = open_regular(real, os.O_RDONLY, "it")
        dst = 1 if STREAM else os.open(os.path.join(run, req["xfer"]), os.O_WRONLY | os.O_CREAT | os.O_EXCL | NB, 0o600)
        copy(src, dst)
        reply(ok=True)
    elif op == "putdir":
        target = os.path.join(ws, req["rel"])
        parent = os.path.realpath(os.path.dirname(target))
        if not inside(parent): fail("the destination's folder resolves outside the workspace (a symlink)")
        if os.path.islink(target): fail("the destination is a symlink; refusing to write through it")
        fs = os.statvfs(ws)
        free = fs.f_bavail * fs.f_frsize
        if int(req["size"]) > free:
            fail("the workspace has %%d bytes free and the folder needs about %%d: make room (remove files) or start "
                 "the sandbox with a larger SandboxLimits.workspace_size" %% (free, int(req["size"])))
        os.makedirs(parent, exist_ok=True)
        try:
            extract(sys.stdin.buffer, os.path.join(parent, os.path.basename(target)), fresh=False, max_bytes=LIMIT)
        except ArchiveError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno == errno.ENOSPC: fail("the workspace is full: the files unpacked before that stay")
            raise
        reply(ok=True)
    elif op == "getdir":
        real = os.path.realpath(os.path.join(ws, req["rel"]))
        if not inside(real): fail("it resolves to %%r, outside the workspace (a symlink)" %% real)
        if not os.path.isdir(real): fail("it is not a folder (download() takes files)")
        try:
            entries, size = scan(real, limit=int(req["limit"]))
            pack(real, entries, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except ArchiveError as exc:
            fail(str(exc))
        reply(ok=True)
    elif op == "ls":
        start = os.path.realpath(os.path.join(ws, req["rel"]))
        if not inside(start): fail("it resolves outside the workspace")
        out, size = [], 0
        for d, dirs, names in os.walk(start):
            for n in names + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                rel = os.fsencode(os.path.relpath(os.path.join(d, n), ws)).decode("utf-8", "replace")
                out.append(rel); size += len(rel.encode()) + 4
                if len(out) >= %(listed)d or size >= %(listed_bytes)d: reply(ok=True, files=sorted(out))
        reply(ok=True, files=sorted(out))
    else:
        fail("unknown operation %%r" %% op)
except OSError as exc:
    fail(exc.strerror or str(exc))
""" % {"limit": MAX_TRANSFER_BYTES, "listed": MAX_LISTED, "listed_bytes": MAX_LISTED_BYTES}

ARCHIVE_SCRIPT = Path(__file__).with_name("_tarsafe.py").read_text(encoding="utf-8") + CONTAINER_SCRIPT
"""The helper for folders (`putdir`, `getdir`): `CONTAINER_SCRIPT` after the source of `lllm.sandbox._tarsafe`,
so the container checks archive members by the same rules as the host."""
