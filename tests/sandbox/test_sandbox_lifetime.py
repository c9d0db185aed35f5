"""Sandboxes that outlive one agent call, against real containers: scopes (tactic, session), attach from another
process, `lllm sandbox ls/rm`, idle_timeout and max_lifetime (also when the owner is gone), and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from lllm.errors import ConfigError, SandboxClosed, SandboxError, SandboxStartError
from lllm.sandbox import DockerSandbox, SandboxLimits
from lllm.sandbox._docker import LABEL, LABEL_NAME, LABEL_SCOPE, LABEL_SESSION, LABEL_TEST_RUN, LABEL_UID
from lllm.sandbox.lifetime import read_record
from lllm.sandbox.reaper import reap

pytestmark = pytest.mark.docker

LIMITS = SandboxLimits(memory="256m")
RUN = os.environ["LLLM_TEST_RUN"]


def _containers(**labels: str) -> list[Any]:
    filters = [f"{LABEL}=1", f"{LABEL_TEST_RUN}={RUN}"] + [f"{k}={v}" for k, v in labels.items()]
    return docker.from_env().containers.list(all=True, filters={"label": filters})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lllm.cli", *args], capture_output=True, text=True, timeout=120)


def _tactic(tmp_path: Path, steps: list[Any], sandbox: dict[str, Any], agents: tuple[str, ...] = ("analyst",)) -> Any:
    from lllm import Tactic

    class Team(Tactic, register=False):
        name = "lifetime_team"
        agent_group = list(agents)

        def call(self, task: str, **kwargs: Any) -> list[str]:
            out = []
            for name in agents:  # one after the other: the next agent sees what the first left
                agent = self.agents[name]
                agent.open("main")
                agent.receive(task)
                out.append(agent.respond().content)
            return out

    config = {"invoker": "scripted", "invoker_config": {"steps": steps}, "workdir": str(tmp_path / "runs"),
              "agent_configs": [{"name": name, "model_name": "gpt-4o", "system_prompt": "You compute.",
                                 "proxy": {"activate_proxies": [], "timeout": 60, "sandbox": sandbox}}
                                for name in agents]}
    return Team(config)


def _cell(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}


def test_tactic_scope_shares_one_sandbox_among_the_agents_of_a_call(tmp_path: Path, sandbox_image: str) -> None:
    steps = [_cell("x = 41\nprint('set')"), "a done", _cell("print(x + 1)"), "b done"]
    tactic = _tactic(tmp_path, steps, {"image": sandbox_image, "scope": "tactic", "limits": {"memory": "256m"}},
                     agents=("a", "b"))
    session = tactic("go", return_session=True)
    results = [r.result for r in session.records if r.kind == "tool_call"]
    assert results == ["set", "42"]  # the second agent read the first one's variable
    cells = [r for r in session.records if r.kind == "cell"]
    assert len({c.sandbox_id for c in cells}) == 1 and [c.agent for c in cells] == ["a", "b"]
    assert set(session.metadata["notebooks"]) == {"a", "b"}
    assert _containers(**{LABEL_SESSION: cells[0].sandbox_id}) == []  # removed when the call ended


def test_session_scope_keeps_the_sandbox_across_calls_and_processes(tmp_path: Path, sandbox_image: str) -> None:
    name = f"keep-{RUN}"
    block = {"image": sandbox_image, "scope": "session", "limits": {"memory": "256m"}}
    try:
        first = _tactic(tmp_path, [_cell("x = 41\nprint('set')"), "done"], block)("go", sandbox_session=name,
                                                                                 return_session=True)
        (kept,) = _containers(**{LABEL_NAME: name})
        assert kept.status == "running" and kept.labels[LABEL_SCOPE] == "session"
        assert first.metadata["sandbox_session"] == name and first.metadata["sandboxes"]["analyst"] == name
        listed = _cli("sandbox", "ls")
        assert listed.returncode == 0 and name in listed.stdout and "session" in listed.stdout, listed.stdout
        assert kept.name not in reap(dry_run=True).containers  # spared by the reaper while its owner lives

        second = _tactic(tmp_path, [_cell("print(x + 1)"), "done"], block)("go", sandbox_session=name,
                                                                          return_session=True)
        assert [r.result for r in second.records if r.kind == "tool_call"] == ["42"]

        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from lllm.sandbox import DockerSandbox
            sb = DockerSandbox.attach({name!r})
            print(sb.run_cell("x += 1; print(x)").stdout.strip())
            """)], capture_output=True, text=True, timeout=120)
        assert other.returncode == 0 and other.stdout.strip() == "42", other.stderr
        assert _containers(**{LABEL_NAME: name})[0].status == "running"  # that process let go, did not remove

        removed = _cli("sandbox", "rm", name)
        assert removed.returncode == 0 and name in removed.stdout, removed.stderr
        assert _containers(**{LABEL_NAME: name}) == []
        assert read_record(kept.labels[LABEL_SESSION]) is None
        assert not Path(kept.labels["lllm.session_dir"]).exists()
    finally:
        for container in _containers(**{LABEL_NAME: name}):
            container.remove(force=True)


def test_session_scope_without_an_id_is_a_clear_error_and_starts_nothing(tmp_path: Path, sandbox_image: str) -> None:
    before = {c.id for c in _containers()}
    tactic = _tactic(tmp_path, [_cell("print(1)"), "done"], {"image": sandbox_image, "scope": "session"})
    with pytest.raises(ConfigError, match="sandbox_session='my-analysis'") as info:
        tactic("go")
    assert "lllm run ... --sandbox-session" in str(info.value)
    assert {c.id for c in _containers()} == before


def test_attach_refuses_missing_dead_and_foreign_sandboxes(sandbox_image: str) -> None:
    with pytest.raises(SandboxError, match="no sandbox named 'nothing-like-this'") as info:
        DockerSandbox.attach("nothing-like-this")
    assert info.value.reason == "missing"

    name = f"dead-{RUN}"
    sb = DockerSandbox(image=sandbox_image, limits=LIMITS, name=name)
    sb.start()
    try:
        sb.container.stop(timeout=1)
        with pytest.raises(SandboxError, match=f"sandbox '{name}' is not running") as info:
            DockerSandbox.attach(name)
        assert info.value.reason == "dead" and f"lllm sandbox rm {name}" in str(info.value)
    finally:
        sb.close()
    assert _containers(**{LABEL_NAME: name}) == []

    client = docker.from_env()
    foreign = client.containers.create(sandbox_image, command=["true"], network_mode="none", labels={
        LABEL: "1", LABEL_TEST_RUN: RUN, LABEL_NAME: f"foreign-{RUN}", LABEL_SESSION: f"f{RUN}",
        LABEL_UID: "4242", "lllm.owner.host": "x"})
    try:
        with pytest.raises(SandboxError, match="belongs to another user or host") as info:
            DockerSandbox.attach(f"foreign-{RUN}")
        assert info.value.reason == "foreign"
        rm = _cli("sandbox", "rm", f"foreign-{RUN}")
        assert rm.returncode == 1 and "of another user (uid 4242) on another machine (host id x)" in rm.stderr, rm.stderr
        assert f"lllm sandbox rm foreign-{RUN} --force" in rm.stderr
        foreign.reload()  # still there (NotFound otherwise)
        forced = _cli("sandbox", "rm", f"foreign-{RUN}", "--force")
        assert forced.returncode == 0 and f"removed foreign-{RUN}" in forced.stdout, forced.stderr
        assert _containers(**{LABEL_NAME: f"foreign-{RUN}"}) == []
    finally:
        try:
            foreign.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_rm_refuses_another_machines_sandbox_unless_forced(sandbox_image: str) -> None:
    """On an engine several machines use, a sandbox whose owner runs on another machine (same uid: root on both)
    is not `rm`'s to judge, as for `attach` and `gc`; one of this machine whose owner is gone is removed as ever."""
    from lllm.sandbox._rundir import host_id

    client = docker.from_env()

    def planted(name: str, host: str, uid: int = os.geteuid(), pid: str = "999999") -> Any:
        return client.containers.create(sandbox_image, command=["true"], network_mode="none", labels={
            LABEL: "1", LABEL_TEST_RUN: RUN, LABEL_NAME: name, LABEL_SESSION: f"s-{name}", LABEL_SCOPE: "session",
            LABEL_UID: str(uid), "lllm.owner.pid": pid, "lllm.owner.start": "0", "lllm.owner.host": host})

    other, gone, users = f"otherbox-{RUN}", f"gone-{RUN}", f"users-{RUN}"
    elsewhere, here = planted(other, "otherbox:0badc0de"), planted(gone, host_id())
    another_user = planted(users, host_id(), uid=4242, pid="1")
    try:
        rm = _cli("sandbox", "rm", users)  # this machine, another user: refused, as before
        assert rm.returncode == 1 and f"sandbox {users!r} (container {another_user.name}, scope session, created) " \
               "belongs to another user (uid 4242, process 1 on this machine)" in rm.stderr, rm.stderr
        another_user.reload()
        with pytest.raises(SandboxError, match="belongs to another user or host") as info:
            DockerSandbox.attach(other)
        assert info.value.reason == "foreign"
        rm = _cli("sandbox", "rm", other, gone)
        assert rm.returncode == 1, rm.stderr
        assert f"removed {gone} " in rm.stdout and _containers(**{LABEL_NAME: gone}) == []  # the others still go
        assert f"sandbox {other!r} (container {elsewhere.name}, scope session, created) belongs to process 999999 " \
               "on another machine, otherbox (host id otherbox:0badc0de)" in rm.stderr, rm.stderr
        assert f"`lllm sandbox rm {other} --force`" in rm.stderr and "`lllm sandbox gc --all-hosts`" in rm.stderr
        assert "Traceback" not in rm.stderr and other not in rm.stdout
        elsewhere.reload()  # still there (NotFound otherwise)
        forced = _cli("sandbox", "rm", "--force", other)
        assert forced.returncode == 0 and f"removed {other} ({elsewhere.name})" in forced.stdout, forced.stderr
        assert _containers(**{LABEL_NAME: other}) == []
    finally:
        for container in (elsewhere, here, another_user):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_idle_timeout_removes_an_unused_sandbox_but_not_a_busy_one(sandbox_image: str) -> None:
    sb = DockerSandbox(image=sandbox_image, limits=LIMITS, idle_timeout=2)
    sb.start()
    try:
        assert sb.run_cell("import time; time.sleep(4); print('slept')").stdout.strip() == "slept"  # busy, not idle
        deadline = time.monotonic() + 20
        while sb.state.value == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sb.state.value == "closed"
        with pytest.raises(SandboxClosed, match="it was idle for 2s"):
            sb.run_cell("print(1)")
        assert _containers(**{LABEL_SESSION: sb.sandbox_id}) == []
    finally:
        sb.close()


def test_a_lifetime_shorter_than_the_start_says_so_and_leaves_nothing(sandbox_image: str) -> None:
    # a kernel takes far longer than 10 ms to come up: the supervisor ends the container before it answers
    sb = DockerSandbox(image=sandbox_image, limits=LIMITS, max_lifetime=0.01)
    with pytest.raises(SandboxStartError, match=r"it stopped because its lifetime of 0.01s ended: give the sandbox "
                                                r"a longer limit"):
        sb.start()
    assert sb.sandbox_id and _containers(**{LABEL_SESSION: sb.sandbox_id}) == []


OWNER = """
import sys, time
from lllm.sandbox import DockerSandbox, SandboxLimits
sb = DockerSandbox(image=sys.argv[1], limits=SandboxLimits(memory="256m"), name=sys.argv[2],
                   **{sys.argv[3]: float(sys.argv[4])})
sb.start()
sb.run_cell("x = 1")
print(sb.sandbox_id, flush=True)
time.sleep(600)
"""


# the limits leave room for a slow start on a loaded machine: the sandbox must still be within them when the
# owner has been killed and `lllm sandbox ls` has listed it
@pytest.mark.parametrize("limit, seconds, reason", [("max_lifetime", 25, "its lifetime of 25s ended"),
                                                    ("idle_timeout", 15, "it was idle for 15s")])
def test_limits_end_a_kept_sandbox_whose_owner_is_gone(tmp_path: Path, sandbox_image: str, limit: str,
                                                      seconds: int, reason: str) -> None:
    name = f"{limit[:4]}-{RUN}"
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), sandbox_image, name, limit, str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    try:
        sandbox_id = owner.stdout.readline().strip()  # type: ignore[union-attr]
        assert sandbox_id, "the owner did not start its sandbox"
        owner.send_signal(signal.SIGKILL)  # no cleanup runs
        owner.wait(10)
        (kept,) = _containers(**{LABEL_NAME: name})
        assert kept.name not in reap(dry_run=True).containers  # a running session sandbox within its limits
        rows = {row["id"]: row for row in json.loads(_cli("sandbox", "ls", "--json").stdout)}
        assert rows[sandbox_id]["orphan"] is True and rows[sandbox_id][limit] == seconds
        watching_since = int(time.time()) - 1
        deadline = time.monotonic() + seconds + 30
        while kept.status == "running" and time.monotonic() < deadline:  # its supervisor ends it, no host needed
            time.sleep(0.5)
            try:
                kept.reload()
            except docker.errors.NotFound:
                break
        # The engine's `die` event says how it stopped: exit code 0 is its supervisor's own exit (a kill, by a
        # reaper or the engine, is 137). The event stays when the container is gone: on this shared machine
        # other test runs' pools call reap(), which may remove it, rightly, once it is past its limit.
        died = list(docker.from_env().events(since=watching_since, until=int(time.time()) + 1, decode=True,
                                             filters={"container": kept.id, "event": "die"}))
        assert [event["Actor"]["Attributes"].get("exitCode") for event in died] == ["0"], died
        if _containers(**{LABEL_NAME: name}):  # always so in CI, where no other test run reaps
            with pytest.raises(SandboxError, match=reason) as info:  # its supervisor said why
                DockerSandbox.attach(name)
            assert info.value.reason == "dead"
            report = reap()
            assert kept.name in report.containers and limit.split("_")[-1] in report.reasons[kept.name]
        assert _containers(**{LABEL_NAME: name}) == []
    finally:
        if owner.poll() is None:
            owner.kill()
        for container in _containers(**{LABEL_NAME: name}):
            container.remove(force=True)
