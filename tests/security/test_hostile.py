"""Bad and hostile cells, each run in a real hardened container: the sandbox contains them, the host stays fine.

Sandboxes are shared where a test does not depend on fresh state; memory is kept small (256m) so OOM tests are
quick. Each test says which line of the issue it proves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lllm.errors import SandboxFileError
from lllm.sandbox import DockerSandbox, SandboxLimits

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("each_transport")]

RUNTIME = os.environ.get("LLLM_SANDBOX_RUNTIME", "runc")
# Under gVisor (LLLM_SANDBOX_RUNTIME=runsc) the PID limit also counts gVisor's own threads.
PIDS = 64 if RUNTIME == "runc" else 256
SMALL = SandboxLimits(memory="256m", pids=PIDS, workspace_size="64m", tmp_size="32m", home_size="16m")


def small_sandbox(**kw: Any) -> DockerSandbox:
    opts: dict[str, Any] = {"limits": SMALL, "cell_timeout": 5, "interrupt_grace": 1.0}
    opts.update(kw)
    return DockerSandbox(**opts)


@pytest.fixture(scope="module")
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with small_sandbox(image=sandbox_image) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def other(sandbox_image: str) -> Iterator[DockerSandbox]:
    """A second session, to show that one session's trouble does not reach another."""
    with small_sandbox(image=sandbox_image) as sandbox:
        sandbox.run_cell("witness = 'alive'")
        yield sandbox


@pytest.fixture(scope="module")
def big(sandbox_image: str) -> Iterator[DockerSandbox]:
    """A sandbox with room for a 200 MB payload in the kernel itself."""
    with small_sandbox(image=sandbox_image, limits=SMALL.model_copy(update={"memory": "1500m"})) as sandbox:
        yield sandbox


def assert_usable(sandbox: DockerSandbox) -> None:
    assert sandbox.run_cell("1+1", timeout=10).result == "2"


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples this process's RSS in a thread while a cell runs."""

    def __init__(self) -> None:
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- time ----------------------------------------------------------------------------------------------------------
def test_endless_loop_times_out_then_works(sb: DockerSandbox) -> None:
    res = sb.run_cell("while True: pass", timeout=1.0)
    assert res.status == "timeout" and res.timeout_action == "interrupted" and not res.state_lost
    assert_usable(sb)


def test_sigint_ignoring_loop_is_killed_and_restarted(sb: DockerSandbox) -> None:
    res = sb.run_cell("import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: pass", timeout=1.0)
    assert res.status == "timeout" and res.timeout_action == "restarted" and res.state_lost
    assert "killed and restarted" in res.text
    assert_usable(sb)


# -- memory -------------------------------------------------------------------------------------------------------
def test_huge_allocation_is_oom(sb: DockerSandbox, other: DockerSandbox) -> None:
    res = sb.run_cell("x = bytearray(10**11)")
    assert res.status == "oom"
    if RUNTIME == "runc":  # the host kernel refuses the allocation; gVisor overcommits, then OOM-kills
        assert res.error_name == "MemoryError"
    assert_usable(sb)
    assert other.run_cell("witness").result == "'alive'"


def test_slow_memory_growth_is_oom_killed_and_restarted(sb: DockerSandbox, other: DockerSandbox) -> None:
    sb.run_cell("before = 1")
    code = "import time\nhog = []\nwhile True:\n    hog.append(b'x' * (4 << 20))\n    time.sleep(0.005)"
    res = sb.run_cell(code, timeout=60)
    assert res.status == "oom", res.text
    assert res.restarted and res.state_lost and "memory" in res.text
    assert sb.run_cell("before").error_name == "NameError"
    assert_usable(sb)
    assert other.run_cell("witness").result == "'alive'"


# -- processes ------------------------------------------------------------------------------------------------------
def test_fork_bomb_hits_the_pid_limit(sandbox_image: str) -> None:
    limit = PIDS - 16
    with small_sandbox(image=sandbox_image, limits=SMALL.model_copy(update={"pids": limit})) as bomb:
        done = threading.Event()
        host_ok: list[bool] = []

        def host_probe() -> None:
            while not done.is_set():
                host_ok.append(subprocess.run(["true"]).returncode == 0)
                time.sleep(0.1)

        probe = threading.Thread(target=host_probe)
        probe.start()
        code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
        try:
            res = bomb.run_cell(code, timeout=3)
            stats = bomb.container.stats(stream=False, one_shot=True)
        finally:
            done.set()
            probe.join()
        assert res.status == "timeout" or (RUNTIME != "runc" and res.status == "oom")  # gVisor: memory first
        assert host_ok and all(host_ok)  # the host could start processes throughout
        assert stats["pids_stats"].get("current", 0) <= limit
        if res.timeout_action == "interrupted":
            bomb.restart()  # the bomb's leftover children are killed with the kernel's process group
        assert_usable(bomb)


def test_os_exit_is_reported_as_death(sb: DockerSandbox) -> None:
    res = sb.run_cell("import os\nos._exit(1)")
    assert res.status == "died" and res.restarted and "exited with code 1" in res.text
    assert_usable(sb)


def test_segfault_is_reported_as_death(sb: DockerSandbox) -> None:
    res = sb.run_cell("import ctypes\nctypes.string_at(0)")
    assert res.status == "died" and "SIGSEGV" in res.text
    assert_usable(sb)


# -- disk ---------------------------------------------------------------------------------------------------------
def test_filling_the_disk_gives_enospc_and_spares_the_host(sb: DockerSandbox) -> None:
    host_free = shutil.disk_usage("/").free
    code = """
import errno
def fill(path):
    chunk = b'x' * (1 << 20)
    try:
        with open(path, 'wb') as fh:
            for _ in range(10_000):
                fh.write(chunk)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return 'no error'
results = {p: fill(p) for p in ('fill.bin', '/tmp/fill.bin', '/home/sandbox/fill.bin')}
for p in ('fill.bin', '/tmp/fill.bin', '/home/sandbox/fill.bin'):
    __import__('os').remove(p)
try:
    open('/usr/evil', 'w')
except OSError as exc:
    results['/usr'] = errno.errorcode[exc.errno]
results
"""
    res = sb.run_cell(code, timeout=60)
    assert res.status == "ok", res.text
    got = eval(res.result)  # noqa: S307 - our literal
    assert got.pop("/usr") in ("EROFS", "EACCES")  # read-only root (gVisor says EACCES)
    assert got == {"fill.bin": "ENOSPC", "/tmp/fill.bin": "ENOSPC", "/home/sandbox/fill.bin": "ENOSPC"}
    assert abs(shutil.disk_usage("/").free - host_free) < 32 << 20
    assert_usable(sb)


# -- output -------------------------------------------------------------------------------------------------------
def test_printing_a_gigabyte_is_capped_and_host_memory_stays_flat(sb: DockerSandbox) -> None:
    code = "line = 'x' * ((1 << 20) - 1)\nfor _ in range(1024):\n    print(line)\nprint('done')"
    with PeakRss() as rss:
        res = sb.run_cell(code, timeout=120)
    assert res.status == "ok", res.text
    # the kernel sent its first 16 Mi characters and counted the rest (its own cap); the host kept 1 M of those
    assert res.output_chars >= 16 << 20
    assert "the cell printed 1,073,741,829 characters" in res.text
    assert res.truncated and len(res.stdout) <= sb.max_stored_chars and len(res.text) < sb.max_output_chars + 500
    assert "discarded the rest" in res.text.split("\n[sandbox:")[0][-300:]
    growth = rss.peak - rss.base
    assert growth < 48 << 20, f"host RSS grew by {growth / 1e6:.1f} MB while the cell printed 1 GB"
    assert_usable(sb)


def test_one_huge_line_is_capped(sb: DockerSandbox) -> None:
    with PeakRss() as rss:
        res = sb.run_cell("print('y' * 60_000_000)", timeout=60)
    assert res.status == "ok" and res.truncated
    assert res.output_chars >= 16 << 20 and len(res.stdout) == sb.max_stored_chars
    assert "the cell printed 60,000,001 characters" in res.text
    assert rss.peak - rss.base < 48 << 20
    assert_usable(sb)


def test_huge_png_display_is_dropped_with_a_notice(big: DockerSandbox) -> None:
    res = big.run_cell("from IPython.display import display\ndisplay({'image/png': 'A' * 200_000_000}, raw=True)\n'after'",
                      timeout=60)
    assert res.status == "ok", res.text
    assert res.images == [] and res.truncated and res.result == "'after'"
    assert any("dropped" in note and "200.0 MB" in note for note in res.notices)
    assert_usable(big)


def test_huge_display_that_bypasses_the_guest_is_dropped_by_the_host(big: DockerSandbox) -> None:
    # Kernel code can undo the guest's cap; the host then drops the message unread (its own hard cap).
    code = ("from ipykernel.zmqshell import ZMQDisplayPublisher\n"
            "ZMQDisplayPublisher.publish(get_ipython().display_pub, {'image/png': 'A' * 100_000_000})\n'after'")
    with PeakRss() as rss:
        res = big.run_cell(code, timeout=60)
    assert res.status == "ok", res.text
    assert res.images == [] and res.truncated and res.result == "'after'"
    assert any("dropped unread" in note for note in res.notices)
    assert rss.peak - rss.base < 400 << 20  # one raw frame, never decoded
    assert_usable(big)


# -- network ------------------------------------------------------------------------------------------------------
def test_no_network_at_all(sb: DockerSandbox) -> None:
    code = """
import socket, urllib.request
out = {}
try:
    urllib.request.urlopen('http://deb.debian.org/', timeout=3); out['http'] = 'reached'
except Exception as exc:
    out['http'] = type(exc).__name__
try:
    socket.create_connection(('1.1.1.1', 53), timeout=3); out['tcp'] = 'reached'
except OSError as exc:
    out['tcp'] = type(exc).__name__
try:
    socket.getaddrinfo('example.com', 80); out['dns'] = 'resolved'
except OSError as exc:
    out['dns'] = type(exc).__name__
out['ifaces'] = sorted(name for _, name in socket.if_nameindex())
out
"""
    res = sb.run_cell(code, timeout=30)
    assert res.status == "ok", res.text
    result = eval(res.result)  # noqa: S307 - our own literal
    assert result["http"] == "URLError" and result["tcp"] == "OSError" and result["dns"] == "gaierror"
    assert result["ifaces"] == ["lo"]


def test_input_fails_at_once(sb: DockerSandbox) -> None:
    t0 = time.monotonic()
    res = sb.run_cell("input()", timeout=30)
    assert res.status == "error" and res.error_name == "StdinNotImplementedError"
    assert time.monotonic() - t0 < 3


# -- privileges ---------------------------------------------------------------------------------------------------
def test_no_way_to_root(sb: DockerSandbox) -> None:
    code = """
import os, shutil, subprocess
out = {'uid': os.getuid(), 'sudo': shutil.which('sudo'), 'gcc': shutil.which('gcc'), 'docker': shutil.which('docker')}
status = open('/proc/self/status').read()
out['caps'] = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]
out['nnp'] = ([l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')] or ['absent'])[0]
r = subprocess.run(['mount', '-t', 'tmpfs', 'none', '/mnt'], capture_output=True)
out['mount'] = r.returncode
try:
    open('/proc/sys/kernel/hostname', 'w').write('pwned'); out['procsys'] = 'written'
except OSError as exc:
    out['procsys'] = type(exc).__name__
try:
    os.setuid(0); out['setuid'] = 'root'
except OSError as exc:
    out['setuid'] = type(exc).__name__
out
"""
    res = sb.run_cell(code, timeout=30)
    assert res.status == "ok", res.text
    got = eval(res.result)  # noqa: S307 - our own literal
    assert got["uid"] == 1000 and got["sudo"] is None and got["gcc"] is None and got["docker"] is None
    assert got["caps"] == "0000000000000000"
    assert got["nnp"] == ("1" if RUNTIME == "runc" else got["nnp"])  # gVisor's /proc does not show the flag
    assert got["mount"] != 0 and got["procsys"] in ("OSError", "PermissionError") and got["setuid"] == "PermissionError"
    assert sb.run_cell("!sudo id").stdout.count("not found") == 1


# -- isolation and files --------------------------------------------------------------------------------------------
def test_sessions_cannot_see_each_other(sb: DockerSandbox, other: DockerSandbox) -> None:
    sb.run_cell("for p in ('secret-a.txt', '/tmp/secret-a.txt', '/home/sandbox/secret-a.txt'):\n"
                "    open(p, 'w').write('A only')")
    code = """
import os
seen = [p for p in ('secret-a.txt', '/tmp/secret-a.txt', '/home/sandbox/secret-a.txt') if os.path.exists(p)]
pids = [p for p in os.listdir('/proc') if p.isdigit()]
(seen, sorted(os.listdir('/run/lllm')), len(pids) < 10)
"""
    res = other.run_cell(code)
    seen, run_files, few_pids = eval(res.result)  # noqa: S307 - our own literal
    assert seen == [] and few_pids
    assert "secret-a.txt" not in run_files and set(run_files) <= {
        "kernel.json", "kernel.state", "kernel-1", "kernel-2", "kernel-3", "kernel-4", "kernel-5", "last_used"}
    assert "secret-a.txt" not in other.list_files()
    assert other.session_dir != sb.session_dir


def test_upload_escape_and_symlink_download_are_refused(sb: DockerSandbox) -> None:
    with pytest.raises(SandboxFileError, match="leaves the workspace"):
        sb.upload(b"x", "../../etc/cron.d/evil")
    sb.run_cell("import os\nfor n in ('to-passwd', 'to-run'):\n    os.path.lexists(n) and os.remove(n)\n"
                "os.symlink('/etc/passwd', 'to-passwd')\nos.symlink('/run/lllm/kernel.json', 'to-run')")
    for name in ("to-passwd", "to-run"):
        with pytest.raises(SandboxFileError, match="outside the workspace"):
            sb.download(name)
    assert "to-passwd" in sb.list_files()  # listed, never followed


def test_killing_the_supervisor_restarts_the_container(sb: DockerSandbox) -> None:
    # Kernel code runs as the same uid as the supervisor and can kill it; the container then stops.
    sb.upload(b"gone soon", "note.txt")
    res = sb.run_cell("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(30)", timeout=20)
    assert res.status == "died" and res.restarted and "whole container stopped" in res.text
    assert "every file in the workspace" in res.text
    assert_usable(sb)
    assert "note.txt" not in sb.list_files()
    res = sb.run_cell("import os, signal\nos.kill(1, signal.SIGKILL)\n'pid 1 ignores it'")
    if RUNTIME == "runc":  # tini as PID 1 of its namespace cannot be killed from inside
        assert res.result == "'pid 1 ignores it'"
    else:  # under gVisor it can: the container stops, and the sandbox comes back
        assert res.status in ("ok", "died")
    assert_usable(sb)


def test_filling_the_session_directory_spares_the_host_disk(sb: DockerSandbox) -> None:
    # /run/lllm is the one host directory the container can write: a size-limited tmpfs (host runs as root).
    import os

    host_free = shutil.disk_usage("/").free
    code = """
import errno, os
try:
    with open('/run/lllm/fill.bin', 'wb') as fh:
        for _ in range(10_000):
            fh.write(b'x' * (1 << 20))
    outcome = 'no error'
except OSError as exc:
    outcome = errno.errorcode[exc.errno]
os.remove('/run/lllm/fill.bin')
outcome
"""
    res = sb.run_cell(code, timeout=60)
    assert res.result == "'ENOSPC'", res.text
    assert abs(shutil.disk_usage("/").free - host_free) < 32 << 20
    if os.geteuid() == 0:
        assert os.path.ismount(sb.session_dir)
    assert_usable(sb)
