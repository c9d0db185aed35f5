"""A read-only host folder in a real container stays read-only whatever the sandbox's code tries, and a hostile
archive from the sandbox cannot write outside the host folder it is unpacked into (issue 11).

The folder helper runs as the sandbox user, the same uid as kernel code; a helper that code in the sandbox
has subverted may send any bytes as the archive of `download_dir`. The second half of this file plays such a
helper (its `getdir` sends a tar the kernel made) and drives the real host side."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lllm.errors import SandboxFileError
from lllm.sandbox import DockerSandbox, SandboxLimits, files

pytestmark = pytest.mark.docker

LIMITS = SandboxLimits(memory="256m", pids=128, workspace_size="32m")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host folder owned by the sandbox's uid (as a project of the host's first user, uid 1000, is): only
    the read-only mount, not file permissions, stands between the sandbox and these files."""
    from lllm.sandbox._rundir import container_user

    root = tmp_path_factory.mktemp("hostproj") / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello from the host')\n")
    (root / "README").write_text("read me\n")
    uid, gid = container_user()
    for path in (root, root / "src", root / "src" / "main.py", root / "README"):
        os.chown(path, uid, gid)
    return root


@pytest.fixture(scope="module")
def sb(sandbox_image: str, project: Path) -> Iterator[DockerSandbox]:
    with DockerSandbox(image=sandbox_image, limits=LIMITS, mounts={str(project): "project"}) as sandbox:
        yield sandbox


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_the_mount_is_readable_at_work_project(sb: DockerSandbox, project: Path) -> None:
    assert sb.run_command(["python3", "project/src/main.py"]).stdout == "hello from the host\n"
    assert {"project/README", "project/src/main.py"} <= set(sb.list_files())
    assert sb.download("project/README") == b"read me\n"


ATTEMPTS = {
    "write a new file": "open('project/new.txt', 'w').write('x')",
    "overwrite a file": "open('project/README', 'w').write('x')",
    "append to a file": "open('project/README', 'a').write('x')",
    "delete a file": "os.unlink('project/README')",
    "chmod a file": "os.chmod('project/README', 0o777)",
    "chmod the folder": "os.chmod('project', 0o777)",
    "make a folder": "os.mkdir('project/newdir')",
    "rename inside": "os.rename('project/README', 'project/README2')",
    "remove the mount point": "os.rmdir('project')",
    "move the mount point": "os.rename('project', 'moved')",
    "touch times": "os.utime('project/README', (0, 0))",
    "remount read-write": "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
                          "rc = libc.mount(b'none', b'project', None, 0x20 | 0x1000, None)\n"  # MS_REMOUNT|MS_BIND
                          "assert rc == 0, ctypes.get_errno()",
    "unmount": "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
               "assert libc.umount2(b'project', 2) == 0, ctypes.get_errno()",
}


@pytest.mark.parametrize("what", sorted(ATTEMPTS))
def test_kernel_code_cannot_change_the_mounted_folder(sb: DockerSandbox, project: Path, what: str) -> None:
    before = _snapshot(project)
    res = sb.run_cell("import os\n" + ATTEMPTS[what])
    assert res.status == "error", f"{what} succeeded: {res.text}"
    assert res.error_name in ("OSError", "PermissionError", "AssertionError", "FileNotFoundError"), res.text
    assert _snapshot(project) == before
    assert sb.run_command(["test", "-d", "project/src"]).ok  # still mounted


def test_commands_and_uploads_cannot_change_it_either(sb: DockerSandbox, project: Path) -> None:
    before = _snapshot(project)
    res = sb.run_command("echo x > project/README; chmod 777 project; mount -o remount,rw project; rm -rf project/src")
    assert "Read-only file system" in res.stderr and res.status == "error"
    with pytest.raises(SandboxFileError):
        sb.upload(b"x", "project/README")
    with pytest.raises(SandboxFileError):
        sb.upload(b"x", "project/new.txt")
    assert _snapshot(project) == before


# -- a hostile archive from the sandbox ---------------------------------------------------------------------------
MEMBERS: dict[str, Any] = {
    "dot-dot": [("file", "../escaped.txt")],
    "dot-dot inside": [("file", "sub/../../escaped.txt")],
    "absolute": [("file", "{outside}/escaped.txt")],
    "symlink out": [("symlink", "link", "{outside}"), ("file", "link/escaped.txt")],
    "hard link": [("hardlink", "hard", "{outside}/victim.txt")],
    "device": [("chardev", "null")],
    "fifo": [("fifo", "pipe")],
    "duplicate": [("file", "same.txt"), ("file", "same.txt")],
    "not a tar": "junk",
}


def _hostile_tar(spec: Any, outside: Path) -> bytes:
    if spec == "junk":
        return b"\x00not a tar archive at all" * 100
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *target in spec:
            info = tarfile.TarInfo(name.format(outside=outside))
            if kind == "file":
                data = b"written by a hostile archive"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if target:
                info.linkname = target[0].format(outside=outside)
            if kind == "chardev":
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(MEMBERS))
def test_a_hostile_archive_from_the_sandbox_writes_nothing_outside_dest(sb: DockerSandbox, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("the host's own file")
    sb.upload(_hostile_tar(MEMBERS[case], outside), "hostile.tar")
    # the subverted helper: its getdir sends the tar the kernel left in the workspace, whatever the request
    subverted = files.ARCHIVE_SCRIPT.replace(
        '    elif op == "getdir":\n',
        '    elif op == "getdir":\n'
        '        sys.stdout.buffer.write(open(os.path.join(ws, "hostile.tar"), "rb").read()); sys.stdout.flush()\n'
        '        reply(ok=True)\n', 1)
    assert subverted != files.ARCHIVE_SCRIPT
    monkeypatch.setattr(files, "ARCHIVE_SCRIPT", subverted)
    sb.run_command(["mkdir", "-p", "anything"])
    dest = tmp_path / "dest"
    with pytest.raises(SandboxFileError, match="refused"):
        sb.download_dir("anything", dest)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "the host's own file"
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not dest.exists() or not any(dest.iterdir())  # nothing kept of a refused archive
