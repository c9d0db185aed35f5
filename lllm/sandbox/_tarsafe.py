"""Folders as tar archives, packed and unpacked with every member checked, on either side of the sandbox boundary.

Standard library only and nothing of lllm: the host imports this module, and the file helper that runs in the
container (`lllm.sandbox.files.CONTAINER_SCRIPT`) carries its source, so both sides apply the same rules.

Packing (`scan`, then `pack`) walks a folder without following links and refuses, by name, anything that is not
a regular file or a folder: a symlink, FIFO, socket or device. Unpacking (`extract`) reads the archive in one
pass (no seeking) and accepts only regular files and folders whose names are relative and stay inside (no
absolute path, no `..`, no NUL), within a byte and a member budget. It writes through directory descriptors:
each folder on the way is opened with `O_NOFOLLOW | O_DIRECTORY` relative to its parent, and each file is
created with `O_NOFOLLOW` (and `O_EXCL` into a fresh destination) relative to its folder, so a link planted
in the destination, before or during the extraction, is never followed. Modes keep their permission bits
only (no setuid, setgid or sticky).
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import IO, Any

_BLOCK = 512
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(Exception):
    """A folder that cannot be packed, or an archive member that is refused; the message names it."""


class TooLarge(ArchiveError):
    """The folder would make an archive larger than the limit."""


def archive_size(size: int) -> int:
    """Bytes one member of `size` takes in a tar (header plus data rounded to blocks; PAX headers extra)."""
    return _BLOCK + (size + _BLOCK - 1) // _BLOCK * _BLOCK


def scan(root: str, *, limit: int, max_members: int = 100_000) -> tuple[list[tuple[str, str]], int]:
    """The folder's entries as (relative path, "d" | "f") and the archive's size in bytes.

    Raises:
        ArchiveError: an entry is a link or special file, the folder is not readable, it has more than
            `max_members` entries, or the archive would pass `limit` bytes (the message says which).
    """
    entries: list[tuple[str, str]] = []
    total = 2 * _BLOCK * 2

    def refuse(error: OSError) -> None:
        raise ArchiveError(f"cannot read {os.path.relpath(error.filename or root, root)!r}: {error.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=refuse, followlinks=False):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            try:
                info = os.lstat(path)
            except OSError as exc:
                raise ArchiveError(f"cannot read {rel!r}: {exc.strerror}") from None
            if stat.S_ISLNK(info.st_mode):
                raise ArchiveError(f"{rel!r} is a symlink: links are not copied (copy what it points to instead)")
            if stat.S_ISDIR(info.st_mode):
                entries.append((rel, "d"))
                total += _BLOCK
            elif stat.S_ISREG(info.st_mode):
                entries.append((rel, "f"))
                total += archive_size(info.st_size) + (_BLOCK * 3 if len(rel) > 100 else 0)
            else:
                raise ArchiveError(f"{rel!r} is not a regular file or folder (a FIFO, socket or device): such "
                                   "files are not copied")
            if len(entries) > max_members:
                raise ArchiveError(f"the folder has more than {max_members:,} entries")
            if total > limit:
                raise TooLarge(f"the folder is larger than {limit:,} bytes (stopped counting at {rel!r})")
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return entries, total


def pack(root: str, entries: list[tuple[str, str]], out: IO[bytes]) -> None:
    """Write the entries `scan` found as a tar to `out` (files opened without following links, and checked to
    be regular files still)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel, kind in entries:
            info = tarfile.TarInfo(rel)
            path = os.path.join(root, rel)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise ArchiveError(f"cannot read {rel!r}: {exc.strerror}") from None
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ArchiveError(f"{rel!r} is not a regular file any more")
                os.set_blocking(fd, True)
                info.size = st.st_size
                info.mode = stat.S_IMODE(st.st_mode) & 0o777
                info.mtime = int(st.st_mtime)
                tar.addfile(info, fh)


def _names(name: str) -> list[str]:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ArchiveError(f"archive member {name!r}: an empty name or a NUL in it")
    if name.startswith("/"):
        raise ArchiveError(f"archive member {name!r}: an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise ArchiveError(f"archive member {name!r}: names no file")
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r}: '..' leaves the destination")
    return parts


def _open_dir(root_fd: int, parts: list[str]) -> int:
    """A descriptor of the folder `parts` under `root_fd`, each step created if missing and never a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise ArchiveError(f"cannot write into {'/'.join(parts)!r}: {part!r} is not a folder (or is a "
                                   f"link) in the destination ({exc.strerror})") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(member: tarfile.TarInfo) -> str:
    return {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
            tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}.get(member.type, f"type {member.type!r}")


def extract(source: IO[bytes], dest: str, *, fresh: bool, max_bytes: int, max_members: int = 100_000) -> list[str]:
    """Unpack the tar read from `source` into the folder `dest` (created if missing); return the files written.

    Args:
        fresh: `dest` must be missing or empty, and no name may come twice (the host's downloads); otherwise
            files already there are replaced (not through a link) and folders merged (uploads into a sandbox).
        max_bytes: the most file content in all; max_members: the most members.

    Raises:
        ArchiveError: a member is refused (the message names it and why), or the archive is malformed.
    """
    try:
        os.mkdir(dest, 0o755)
    except FileExistsError:
        pass
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
    except OSError as exc:
        raise ArchiveError(f"cannot use {dest!r} as the destination: {exc.strerror}") from None
    written: list[str] = []
    try:
        if fresh and os.listdir(root_fd):
            raise ArchiveError(f"the destination {dest!r} is not empty; give a new or empty folder")
        total = 0
        count = 0
        try:
            tar = tarfile.open(fileobj=source, mode="r|")
        except tarfile.TarError as exc:
            raise ArchiveError(f"not a tar archive: {exc}") from None
        with tar:
            for member in _members(tar):
                count += 1
                if count > max_members:
                    raise ArchiveError(f"the archive has more than {max_members:,} members")
                parts = _names(member.name)
                if member.type == tarfile.DIRTYPE:
                    os.close(_open_dir(root_fd, parts))
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise ArchiveError(f"archive member {member.name!r} is a {_kind(member)}: only files and "
                                       "folders are accepted")
                total += member.size
                if total > max_bytes:
                    raise ArchiveError(f"the archive's files pass {max_bytes:,} bytes (at {member.name!r})")
                _write_member(tar, member, root_fd, parts, fresh=fresh)
                written.append("/".join(parts))
    finally:
        os.close(root_fd)
    return written


def _members(tar: tarfile.TarFile) -> Any:
    """The archive's members, one pass; a malformed archive is an ArchiveError."""
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
            raise ArchiveError(f"the archive is malformed: {exc}") from None
        if member is None:
            return
        yield member


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, parts: list[str], *,
                  fresh: bool) -> None:
    parent = _open_dir(root_fd, parts[:-1])
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_EXCL if fresh else 0)
        try:
            fd = os.open(parts[-1], flags, 0o600, dir_fd=parent)
        except FileExistsError:
            raise ArchiveError(f"archive member {member.name!r} comes twice") from None
        except OSError as exc:
            raise ArchiveError(f"cannot write {member.name!r}: {exc.strerror} (a link, folder or special file is "
                               "in its place)") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ArchiveError(f"cannot write {member.name!r}: something that is not a regular file is in its "
                                   "place")
            os.set_blocking(fd, True)
            os.ftruncate(fd, 0)
            data = tar.extractfile(member)
            left = member.size
            while left > 0 and data is not None:
                try:
                    chunk = data.read(min(left, 1 << 20))
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise ArchiveError(f"the archive is malformed at {member.name!r}: {exc}") from None
                if not chunk:
                    raise ArchiveError(f"the archive ends inside {member.name!r}")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(chunk)
            os.fchmod(fd, (member.mode & 0o777) | 0o600)
        finally:
            os.close(fd)
    finally:
        os.close(parent)
