"""SandboxPool with real containers, and the reaper: a host process killed with SIGKILL leaves orphans; gc removes them."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import docker
import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits, SandboxPool, SandboxState
from lllm.sandbox._docker import LABEL, LABEL_DIR, LABEL_SESSION, LABEL_TEST_RUN
from lllm.sandbox.reaper import is_orphan, list_sandboxes, reap

pytestmark = pytest.mark.docker

# gVisor (LLLM_SANDBOX_RUNTIME=runsc) counts its own threads against the PID limit
LIMITS = SandboxLimits(memory="256m", pids=64 if os.environ.get("LLLM_SANDBOX_RUNTIME", "runc") == "runc" else 256)


def containers(**labels: str) -> list:
    filters = [f"{LABEL}=1"] + [f"{k}={v}" for k, v in labels.items()]
    return docker.from_env().containers.list(all=True, filters={"label": filters})


def test_pool_hands_out_ready_sandboxes_in_milliseconds(sandbox_image: str) -> None:
    with SandboxPool(size=2, image=sandbox_image, limits=LIMITS, cell_timeout=10) as pool:
        pool.wait_ready(60)
        waits, seen = [], set()
        for _ in range(4):
            pool.wait_ready(60)
            t0 = time.perf_counter()
            sb = pool.acquire()
            waits.append(time.perf_counter() - t0)
            assert sb.state is SandboxState.RUNNING and sb.sandbox_id not in seen
            seen.add(sb.sandbox_id)
            assert sb.run_cell("1+1").result == "2"
            pool.release(sb)
        assert statistics.median(waits) < 0.025, waits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(containers(**{LABEL_SESSION: sid}) for sid in seen):
            time.sleep(0.2)
        assert not any(containers(**{LABEL_SESSION: sid}) for sid in seen)  # released = destroyed
        ready_ids = {sb.sandbox_id for sb in pool._ready}
    assert not any(containers(**{LABEL_SESSION: sid}) for sid in ready_ids)  # close() removes the spares too


def test_pooled_sandbox_gets_gateway_files_after_acquire(sandbox_image: str) -> None:
    # The host writes gateway.sock/token into session_dir after acquire(); the kernel (uid 1000) must reach them.
    import socket

    with SandboxPool(size=1, image=sandbox_image, limits=LIMITS) as pool, pool.lease() as sb:
        path = sb.session_dir / "gateway.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o666)
        server.listen(1)
        token = sb.session_dir / "gateway.token"
        token.write_text("t0ken")
        if os.geteuid() == 0:
            os.chown(token, 1000, 1000)
        os.chmod(token, 0o400)
        try:
            code = ("import os, socket\ns = socket.socket(socket.AF_UNIX)\n"
                    "s.connect(os.environ['LLLM_RUN_DIR'] + '/gateway.sock')\ns.sendall(b'ping')\n"
                    "open(os.environ['LLLM_RUN_DIR'] + '/gateway.token').read()")
            res = sb.run_cell(code)
            conn, _ = server.accept()
            assert conn.recv(4) == b"ping"
            conn.close()
            assert res.result == "'t0ken'"
        finally:
            server.close()


OWNER_SCRIPT = textwrap.dedent("""
    import sys, time
    from lllm.sandbox import DockerSandbox, SandboxLimits
    sb = DockerSandbox(image=sys.argv[1], limits=SandboxLimits(memory="256m"))
    sb.start()
    sb.run_cell("x = 1")
    print(sb.sandbox_id, sb.session_dir, flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("cleanup", ["lllm sandbox gc", "pool start"])
def test_sigkilled_owner_leaves_orphans_that_gc_removes(sandbox_image: str, tmp_path: Path, cleanup: str) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    owner = subprocess.Popen([sys.executable, str(script), sandbox_image], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline().split()  # type: ignore[union-attr]
        assert len(line) == 2, "the owner process did not start its sandbox"
        sandbox_id, session_dir = line
        found = containers(**{LABEL_SESSION: sandbox_id})
        assert len(found) == 1 and found[0].status == "running"
        assert not is_orphan(found[0].labels)
        owner.send_signal(signal.SIGKILL)  # no cleanup runs
        owner.wait(10)
        assert is_orphan(found[0].labels)
        assert containers(**{LABEL_SESSION: sandbox_id}) and Path(session_dir).exists()  # orphaned, still there
        if cleanup == "lllm sandbox gc":
            out = subprocess.run([sys.executable, "-m", "lllm.sandbox.cli", "gc"], capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, out.stderr
            assert f"lllm-{sandbox_id}" in out.stdout
        else:  # starting again: a new pool reaps before it fills
            SandboxPool(size=1, image=sandbox_image, limits=LIMITS).start().close()
        assert containers(**{LABEL_SESSION: sandbox_id}) == []
        assert not Path(session_dir).exists()
    finally:
        if owner.poll() is None:
            owner.kill()


def test_reaper_removes_created_and_exited_orphans_and_spares_live_owners(sandbox_image: str, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = docker.from_env()
    run = os.environ["LLLM_TEST_RUN"]
    base = {LABEL: "1", LABEL_TEST_RUN: run, "lllm.owner.host": __import__("lllm.sandbox._rundir",
                                                                            fromlist=["x"]).host_id()}
    created = client.containers.create(sandbox_image, command=["true"], network_mode="none",
                                       labels={**base, "lllm.owner.pid": str(dead.pid), LABEL_SESSION: "gc-created",
                                               LABEL_DIR: "/etc"})  # a forged dir label must not be deleted
    exited = client.containers.run(sandbox_image, command=["true"], network_mode="none", detach=True,
                                   labels={**base, "lllm.owner.pid": str(dead.pid), LABEL_SESSION: "gc-exited"})
    exited.wait(timeout=30)
    with DockerSandbox(image=sandbox_image, limits=LIMITS) as mine:
        report = reap()
        assert created.name in report.containers and exited.name in report.containers
        assert f"lllm-{mine.sandbox_id}" not in report.containers
        assert containers(**{LABEL_SESSION: "gc-created"}) == [] and containers(**{LABEL_SESSION: "gc-exited"}) == []
        assert mine.run_cell("1+1").result == "2"  # a live owner's sandbox is left alone
        rows = {row["session"]: row for row in list_sandboxes()}
        assert rows[mine.sandbox_id]["orphan"] is False
    assert Path("/etc/passwd").exists()


def test_reaper_removes_orphaned_session_dirs() -> None:
    from lllm.sandbox._rundir import run_root

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run_root() / f"{dead.pid}-deadbeef0000"
    stale.mkdir()
    (stale / "kernel.json").write_text("{}")
    report = reap(dry_run=True)
    assert str(stale) in report.session_dirs and stale.exists()
    reap()
    assert not stale.exists()
