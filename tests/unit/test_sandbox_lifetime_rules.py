"""The reaper's rules for sandboxes that outlive a call, and the lifetime records (no Docker: fake containers)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lllm.errors import UsageError
from lllm.sandbox import DockerSandbox
from lllm.sandbox._docker import (LABEL_CREATED, LABEL_HOST, LABEL_IDLE, LABEL_LIFETIME, LABEL_PID, LABEL_SCOPE,
                                  LABEL_START)
from lllm.sandbox._rundir import host_id, process_start_time
from lllm.sandbox.lifetime import read_record, records_dir, remove_record, touch_file, write_record
from lllm.sandbox.reaper import verdict


class Box:
    def __init__(self, status: str = "running", **labels: str) -> None:
        self.status = status
        self.labels = labels
        self.name = "lllm-test"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _labels(*, alive: bool, scope: str = "agent", created: float | None = None, **extra: str) -> dict[str, str]:
    pid = os.getpid() if alive else _dead_pid()
    return {LABEL_PID: str(pid), LABEL_START: process_start_time(pid) if alive else "", LABEL_HOST: host_id(),
            LABEL_SCOPE: scope, LABEL_CREATED: str(created if created is not None else time.time()), **extra}


def test_the_reaper_keeps_live_and_kept_sandboxes_and_removes_the_rest() -> None:
    now = time.time()
    assert verdict(Box(**_labels(alive=True)), None, now=now) is None
    assert verdict(Box(**_labels(alive=False)), None, now=now) == "its owner process is gone"
    assert verdict(Box(**_labels(alive=False, scope="session")), None, now=now) is None  # kept for attach
    assert verdict(Box("exited", **_labels(alive=False, scope="session")), None, now=now) is not None
    # an owner that attached later counts as an owner
    me = {"pid": os.getpid(), "start": process_start_time(os.getpid()), "host": host_id()}
    assert verdict(Box(**_labels(alive=False)), {"owner": me}, now=now) is None


def test_limits_apply_whether_or_not_the_owner_lives() -> None:
    now = time.time()
    old = now - 100
    lifetime = _labels(alive=True, created=old, **{LABEL_LIFETIME: "50"})
    assert verdict(Box(**lifetime), None, now=now) == "its lifetime of 50s ended"
    idle = _labels(alive=True, scope="session", created=old, **{LABEL_IDLE: "30"})
    assert "idle for 100s" in str(verdict(Box(**idle), None, now=now))
    assert verdict(Box(**idle), {"last_used": now - 10}, now=now) is None  # used 10 s ago: not idle
    other_host = {**idle, LABEL_HOST: "elsewhere:1"}
    assert verdict(Box(**other_host), None, now=now) is None  # another host's sandbox: its owner judges


def test_records_are_private_and_touching_never_follows_links(tmp_path: Path) -> None:
    write_record("abc123", {"kernel": {"key": "secret"}, "last_used": 1.0})
    path = records_dir() / "abc123.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(records_dir().stat().st_mode) == 0o700
    assert read_record("abc123") == {"kernel": {"key": "secret"}, "last_used": 1.0}
    remove_record("abc123")
    assert read_record("abc123") is None
    with pytest.raises(ValueError):
        write_record("../x", {})
    victim = tmp_path / "victim"
    victim.write_text("x")
    os.utime(victim, (1, 1))
    session_dir = tmp_path / "session"
    session_dir.mkdir()
    (session_dir / "last_used").symlink_to(victim)  # what kernel code could leave there
    touch_file(session_dir)
    assert victim.stat().st_mtime == 1 and not (session_dir / "last_used").is_symlink()
    assert time.time() - (session_dir / "last_used").stat().st_mtime < 60


def test_bad_lifetime_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(UsageError, match="give name="):
        DockerSandbox(scope="session")
    with pytest.raises(UsageError, match="a sandbox name is"):
        DockerSandbox(name="../etc")
    with pytest.raises(UsageError, match="idle_timeout=0"):
        DockerSandbox(idle_timeout=0)
    with pytest.raises(UsageError, match="packages='pip'"):
        DockerSandbox(packages="pip")
    assert DockerSandbox(name="analysis-1").scope == "session"
    assert DockerSandbox(packages=["scipy", " rich "]).packages == ("scipy", "rich")


def test_sandbox_block_mistakes_are_config_errors_at_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.core.agent import Agent
    from lllm.errors import ConfigError
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.tools.code import attach

    agent = Agent(name="a", system_prompt="s", model="m", llm_invoker=ScriptedInvoker([]))
    with pytest.raises(ConfigError, match="proxy.sandbox.packages needs the docker backend"):
        attach(agent, {"sandbox": {"backend": "local", "packages": "index"}})
    with pytest.raises(ConfigError, match="this agent was built outside one"):
        attach(agent, {"sandbox": {"backend": "local", "scope": "tactic"}})
    with pytest.raises(ConfigError, match="cannot come from a pool"):
        attach(agent, {"sandbox": {"scope": "session", "pool_size": 2}})
    with pytest.raises(ConfigError, match="proxy.sandbox.scope"):
        attach(agent, {"sandbox": {"scope": "forever"}})
    monkeypatch.setenv("LLLM_PACKAGE_INDEX", "ftp://mirror.example/simple/")
    with pytest.raises(ConfigError, match="packages is 'index', but .* is not an http"):
        attach(agent, {"sandbox": {"packages": "index"}})
