"""The session directory is the one host directory a sandbox can write: nothing planted there reaches the host.

/run/lllm in the container is `<run root>/<pid>-<id>` on the host. Kernel code runs as the directory's owner,
so it can put symlinks, FIFOs and directories under every name the host later touches (kernel.state, the
gateway's socket and token, transfer files) and links to host paths anywhere in it. Each test plants such
things from inside a real container, then drives the host side (gateway, cells, restart, upload, download,
close, the reaper) and checks that host files are untouched and the session still works or fails cleanly.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.gateway import Gateway
from lllm.sandbox import DockerSandbox, SandboxLimits
from lllm.sandbox._rundir import container_user

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("each_transport")]

RUNTIME = os.environ.get("LLLM_SANDBOX_RUNTIME", "runc")
LIMITS = SandboxLimits(memory="256m", pids=64 if RUNTIME == "runc" else 256, workspace_size="32m",
                       tmp_size="16m", home_size="16m")


class Echo(BaseProxy):
    _proxy_name = "Echo"
    _proxy_description = "One endpoint for the session-directory tests."

    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echo x.", params={"x": (int, 1)})
    def echo(self, x: int = 0) -> dict:
        return {"x": x}


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[dict[str, object]]:
    """Host files a hostile cell aims at: a directory with a file in it, and one loose file (mode 0640)."""
    folder = tmp_path / "host-dir"
    folder.mkdir()
    (folder / "keep.txt").write_text("host data")
    loose = tmp_path / "host-file.txt"
    loose.write_text("host secret")
    os.chmod(loose, 0o640)
    yield {"dir": folder, "file": loose}


def assert_untouched(canary: dict[str, object]) -> None:
    folder, loose = Path(canary["dir"]), Path(canary["file"])  # type: ignore[arg-type]
    assert (folder / "keep.txt").read_text() == "host data"
    assert loose.read_text() == "host secret"
    st = os.stat(loose)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == os.geteuid(), "a host file's mode or owner changed"


def plant(sb: DockerSandbox, canary: dict[str, object], names: list[str]) -> None:
    """From inside the container: replace each name in /run/lllm by a symlink to the host file, and leave
    links to the host directory at the top and nested deeper."""
    code = f"""
import os
run = '/run/lllm'
for name in {names!r}:
    p = os.path.join(run, name)
    if os.path.lexists(p):
        os.unlink(p)
    os.symlink({str(canary['file'])!r}, p)
os.symlink({str(canary['dir'])!r}, os.path.join(run, 'to-host-dir'))
os.makedirs(os.path.join(run, 'nest', 'deeper'), exist_ok=True)
os.symlink({str(canary['dir'])!r}, os.path.join(run, 'nest', 'deeper', 'to-host-dir'))
os.symlink({str(canary['file'])!r}, os.path.join(run, 'nest', 'to-host-file'))
sorted(os.listdir(run))
"""
    res = sb.run_cell(code)
    assert res.status == "ok", res.text


def test_symlinks_planted_for_the_gateway_and_cleanup_never_reach_the_host(sandbox_image: str,
                                                                           canary: dict[str, object]) -> None:
    # issue 5: the gateway's socket and token are (re)made in a directory the sandbox writes; issue 4: close()
    # removes the session directory. Neither may follow a link the sandbox planted.
    sb = DockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=20)
    sb.start()
    session_dir = sb.session_dir
    try:
        plant(sb, canary, ["gateway.token", "gateway.sock"])
        with Gateway() as gw:
            session = gw.open_session(session_dir, ProxyManager(proxies={"echo": Echo()}), session_id="planted",
                                      token_owner=container_user()[0])
            try:
                assert not os.path.islink(session.token_path) and not os.path.islink(session.socket_path)
                assert stat.S_ISSOCK(os.lstat(session.socket_path).st_mode)
                res = sb.run_cell("CALL_API('echo/echo', {'x': 7})")
                assert res.status == "ok" and "7" in res.text, res.text
            finally:
                session.close()
        assert_untouched(canary)
        # File transfers still work with links lying around, and never touch the host file.
        sb.upload(b"payload", "in.bin")
        assert sb.download("in.bin") == b"payload"
        assert_untouched(canary)
    finally:
        sb.close()
    assert not session_dir.exists(), "close() left the session directory behind"
    assert_untouched(canary)


def test_junk_in_place_of_kernel_state_does_not_break_the_host_side(sandbox_image: str,
                                                                      canary: dict[str, object]) -> None:
    # kernel.state is read by the host on every cell; kernel code can swap it for a symlink, a FIFO held open
    # (a read would block or fail), or a directory. Cells, timeouts and death handling must keep working.
    with DockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=20, interrupt_grace=1.0) as sb:
        plant(sb, canary, ["kernel.state"])
        assert sb.run_cell("1+1").result == "2"
        res = sb.run_cell("import os\nos.unlink('/run/lllm/kernel.state')\nos.mkfifo('/run/lllm/kernel.state')\n"
                          "held = os.open('/run/lllm/kernel.state', os.O_RDWR)\n'fifo'")
        assert res.status == "ok", res.text
        res = sb.run_cell("while True: pass", timeout=2)
        assert res.status == "timeout", res.text
        assert sb.run_cell("1+1").result == "2"
        res = sb.run_cell("os.close(held)\nos.unlink('/run/lllm/kernel.state')\n"
                          "os.mkdir('/run/lllm/kernel.state')\n'dir'")
        assert res.status == "ok", res.text
        res = sb.run_cell("import os\nos._exit(3)")
        assert res.status == "died", res.text
        assert "lost" in res.text
        assert sb.run_cell("1+1").result == "2", "the session did not recover after kernel.state was a directory"
    assert_untouched(canary)


def test_the_reaper_removes_an_orphan_dir_full_of_links_without_following_them(canary: dict[str, object]) -> None:
    # The reaper deletes session directories of dead owners; what a sandbox left in one may point anywhere.
    from lllm.sandbox._rundir import run_root
    from lllm.sandbox.reaper import reap_session_dirs

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead_pid = ended.pid  # an owner that is gone
    orphan = run_root() / f"{dead_pid}-audit{os.getpid()}"
    orphan.mkdir(mode=0o700)
    os.symlink(canary["dir"], orphan / "to-host-dir")
    os.symlink(canary["file"], orphan / "gateway.token")
    (orphan / "nest").mkdir()
    os.symlink(canary["dir"], orphan / "nest" / "to-host-dir")
    # A name in the run root that is itself a link to a host directory is never deleted through.
    decoy = run_root() / f"{dead_pid}-decoy{os.getpid()}"
    os.symlink(canary["dir"], decoy)
    try:
        removed = reap_session_dirs()
        assert str(orphan) in removed and not orphan.exists()
        assert_untouched(canary)
        assert os.listdir(canary["dir"]) == ["keep.txt"]  # type: ignore[arg-type]
    finally:
        if os.path.lexists(decoy):
            os.unlink(decoy)


def test_a_host_account_with_the_sandbox_uid_cannot_reach_any_session(sandbox_image: str, require_root: None) -> None:
    # The container runs as uid 1000, which is often a real account on the host. The run root is mode 700, so
    # that account cannot open a session's kernel key, kernel sockets or gateway token; the container, which
    # sees its directory through the bind mount, works as before.
    uid, gid = container_user()
    probe = ("import os, sys, json\nout = {}\nfor name in sys.argv[1:]:\n    try:\n        os.stat(name)\n"
             "        out[name] = 'reached'\n    except PermissionError:\n        out[name] = 'denied'\n"
             "print(json.dumps(out))")
    with DockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=20) as sb:
        with Gateway() as gw, gw.open_session(sb.session_dir, ProxyManager(proxies={"echo": Echo()}),
                                              token_owner=uid):
            targets = [str(sb.session_dir / n) for n in ("kernel.json", "gateway.token", "gateway.sock")]
            proc = subprocess.run(["/usr/bin/python3", "-c", probe, *targets], capture_output=True, text=True,
                                  timeout=30, user=uid, group=gid, extra_groups=[], cwd="/")
            assert proc.returncode == 0, proc.stderr
            import json

            assert set(json.loads(proc.stdout).values()) == {"denied"}, proc.stdout
            res = sb.run_cell("CALL_API('echo/echo', {'x': 5})")
            assert res.status == "ok" and "5" in res.text, res.text
