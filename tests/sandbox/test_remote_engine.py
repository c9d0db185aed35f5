"""Sandboxes on a second Docker engine (loopback TCP, TLS, no files shared with this process): the relay transport.

The engine (tests/remote_engine.py, the `remote_engine` fixture) runs in a mount namespace where /tmp is an
empty tmpfs, so it cannot see this process's session directories: everything here works only because the
kernel's sockets, CALL_API, files, kernel.state and the branch kernels' requests travel over the Docker API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lllm.core.agent import Agent
from lllm.core.config import AgentBuildContext
from lllm.errors import SandboxStartError
from lllm.invokers.scripted import ScriptedInvoker
from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.gateway import Gateway
from lllm.sandbox import SandboxLimits, _docker
from lllm.sandbox._rundir import container_user, host_id
from lllm.sandbox.docker import DockerSandbox
from lllm.tools.code import attach

pytestmark = pytest.mark.docker


def remote(engine: Any, **kw: Any) -> DockerSandbox:
    opts: dict[str, Any] = {"limits": SandboxLimits(memory="384m", pids=128), "cell_timeout": 20,
                            "interrupt_grace": 1.5}
    opts.update(kw)
    return DockerSandbox(docker_host=engine.host, tls=str(engine.client_certs), **opts)


@pytest.fixture(scope="module")
def sb(remote_engine: Any) -> Any:
    with remote(remote_engine) as sandbox:
        yield sandbox


class Toy(BaseProxy):
    _proxy_name = "Toy"
    _proxy_description = "Endpoints for remote-engine tests."

    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echo.", params={"x": (int, 1)})
    def echo(self, x: int = 0) -> dict:
        return {"x": x}


def test_the_second_engine_leaves_the_main_engines_bridge_alone(remote_engine: Any, sandbox_image: str) -> None:
    # dockerd --bridge=none deletes the docker0 it sees: in the host's network namespace that was the main
    # engine's bridge, and every later `docker build` with a RUN step failed ("could not find bridge docker0")
    assert Path("/sys/class/net/docker0").exists(), "the main engine's docker0 bridge is gone"
    run = subprocess.run(["docker", "run", "--rm", "--entrypoint", "true", sandbox_image], capture_output=True,
                         text=True, timeout=120)  # the default network: the bridge
    assert run.returncode == 0, run.stderr


def test_the_container_has_no_bind_mount_and_its_run_dir_is_a_tmpfs(sb: DockerSandbox) -> None:
    assert sb.relayed and sb.transport == "relay"
    attrs = sb.container.attrs
    assert attrs["Mounts"] == [] and not attrs["HostConfig"].get("Binds") and not attrs["HostConfig"].get("Mounts")
    assert "/run/lllm" in attrs["HostConfig"]["Tmpfs"]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    out = sb.run_cell("import os\nprint(sorted(n for n in os.listdir('/run/lllm') if n.startswith('kernel')))")
    assert out.status == "ok" and "kernel.json" in out.stdout and "kernel-1" in out.stdout


def test_cells_files_and_commands_over_the_relay(sb: DockerSandbox, tmp_path: Path) -> None:
    assert sb.run_cell("x = 41").status == "ok"
    assert sb.run_cell("print(x + 1)").stdout == "42\n"
    blob = os.urandom(300_000)  # more than one relay frame, more than one exec read
    sb.upload(blob, "data/blob.bin")
    assert sb.download("data/blob.bin") == blob
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("alpha")
    sb.upload(folder, "tree")
    assert {"data/blob.bin", "tree/sub/a.txt"} <= set(sb.list_files())
    back = sb.download_dir("tree", tmp_path / "back")
    assert (back / "sub" / "a.txt").read_text() == "alpha"
    done = sb.run_command(["sh", "-c", "cat tree/sub/a.txt; echo err >&2"])
    assert done.exit_code == 0 and done.stdout == "alpha" and done.stderr == "err\n"


def test_call_api_through_the_gateway(sb: DockerSandbox) -> None:
    records: list = []
    with Gateway() as gateway, gateway.open_session(sb.session_dir, ProxyManager(proxies={"toy": Toy()}),
                                                   session_id="remote-1", tracer=records.append,
                                                   token_owner=container_user()[0]):
        out = sb.run_cell('r = CALL_API("toy/echo", {"x": 41})\nprint(r["x"] + 1)')
        assert out.stdout == "42\n", out.text
    assert records  # the call was recorded on the host


def test_timeout_oom_and_restarts(remote_engine: Any) -> None:
    with remote(remote_engine, limits=SandboxLimits(memory="256m", pids=128)) as sb:
        sb.run_cell("kept = 1")
        timed = sb.run_cell("import time\ntime.sleep(30)", timeout=1.0)
        assert timed.status == "timeout" and timed.timeout_action == "interrupted"
        assert sb.run_cell("print(kept)").stdout == "1\n"
        stuck = sb.run_cell("import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: pass",
                            timeout=1.0)
        assert stuck.timeout_action == "restarted" and stuck.state_lost
        oom = sb.run_cell("import time\nhog = []\nwhile True:\n    hog.append(b'x' * (4 << 20))\n"
                          "    time.sleep(0.005)", timeout=60)
        assert oom.status == "oom" and oom.restarted, oom.text
        sb.upload(b"survives a kernel restart", "note.txt")
        died = sb.run_cell("import os\nos._exit(3)")
        assert died.status == "died" and died.restarted
        assert sb.download("note.txt") == b"survives a kernel restart"
        # the whole container stopped: started again, with a new relay (and an empty /run/lllm to fill)
        sb.container.kill()
        again = sb.run_cell("print('back')")
        assert again.stdout == "back\n" or (again.restarted and sb.run_cell("print('back')").stdout == "back\n")


def test_a_fork_uses_call_api_from_its_branch_and_the_config_block_takes_the_engine(
        remote_engine: Any, tmp_path: Path, fake_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    api = fake_api(lambda path, q, h, body: (200, [{"symbol": "AAPL", "price": 201.08}]))
    monkeypatch.setenv("FMP_API_KEY", "host-only-key-0123456789")
    monkeypatch.setenv("FMP_BASE_URL", api.url + "/stable")
    agent = Agent(name="brancher", system_prompt="You fork.", model="scripted", llm_invoker=ScriptedInvoker([]))
    ctx = AgentBuildContext(session_id="remotefork", tracer=lambda r: None, workdir_base=tmp_path)
    tools = attach(agent, {"activate_proxies": ["fmp"], "source": "live", "timeout": 60.0,
                           "sandbox": {"backend": "docker", "docker_host": remote_engine.host,
                                       "tls": str(remote_engine.client_certs)}}, ctx)
    quote = 'print(v, CALL_API("fmp/quote", {"symbol": "AAPL"}))'
    try:
        agent.open("base")
        tools.run("v = 'base'", dialog="base")
        assert tools.sandbox.relayed
        agent.fork("base", "one")
        assert tools.dialogs.kernels["one"].kind == "docker-branch"
        tools.run("v = 'branch'", dialog="one")
        from_branch, from_base = str(tools.run(quote, dialog="one")), str(tools.run(quote, dialog="base"))
        assert from_branch.startswith("branch ") and "201.08" in from_branch, from_branch
        assert from_base.startswith("base ") and "201.08" in from_base, from_base
        assert len(api.requests) == 2
    finally:
        agent.shutdown()


def test_save_and_resume_over_the_relay(remote_engine: Any, tmp_path: Path) -> None:
    with remote(remote_engine) as sb:
        sb.run_cell("import numpy as np\ndata = np.arange(200_000)\ndef twice():\n    return 2 * len(data)")
        sb.upload(b"kept", "notes.txt")
        info = sb.save(tmp_path / "s.snapshot")
    assert {"data", "twice"} <= set(info.meta.saved) and info.meta.namespace_bytes > 1_000_000
    with DockerSandbox.resume(tmp_path / "s.snapshot", docker_host=remote_engine.host,
                              tls=str(remote_engine.client_certs)) as back:
        assert back.relayed
        out = back.run_cell("print(twice(), open('notes.txt').read())")
        assert out.stdout == "400000 kept\n", out.text


def test_gc_with_docker_host_removes_orphans_there(remote_engine: Any, sandbox_image: str) -> None:
    client = _docker.client(_docker.engine_from(remote_engine.host, str(remote_engine.client_certs)))
    orphan = client.containers.create(sandbox_image, ["sleep", "300"], network_mode="none", labels={
        _docker.LABEL: "1", _docker.LABEL_PID: "999999", _docker.LABEL_START: "0", _docker.LABEL_HOST: host_id(),
        _docker.LABEL_SESSION: "orphan-remote", _docker.LABEL_UID: str(os.geteuid()),
        **({_docker.LABEL_TEST_RUN: os.environ["LLLM_TEST_RUN"]} if os.environ.get("LLLM_TEST_RUN") else {})})
    out = subprocess.run([sys.executable, "-m", "lllm.sandbox.cli", "gc", "--docker-host", remote_engine.host,
                          "--tls", str(remote_engine.client_certs)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert orphan.name in out.stdout
    assert orphan.id[:12] not in " ".join(remote_engine.containers())


def test_tls_trusts_the_engines_ca_whatever_the_environment_says(remote_engine: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # these machines set REQUESTS_CA_BUNDLE to the system bundle, which does not hold the engine's private CA;
    # requests used to take it over the CA docker-py's TLSConfig gave, and every call failed verification
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setattr(_docker._local, "clients", {}, raising=False)
    engine = _docker.engine_from(remote_engine.host, str(remote_engine.client_certs))
    assert _docker.client(engine).version()["ApiVersion"]
    # the environment's variables name the same engine: the same client rules apply
    monkeypatch.setenv("DOCKER_HOST", remote_engine.host)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(remote_engine.client_certs))
    monkeypatch.setattr(_docker._local, "clients", {}, raising=False)
    assert _docker.client().containers.list() is not None


def test_bad_engines_are_clear_errors_before_anything_runs(remote_engine: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from remote_engine import _free_port, make_certificates

    before = set(remote_engine.containers())
    started = time.monotonic()
    with pytest.raises(SandboxStartError, match="no Docker engine answers at tcp://127.0.0.1"):
        DockerSandbox(docker_host=f"tcp://127.0.0.1:{_free_port()}").start()
    assert time.monotonic() - started < 15
    other = make_certificates(tmp_path / "other")  # a CA the engine does not know, and one that is not its own
    with pytest.raises(SandboxStartError, match="refused TLS or could not be verified"):
        DockerSandbox(docker_host=remote_engine.host, tls=str(other["client"])).start()
    with pytest.raises(SandboxStartError) as missing:
        remote(remote_engine, image="lllm-sandbox:not-loaded-here").start()
    text = str(missing.value)
    assert "is not on the Docker engine at" in text
    assert f"docker save lllm-sandbox:not-loaded-here | docker -H {remote_engine.host} --tlsverify" in text
    assert set(remote_engine.containers()) == before  # nothing was created, nothing is left running


def test_lllm_test_runs_a_projects_tests_on_the_remote_engine(remote_engine: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from lllm.ci import run_tests

    project = tmp_path / "proj"
    project.mkdir()
    (project / "test_here.py").write_text("import os\n\ndef test_in_a_sandbox():\n"
                                          "    assert os.getcwd().startswith('/home/sandbox/work')\n\n"
                                          "def test_fails():\n    assert 1 == 2\n")
    # the standard variables select the engine, as for any docker client
    monkeypatch.setenv("DOCKER_HOST", remote_engine.host)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(remote_engine.client_certs))
    monkeypatch.setattr(_docker._local, "clients", {}, raising=False)
    before, since = set(remote_engine.containers()), int(time.time()) - 1
    report = run_tests(project, timeout=300, limits=SandboxLimits(memory="384m", pids=128))
    got = {t.nodeid.split("::")[-1]: t.outcome for t in report.tests}
    assert got == {"test_in_a_sandbox": "passed", "test_fails": "failed"}, report.notes + report.setup_problems
    created = subprocess.run(remote_engine.cli("events", "--since", str(since), "--until", str(int(time.time()) + 1),
                                               "--filter", "event=create", "--filter", "label=lllm.ci=1",
                                               "--format", "{{.ID}}"), capture_output=True, text=True, timeout=60)
    assert created.stdout.split(), "the shard's sandbox did not run on the remote engine"
    assert set(remote_engine.containers()) == before  # and it is gone


def test_a_kept_remote_sandbox_is_attached_again_over_a_new_relay(remote_engine: Any) -> None:
    first = remote(remote_engine, name="remote-kept", idle_timeout=300)
    first.start()
    try:
        first.run_cell("answer = 42")
        first.detach()
        again = DockerSandbox.attach("remote-kept", docker_host=remote_engine.host, tls=str(remote_engine.client_certs))
        assert again.relayed
        assert again.run_cell("print(answer)").stdout == "42\n"
        again.close()
    finally:
        first.close()
        subprocess.run(remote_engine.cli("rm", "-f", "lllm-s-remote-kept"), capture_output=True, timeout=60)


def test_the_scaling_guides_example_runs_on_the_remote_engine(remote_engine: Any, tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    (block,) = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    block = block.replace("tcp://10.0.0.5:2376", remote_engine.host).replace("/home/me/.docker/box",
                                                                            str(remote_engine.client_certs))
    out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'kernel.json'" in out.stdout and "'kernel-1'" in out.stdout, out.stdout


# -- `lllm sandbox ls|rm|save|resume --docker-host ... --tls ...` -------------------------------------------------
def _sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lllm.cli", "sandbox", *args], capture_output=True, text=True,
                          timeout=300)


def _on(engine: Any) -> list[str]:
    return ["--docker-host", engine.host, "--tls", str(engine.client_certs)]


def _labels(**extra: str) -> dict[str, str]:
    run = os.environ.get("LLLM_TEST_RUN")
    return {_docker.LABEL: "1", _docker.LABEL_UID: str(os.geteuid()), **extra,
            **({_docker.LABEL_TEST_RUN: run} if run else {})}


def _rows(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    import json

    assert out.returncode == 0, out.stderr
    return {row["id"]: row for row in json.loads(out.stdout)}


def test_ls_and_rm_with_docker_host_work_on_that_engine_only(remote_engine: Any, sandbox_image: str) -> None:
    import secrets

    import docker

    from lllm.sandbox._rundir import process_start_time
    from lllm.sandbox.lifetime import read_record

    name = f"cli-remote-{secrets.token_hex(3)}"
    kept = remote(remote_engine, name=name, idle_timeout=300)
    # on the local engine, a sandbox of the same name (owned by this live process, so no reaper takes it): `rm`
    # on the remote engine must not find it, plain `ls` must
    decoy = docker.from_env().containers.create(sandbox_image, ["sleep", "300"], network_mode="none", labels=_labels(**{
        _docker.LABEL_NAME: name, _docker.LABEL_SESSION: f"decoy-{name}", _docker.LABEL_SCOPE: "session",
        _docker.LABEL_PID: str(os.getpid()), _docker.LABEL_START: process_start_time(os.getpid()),
        _docker.LABEL_HOST: host_id()}))
    # on the remote engine, one of another machine's (an engine two machines use): its pid means nothing here
    elsewhere = _docker.client(_docker.engine_from(remote_engine.host, str(remote_engine.client_certs))).containers.create(
        sandbox_image, ["sleep", "300"], network_mode="none", labels=_labels(**{
            _docker.LABEL_SESSION: f"elsewhere-{name}", _docker.LABEL_PID: "999999", _docker.LABEL_START: "0",
            _docker.LABEL_HOST: "otherbox:0badc0de"}))
    try:
        kept.start()
        kept.run_cell("x = 1")
        kept.detach()

        local = _rows(_sandbox_cli("ls", "--json"))
        assert kept.sandbox_id not in local and f"decoy-{name}" in local
        there = _rows(_sandbox_cli("ls", "--json", *_on(remote_engine)))
        assert f"decoy-{name}" not in there
        row = there[kept.sandbox_id]
        assert (row["sandbox_name"], row["scope"], row["status"]) == (name, "session", "running")
        assert row["owner_pid"] == str(os.getpid()) and row["owner_here"] and row["orphan"] is False
        other = there[f"elsewhere-{name}"]
        assert other["owner_here"] is False and other["orphan"] is False  # not known to be gone: not "gone"
        table = _sandbox_cli("ls", *_on(remote_engine))
        assert table.returncode == 0, table.stderr
        (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith(kept.sandbox_id)]
        assert name in line and f" {os.getpid()} " in line
        (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith(f"elsewhere-{name}"[:13])]
        assert "999999@otherbox" in line and "gone" not in line

        # rm: the other machine's one (same uid) is refused, as attach and gc refuse it; the kept one still goes
        removed = _sandbox_cli("rm", f"elsewhere-{name}", name, *_on(remote_engine))
        assert removed.returncode == 1 and f"removed {name} (lllm-s-{name})" in removed.stdout, removed.stderr
        flags = f" --docker-host {remote_engine.host} --tls {remote_engine.client_certs}"
        assert f"sandbox 'elsewhere-{name}' (container {elsewhere.name}, scope agent, created) belongs to process " \
               "999999 on another machine, otherbox (host id otherbox:0badc0de)" in removed.stderr, removed.stderr
        assert f"`lllm sandbox rm elsewhere-{name} --force{flags}`" in removed.stderr
        assert f"`lllm sandbox gc --all-hosts{flags}`" in removed.stderr
        elsewhere.reload()  # still there (NotFound otherwise)
        forced = _sandbox_cli("rm", "--force", f"elsewhere-{name}", *_on(remote_engine))
        assert forced.returncode == 0 and f"removed elsewhere-{name} ({elsewhere.name})" in forced.stdout, forced.stderr
        with pytest.raises(docker.errors.NotFound):
            elsewhere.reload()
        assert kept.container.id[:12] not in remote_engine.containers()
        assert not kept.session_dir.exists() and read_record(kept.sandbox_id) is None  # this host's side of it
        decoy.reload()  # still there (NotFound otherwise)
        again = _sandbox_cli("rm", name, *_on(remote_engine))
        assert again.returncode == 1 and f"no sandbox named {name!r}" in again.stderr
        assert f"on the Docker engine at {remote_engine.host} (TLS)" in again.stderr
    finally:
        kept.close()
        for container in (decoy, elsewhere):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:  # what a wrong `rm` would have done
                pass
        subprocess.run(remote_engine.cli("rm", "-f", f"lllm-s-{name}"), capture_output=True, timeout=60)


def test_engine_commands_give_the_same_clear_errors_as_gc(remote_engine: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from remote_engine import _free_port

    nobody = f"tcp://127.0.0.1:{_free_port()}"
    snapshot = tmp_path / "s.snapshot"
    snapshot.write_bytes(b"")
    for command in (["gc"], ["ls"], ["rm", "x"], ["save", "x", str(tmp_path / "out.snapshot")]):
        out = _sandbox_cli(*command, "--docker-host", nobody)
        assert out.returncode == 1 and f"no Docker engine answers at {nobody}" in out.stderr, (command, out.stderr)
        assert "Traceback" not in out.stderr
        out = _sandbox_cli(*command, "--docker-host", remote_engine.host, "--tls", str(tmp_path / "none"))
        assert out.returncode == 1 and "no such file" in out.stderr and "ca.pem" in out.stderr, (command, out.stderr)
        out = _sandbox_cli(*command, "--docker-host", "10.0.0.5:2376")
        assert out.returncode == 1 and "give it as DOCKER_HOST spells it" in out.stderr, (command, out.stderr)
        assert "Traceback" not in out.stderr


def _tactic_in(tmp_path: Path, sandbox: dict[str, Any], code: str) -> Any:
    """A one-agent tactic whose scripted model runs `code` in the sandbox its `proxy.sandbox` block gives."""
    from lllm import Tactic

    class One(Tactic, register=False):
        name = "remote_session_team"
        agent_group = ["analyst"]

        def call(self, task: str, **kwargs: Any) -> str:
            agent = self.agents["analyst"]
            agent.open("main")
            agent.receive(task)
            return agent.respond().content

    steps = [{"tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}, "done"]
    return One({"invoker": "scripted", "invoker_config": {"steps": steps}, "workdir": str(tmp_path / "runs"),
                "agent_configs": [{"name": "analyst", "model_name": "gpt-4o", "system_prompt": "You compute.",
                                   "proxy": {"activate_proxies": [], "timeout": 60, "sandbox": sandbox}}]})


def test_save_and_resume_by_cli_on_the_remote_engine(remote_engine: Any, sandbox_image: str, tmp_path: Path) -> None:
    import secrets

    suffix = secrets.token_hex(3)
    # an image only the remote engine has: the snapshot's image is looked for there, not on this machine's engine
    image = f"lllm-remote-only:{suffix}"
    subprocess.run(remote_engine.cli("tag", sandbox_image, image), check=True, capture_output=True, timeout=60)
    name, resumed = f"cli-save-{suffix}", f"cli-resumed-{suffix}"
    first = remote(remote_engine, image=image, name=name, idle_timeout=300)
    try:
        first.start()
        first.run_cell("data = list(range(1000))")
        first.upload(b"kept", "notes.txt")
        first.detach()
        saved = _sandbox_cli("save", name, str(tmp_path / "s.snapshot"), *_on(remote_engine))
        assert saved.returncode == 0, saved.stderr
        assert f"saved sandbox {first.sandbox_id}" in saved.stdout
        back = _sandbox_cli("resume", str(tmp_path / "s.snapshot"), "--name", resumed, *_on(remote_engine))
        assert back.returncode == 0, back.stderr
        assert f"lllm sandbox rm {resumed} --docker-host {remote_engine.host} --tls" in back.stdout
        # the hint shows the `proxy:` block a tactic's agents need to find it on this engine; that block works
        hint = back.stdout.split("runs in it when its agents' config has this block", 1)[1]
        block = yaml.safe_load(hint.split("\n", 1)[1])
        assert block == {"proxy": {"sandbox": {"scope": "session", "docker_host": remote_engine.host,
                                               "tls": str(remote_engine.client_certs)}}}, hint
        rows = {row["sandbox_name"]: row for row in _rows(_sandbox_cli("ls", "--json", *_on(remote_engine))).values()}
        assert rows[resumed]["image"] == image and rows[resumed]["scope"] == "session"
        assert resumed not in {row["sandbox_name"] for row in _rows(_sandbox_cli("ls", "--json")).values()}
        attached = DockerSandbox.attach(resumed, docker_host=remote_engine.host, tls=str(remote_engine.client_certs))
        try:
            out = attached.run_cell("print(sum(data), open('notes.txt').read())")
            assert out.stdout == "499500 kept\n", out.text
        finally:
            attached.detach()
        called = _tactic_in(tmp_path, block["proxy"]["sandbox"], 'print(sum(data), open("notes.txt").read())')(
            "go", sandbox_session=resumed, return_session=True)
        assert [r.result for r in called.records if r.kind == "tool_call"] == ["499500 kept"]
        removed = _sandbox_cli("rm", resumed, name, *_on(remote_engine))
        assert removed.returncode == 0, removed.stderr
        assert not [c for c in remote_engine.containers() if c in (first.container.id[:12], attached.container.id[:12])]
    finally:
        first.close()
        subprocess.run(remote_engine.cli("rm", "-f", f"lllm-s-{name}", f"lllm-s-{resumed}"), capture_output=True,
                       timeout=60)
        subprocess.run(remote_engine.cli("rmi", image), capture_output=True, timeout=60)
