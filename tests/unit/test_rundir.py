"""The run root (parent of every session directory) must be one this user alone controls; removal of session
directories never leaves it. No Docker needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lllm.errors import SandboxStartError
from lllm.sandbox._rundir import make_session_dir, remove_session_dir, run_root


@pytest.fixture
def root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def use(path: Path) -> Path:
        monkeypatch.setenv("LLLM_RUN_ROOT", str(path))
        return path
    return use


def test_a_fresh_root_is_created_private(tmp_path: Path, root_env) -> None:
    root = root_env(tmp_path / "r")
    assert run_root() == root
    assert (os.stat(root).st_mode & 0o777) == 0o700
    session = make_session_dir("abc123", chown=False)
    assert session.parent == root and (os.stat(session).st_mode & 0o777) == 0o700
    remove_session_dir(session)
    assert not session.exists()


def test_a_root_left_traversable_is_closed_to_others(tmp_path: Path, root_env) -> None:
    # Older versions made it 711; the sandbox uid can be a real host account, which must not reach sessions.
    root = root_env(tmp_path / "old")
    root.mkdir()
    os.chmod(root, 0o711)
    run_root()
    assert (os.stat(root).st_mode & 0o777) == 0o700


def test_a_symlinked_root_is_refused(tmp_path: Path, root_env) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o711)
    os.chmod(real, 0o711)
    link = root_env(tmp_path / "link")
    link.symlink_to(real)
    with pytest.raises(SandboxStartError, match="is a symlink") as info:
        make_session_dir("abc123", chown=False)
    assert str(link) in str(info.value) and "LLLM_RUN_ROOT" in str(info.value)
    assert list(real.iterdir()) == []


def test_a_world_writable_root_is_refused(tmp_path: Path, root_env) -> None:
    root = root_env(tmp_path / "open")
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(SandboxStartError, match=r"writable by group or others \(mode 777\)"):
        run_root()


def test_a_root_owned_by_someone_else_is_refused(tmp_path: Path, root_env, require_root: None) -> None:
    root = root_env(tmp_path / "theirs")
    root.mkdir(mode=0o711)
    os.chown(root, 1000, 1000)
    with pytest.raises(SandboxStartError, match="owned by uid 1000"):
        make_session_dir("abc123", chown=False)


def test_removal_stays_inside_the_root(tmp_path: Path, root_env) -> None:
    root = root_env(tmp_path / "r")
    run_root()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    remove_session_dir(outside)  # not under the root: left alone
    link = root / "123-link"
    link.symlink_to(outside)
    remove_session_dir(link)  # a name under the root that points out of it: left alone
    assert (outside / "keep").read_text() == "x"
    # With an untrusted root nothing is deleted at all.
    session = make_session_dir("abc123", chown=False)
    (session / "f").write_text("y")
    os.chmod(root, 0o777)
    remove_session_dir(session)
    assert (session / "f").exists()
    os.chmod(root, 0o700)
