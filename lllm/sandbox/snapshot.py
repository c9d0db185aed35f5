"""Save a sandbox to a file and resume it later in a fresh container: `sb.save(path)`, `DockerSandbox.resume(path)`.

A snapshot is one uncompressed tar file holding
- `lllm-snapshot.json`: the metadata (`SnapshotMeta`: format, image and its id, limits, the variables saved,
  those that could not be and why, sizes, when);
- `namespace.bin`: the kernel's user variables, each pickled on its own with dill by the kernel itself
  (`sandbox/lllm_snapshot.py`);
- `workspace.tar`: the workspace files, archived by `tar` inside the container.

The host never unpickles a snapshot, and never unpacks its workspace archive: it reads the JSON metadata,
checks sizes and names, and hands the two other members to a fresh container, whose kernel unpickles the
variables (a pickle can run code when loaded: here it runs in a sandbox like any cell) and whose `tar` unpacks
the files into its workspace. Resuming checks, before starting anything: the file is a snapshot of this
format (else "corrupt"), it was saved from the image it would resume in (else "from another image", unless
`allow_other_image=True`), and it fits the new sandbox's limits (namespace under its memory limit and its
session directory, workspace under `workspace_size`). A variable that does not unpickle there is reported like
one that could not be saved: `sb.resume_notice`, repeated in the first cell's notices for the model.

`save` runs between cells (it takes the sandbox's lock, so a running cell finishes first); the kernel is not
changed by it. Threads, generators, open files and connections do not pickle: they are listed in
`SnapshotInfo.skipped` with the reason, and the rest is saved.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.errors import SandboxError, SnapshotError, UsageError
from lllm.sandbox.base import SandboxLimits, parse_size

FORMAT = 1
META, NAMESPACE, WORKSPACE_TAR = "lllm-snapshot.json", "namespace.bin", "workspace.tar"
MAX_META_BYTES = 4 << 20
WORKSPACE = "/home/sandbox/work"


class SnapshotMeta(BaseModel):
    """`lllm-snapshot.json`: what a snapshot holds and where it came from."""

    model_config = ConfigDict(extra="ignore")

    format: int
    image: str
    image_id: str | None = None
    limits: dict[str, Any] = Field(default_factory=dict)
    saved: list[str] = Field(default_factory=list)
    """The variables in `namespace.bin`."""
    skipped: dict[str, str] = Field(default_factory=dict)
    """Variables that could not be pickled, and why."""
    namespace_bytes: int = 0
    workspace_bytes: int = 0
    created: float = 0.0
    sandbox_id: str = ""


class SnapshotInfo(BaseModel):
    """What `save` wrote (`meta`) and where."""

    path: str
    meta: SnapshotMeta
    seconds: float


# -- save ----------------------------------------------------------------------------------------------------------
def save(sandbox: Any, path: str | os.PathLike[str], *, timeout: float = 600.0) -> SnapshotInfo:
    """Snapshot `sandbox` (a `DockerSandbox` or one of its branches) into the file `path` (see the module docs).

    Raises:
        SnapshotError: the kernel could not save (over the limit, it ended), the workspace could not be read,
            or `path` cannot be written; nothing is left at `path` then.
        SandboxClosed: the sandbox is closed.
    """
    from lllm.sandbox._requests import kernel_request

    started = time.monotonic()
    sandbox._require_running("save")
    root = sandbox._root_sandbox()
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"save({str(target)!r}): that is a directory; give the snapshot's file name")
    name = f"snapshot-{secrets.token_hex(8)}.bin"
    host_file = root.session_dir / name
    # the pickled namespace passes through the session directory (a tmpfs of its own size)
    limit = max(16 << 20, parse_size(root.limits.workspace_size))
    with sandbox._lock:
        if sandbox.channels is None:
            raise SnapshotError(f"the kernel of sandbox {sandbox.sandbox_id!r} is not running; nothing to save",
                                sandbox_id=sandbox.sandbox_id)
        try:
            # the workspace is archived by `tar` in the container while the kernel pickles (both between cells)
            archiver = _Background(_workspace_archive, root)
            try:
                reply = kernel_request(sandbox, "lllm_save_request", {"file": name, "max_bytes": limit - (1 << 20)},
                                       "lllm_save_reply", timeout=timeout, error=SnapshotError,
                                       what="save its variables")
                namespace = _take_file(host_file)
            except BaseException:
                archiver.wait()  # the kernel's failure is the one to report
                raise
            workspace = archiver.result()
        finally:
            _unlink(host_file)
    meta = SnapshotMeta(format=FORMAT, image=str(root.image), image_id=_image_id(str(root.image), root.engine),
                        limits=root.limits.model_dump(), saved=list(reply.get("saved") or []),
                        skipped=dict(reply.get("skipped") or {}), namespace_bytes=len(namespace),
                        workspace_bytes=len(workspace), created=time.time(), sandbox_id=sandbox.sandbox_id)
    _write_snapshot(target, meta, namespace, workspace)
    return SnapshotInfo(path=str(target), meta=meta, seconds=time.monotonic() - started)


def _take_file(path: Path) -> bytes:
    """Read a file the kernel wrote into the session directory: a regular file only, never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise SnapshotError(f"the kernel's saved namespace is missing from the session directory: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise SnapshotError("the kernel's saved namespace is not a regular file (replaced by code in the sandbox?)")
        return fh.read()


def _workspace_archive(root: Any) -> bytes:
    from lllm.sandbox import _exec
    from lllm.sandbox._rundir import container_user

    uid, gid = container_user()
    cap = parse_size(root.limits.workspace_size) + (8 << 20)
    try:
        out = _exec.run_capped(root.container, ["tar", "-C", WORKSPACE, "-cf", "-", "."], user=f"{uid}:{gid}",
                               timeout=root.file_timeout, max_bytes=cap * 2, what="the workspace archiver")
    except SandboxError as exc:
        raise SnapshotError(f"the workspace of sandbox {root.sandbox_id!r} could not be archived: {exc}") from None
    data = bytes(out.stdout)
    # a whole tar archive ends with two zero blocks; anything else means tar stopped half-way
    if len(data) < 1024 or len(data) % 512 or data[-1024:].strip(b"\0"):
        raise SnapshotError(f"the workspace of sandbox {root.sandbox_id!r} could not be archived: "
                            f"{out.stderr.decode(errors='replace')[:300] or 'tar stopped half-way'}")
    return data


def _image_id(image: str, engine: Any = None) -> str | None:
    """The id of `image` on `engine` (`lllm.sandbox._docker.Engine`; None: the environment's), None if it has none.

    Raises:
        SandboxStartError: no engine answers there, or TLS failed (not an absent image)."""
    from lllm.sandbox import _docker

    client = _docker.client(engine)
    try:
        return str(client.images.get(image).id)
    except Exception:  # noqa: BLE001 - only for the metadata
        return None


def _write_snapshot(target: Path, meta: SnapshotMeta, namespace: bytes, workspace: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lllm-snapshot-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for member, data in ((META, meta.model_dump_json(indent=1).encode()), (NAMESPACE, namespace),
                                 (WORKSPACE_TAR, workspace)):
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(data), int(meta.created), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(Path(tmp))
        raise SnapshotError(f"the snapshot could not be written to {str(target)!r}: {exc}") from None


# -- resume --------------------------------------------------------------------------------------------------------
def read_meta(path: str | os.PathLike[str]) -> SnapshotMeta:
    """The metadata of the snapshot at `path` (JSON only: nothing is unpickled).

    Raises:
        SnapshotError: not a snapshot of this format (corrupt, cut short, another kind of file).
    """
    with _open(path) as tar:
        return _meta(tar, path)


def _open(path: str | os.PathLike[str]) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {str(path)!r}") from None
    except (tarfile.TarError, OSError) as exc:
        raise SnapshotError(f"{str(path)!r} is not an lllm sandbox snapshot (or it is corrupt): {exc}") from None


def _members(tar: tarfile.TarFile, path: Any) -> dict[str, tarfile.TarInfo]:
    try:
        members = {m.name: m for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SnapshotError(f"the snapshot {str(path)!r} is corrupt: {exc}") from None
    if set(members) != {META, NAMESPACE, WORKSPACE_TAR} or not all(m.isfile() for m in members.values()):
        raise SnapshotError(f"{str(path)!r} is not an lllm sandbox snapshot: it holds {sorted(members)!r}, expected "
                            f"{[META, NAMESPACE, WORKSPACE_TAR]!r} as plain files")
    return members


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Any) -> bytes:
    try:
        fh = tar.extractfile(member)
        data = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SnapshotError(f"the snapshot {str(path)!r} is corrupt ({member.name}: {exc})") from None
    if len(data) != member.size:
        raise SnapshotError(f"the snapshot {str(path)!r} is cut short ({member.name})")
    return data


def _meta(tar: tarfile.TarFile, path: Any) -> SnapshotMeta:
    members = _members(tar, path)
    if members[META].size > MAX_META_BYTES:
        raise SnapshotError(f"the snapshot {str(path)!r} is corrupt: its metadata is {members[META].size:,} bytes")
    try:
        meta = SnapshotMeta.model_validate(json.loads(_read(tar, members[META], path)))
    except (ValueError, ValidationError) as exc:
        raise SnapshotError(f"the snapshot {str(path)!r} has corrupt metadata: {str(exc)[:300]}") from None
    if meta.format != FORMAT:
        raise SnapshotError(f"the snapshot {str(path)!r} is of format {meta.format}; this lllm reads format {FORMAT}")
    if members[NAMESPACE].size != meta.namespace_bytes or members[WORKSPACE_TAR].size != meta.workspace_bytes:
        raise SnapshotError(f"the snapshot {str(path)!r} is corrupt: its sizes do not match its metadata")
    return meta


def resume(cls: Any, path: str | os.PathLike[str], *, image: str | None = None, limits: SandboxLimits | None = None,
           allow_other_image: bool = False, restore_timeout: float = 600.0, **options: Any) -> Any:
    """A started `cls` (DockerSandbox) restored from the snapshot at `path`.

    Args:
        image: the image to resume in (default: the snapshot's).
        limits: the new sandbox's limits (default: the snapshot's).
        allow_other_image: resume in an image other than the one the snapshot was saved from (its libraries
            may differ: some variables may then not unpickle, or unpickle differently).
        options: other `DockerSandbox` arguments (cell_timeout, env, ...).

    Raises:
        SnapshotError: corrupt, from another image (without `allow_other_image`), too large for the limits, or
            the restore failed; no container is left running then.
    """
    with _open(path) as tar:
        meta = _meta(tar, path)
        use_image = image or meta.image
        if use_image != meta.image and not allow_other_image:
            raise SnapshotError(
                f"the snapshot {str(path)!r} was saved from image {meta.image!r}, not {use_image!r}: its variables "
                "were pickled against that image's libraries. Resume it in that image (leave image= out), or pass "
                "allow_other_image=True to try anyway", image=meta.image)
        if image is None:
            from lllm.sandbox import _docker

            # the engine the sandbox will start on, which may be another machine's (docker_host=, tls=)
            engine = _docker.engine_from(options.get("docker_host"), options.get("tls"))
            current = _image_id(use_image, engine)
            if current is None:
                where = f"the Docker engine at {engine.describe()}" if engine is not None else "this Docker engine"
                raise SnapshotError(f"the snapshot {str(path)!r} was saved from image {meta.image!r}, which {where} "
                                    "does not have; build or load it, or pass image= and allow_other_image=True",
                                    image=meta.image)
            if meta.image_id and current != meta.image_id and not allow_other_image:
                raise SnapshotError(f"the snapshot {str(path)!r} was saved from another build of {meta.image!r} "
                                    f"({meta.image_id[:19]}, now {current[:19]}); pass allow_other_image=True to "
                                    "resume in this one", image=meta.image)
        try:
            lim = limits or SandboxLimits(**meta.limits)
        except (ValidationError, UsageError) as exc:
            raise SnapshotError(f"the snapshot {str(path)!r} has limits this lllm does not take: {exc}") from None
        _check_fits(meta, lim, path)
        members = _members(tar, path)
        _check_complete(members, path)
        # every check passed: the container starts while the two members are read (a cold start is most of a
        # resume); a read that fails after all ends the sandbox it started
        starter = _Background(_started, cls, dict(image=use_image, limits=lim, **options))
        try:
            namespace = _read(tar, members[NAMESPACE], path)
            workspace = _read(tar, members[WORKSPACE_TAR], path)
        except BaseException:
            try:
                starter.result().close()
            except BaseException:  # noqa: BLE001 - the read's error is the one to report
                pass
            raise
    sandbox = starter.result()
    try:
        _restore(sandbox, meta, namespace, workspace, restore_timeout)
    except BaseException:
        sandbox.close()
        raise
    return sandbox


def _started(cls: Any, options: dict[str, Any]) -> Any:
    sandbox = cls(**options)
    sandbox.start()
    return sandbox


def _check_complete(members: dict[str, tarfile.TarInfo], path: Any) -> None:
    """Every member's data is in the file (a snapshot cut short is refused before anything starts)."""
    size = os.path.getsize(path)
    for member in members.values():
        if member.offset_data + member.size > size:
            raise SnapshotError(f"the snapshot {str(path)!r} is cut short ({member.name})")


class _Background:
    """`fn(*args)` in a thread; `result()` waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _check_fits(meta: SnapshotMeta, lim: SandboxLimits, path: Any) -> None:
    memory, workspace = parse_size(lim.memory), parse_size(lim.workspace_size)
    session_dir = max(16 << 20, workspace)
    problems = []
    if meta.namespace_bytes > min(memory // 2, session_dir - (1 << 20)):
        problems.append(f"its variables take {meta.namespace_bytes / 1e6:.1f} MB pickled, more than the sandbox can "
                        f"load (half its memory limit {lim.memory}, and its workspace_size {lim.workspace_size})")
    if meta.workspace_bytes > workspace:
        problems.append(f"its workspace files take {meta.workspace_bytes / 1e6:.1f} MB, more than workspace_size "
                        f"{lim.workspace_size}")
    if problems:
        raise SnapshotError(f"the snapshot {str(path)!r} is too large for the sandbox's limits: "
                            f"{'; '.join(problems)}. Resume it with larger limits=SandboxLimits(...)")


def _restore(sandbox: Any, meta: SnapshotMeta, namespace: bytes, workspace: bytes, timeout: float) -> None:
    from lllm.sandbox import _exec
    from lllm.sandbox._rundir import chown_for_sandbox, container_user
    from lllm.sandbox._requests import kernel_request

    uid, gid = container_user()
    if workspace:
        try:
            out = _exec.run_capped(sandbox.container, ["sh", "-c", 'tar -C "$1" --no-same-owner -xf - && echo LLLM_OK',
                                                       "sh", WORKSPACE],
                                   user=f"{uid}:{gid}", stdin=workspace, timeout=sandbox.file_timeout,
                                   max_bytes=1 << 20, what="the workspace unpacker")
        except SandboxError as exc:
            raise SnapshotError(f"the snapshot's workspace could not be unpacked in the new sandbox: {exc}") from None
        if not out.stdout.rstrip().endswith(b"LLLM_OK"):
            raise SnapshotError("the snapshot's workspace could not be unpacked in the new sandbox: "
                                f"{out.stderr.decode(errors='replace')[:300]}")
    name = f"restore-{secrets.token_hex(8)}.bin"
    host_file = sandbox.session_dir / name
    fd = os.open(host_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(namespace)
    chown_for_sandbox(host_file)
    try:
        with sandbox._lock:
            reply = kernel_request(sandbox, "lllm_restore_request", {"file": name}, "lllm_restore_reply",
                                   timeout=timeout, error=SnapshotError, what="restore the snapshot's variables")
    finally:
        _unlink(host_file)
    failed = {str(k): str(v) for k, v in dict(reply.get("failed") or {}).items()}
    sandbox.restored_names = [str(n) for n in reply.get("restored") or []]
    sandbox.not_restored = {**meta.skipped, **failed}
    sandbox.resume_notice = resume_notice(meta, sandbox.restored_names, sandbox.not_restored)
    sandbox.add_notice(sandbox.resume_notice)


def resume_notice(meta: SnapshotMeta, restored: list[str], not_restored: dict[str, str]) -> str:
    """What the model is told about a resumed sandbox."""
    text = (f"this sandbox was resumed from a snapshot of sandbox {meta.sandbox_id or '?'} "
            f"({len(restored)} variable{'s' if len(restored) != 1 else ''} restored, workspace files restored)")
    if not_restored:
        listed = "; ".join(f"{name} ({why})" for name, why in sorted(not_restored.items())[:20])
        more = f"; and {len(not_restored) - 20} more" if len(not_restored) > 20 else ""
        text += f"; NOT restored: {listed}{more}"
    return text


# -- isolated fork -------------------------------------------------------------------------------------------------
def fork_isolated(sandbox: Any) -> Any:
    """`sb.fork(isolated=True)`: save `sandbox` and resume the snapshot in a new container of the same image and
    limits. Nothing is shared with the parent afterwards; its lifetime is its own (close it yourself)."""
    root = sandbox._root_sandbox()
    with tempfile.TemporaryDirectory(prefix="lllm-fork-") as tmp:
        snap = Path(tmp) / "fork.snapshot"
        save(sandbox, snap)
        return type(root).resume(snap, image=root.image, limits=root.limits, cell_timeout=root.cell_timeout,
                                 max_output_chars=root.max_output_chars, tracer=root.tracer, agent=root.agent)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["SnapshotInfo", "SnapshotMeta", "fork_isolated", "read_meta", "resume", "resume_notice", "save"]
