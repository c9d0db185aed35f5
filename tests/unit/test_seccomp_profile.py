"""The packaged seccomp profile: Docker's default minus the removed calls, and the `seccomp_profile=` choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lllm.errors import UsageError
from lllm.sandbox import seccomp


def test_the_profile_allows_no_removed_call_under_any_rule() -> None:
    profile = json.loads(seccomp.PROFILE_PATH.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}
    assert not allowed & seccomp.REMOVED
    # what a Python kernel lives on is still there
    assert {"read", "write", "openat", "mmap", "futex", "epoll_wait", "socket", "clone", "execve", "wait4",
            "pidfd_open", "eventfd2"} <= allowed
    assert not {"keyctl", "add_key", "request_key", "userfaultfd"} & allowed


def test_security_opt_choices(tmp_path: Path) -> None:
    (opt,) = seccomp.security_opt(None)
    assert opt.startswith("seccomp=") and json.loads(opt[8:]) == json.loads(seccomp.PROFILE_PATH.read_text())
    assert seccomp.security_opt("docker-default") == []
    mine = tmp_path / "mine.json"
    mine.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert seccomp.security_opt(mine) == ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']
    with pytest.raises(UsageError, match="not a readable JSON file"):
        seccomp.security_opt(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text("[]")
    with pytest.raises(UsageError, match="not a seccomp profile"):
        seccomp.security_opt(tmp_path / "other.json")


def test_docker_sandbox_checks_its_profile_when_built(tmp_path: Path) -> None:
    from lllm.sandbox import DockerSandbox

    with pytest.raises(UsageError, match="seccomp_profile"):
        DockerSandbox(seccomp_profile=tmp_path / "missing.json")
