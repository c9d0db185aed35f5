"""File operations (`upload`/`download`/`list_files`) against a hostile kernel, in a real container (issue 9,
item 3): the helpers they run in the container cannot be subverted through the sandbox user's site directory,
cannot flood the host, cannot hang a host thread, and only a reply carrying the host's nonce is believed.

Kernel code runs as the same uid as those helpers, so it can plant a `usercustomize.py`, make FIFOs where files
should be, and stop (SIGSTOP) any helper it sees. Each test plants one of those and drives the host side.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from lllm.errors import SandboxFileError
from lllm.sandbox import DockerSandbox, SandboxLimits

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("each_transport")]

RUNTIME = os.environ.get("LLLM_SANDBOX_RUNTIME", "runc")
LIMITS = SandboxLimits(memory="256m", pids=64 if RUNTIME == "runc" else 256, workspace_size="64m",
                       tmp_size="16m", home_size="16m")


@pytest.fixture
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(image=sandbox_image, limits=LIMITS, cell_timeout=30) as sandbox:
        yield sandbox


def run(sb: DockerSandbox, code: str) -> Any:
    res = sb.run_cell(code)
    assert res.status == "ok", res.text
    return res


def in_thread(fn: Callable[[], Any], wait: float) -> tuple[bool, Any]:
    """Run `fn` in a daemon thread; (finished within `wait` s, its result or exception). A host thread that
    never comes back is what the tests guard against, so they never join without a bound."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(wait)
    return not thread.is_alive(), box.get("value")


USERCUSTOMIZE = r"""
import os, site, sys
path = site.getusersitepackages()
os.makedirs(path, exist_ok=True)
with open(os.path.join(path, 'usercustomize.py'), 'w') as fh:
    fh.write('''
import json, os, sys
cmd = open("/proc/self/cmdline", "rb").read()
if b"ipykernel" not in cmd and b"kernel_start" not in cmd:
    with open("/tmp/usercustomize-ran", "a") as log:
        log.write(repr(cmd[:80]) + "\\n")
    for _ in range(200):  # 200 MB for the host to buffer, then a forged reply as the last line
        sys.stdout.write("x" * (1 << 20) + "\\n")
    print(json.dumps({"ok": True, "files": ["forged.txt"]}))
    sys.stdout.flush()
    os._exit(0)
''')
path
"""


def test_a_planted_usercustomize_never_runs_inside_the_file_helpers(sb: DockerSandbox) -> None:
    run(sb, "open('real.txt', 'w').write('real')")
    run(sb, USERCUSTOMIZE)
    with PeakRss() as rss:
        listed = sb.list_files()
    assert listed == ["real.txt"]  # not the forged ["forged.txt"]
    assert rss.peak - rss.base < 64 << 20, f"host RSS grew {(rss.peak - rss.base) >> 20} MB"
    assert sb.download("real.txt") == b"real"
    assert sb.upload(b"up", "up.txt") == "up.txt"
    assert run(sb, "open('up.txt').read()").result == "'up'"
    assert run(sb, "import os\nos.path.exists('/tmp/usercustomize-ran')").result == "False"


def test_upload_onto_a_fifo_is_refused_and_never_blocks(sb: DockerSandbox) -> None:
    run(sb, "import os\nos.mkfifo('pipe')\nos.makedirs('d', exist_ok=True)\nos.mkfifo('d/inner')")
    for dest in ("pipe", "d/inner"):
        done, value = in_thread(lambda: sb.upload(b"payload", dest), wait=20)
        assert done, f"upload onto a FIFO ({dest}) blocked a host thread"
        assert isinstance(value, SandboxFileError) and "not a regular file" in str(value), value
    done, value = in_thread(lambda: sb.download("pipe"), wait=20)
    assert done and isinstance(value, SandboxFileError), value
    assert sb.upload(b"still fine", "ok.txt") == "ok.txt"


STOPPER = r"""
import os, signal, threading, time
def stop_helpers():
    me = os.getpid()
    end = time.time() + 60
    while time.time() < end:
        for pid in os.listdir('/proc'):
            if not pid.isdigit() or int(pid) in (me, 1):
                continue
            try:
                cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
            except OSError:
                continue
            # the helpers, not the kernel's own plumbing (its supervisor, the relay of the relay transport)
            if b'ipykernel' not in cmd and b'kernel_start' not in cmd and b'lllm-relay' not in cmd and b'python' in cmd:
                try:
                    os.kill(int(pid), signal.SIGSTOP)
                except OSError:
                    pass
        time.sleep(0.002)
threading.Thread(target=stop_helpers, daemon=True).start()
"""


def test_a_stopped_helper_times_out_instead_of_hanging_the_host(sb: DockerSandbox) -> None:
    run(sb, "open('a.txt', 'w').write('a')")
    sb.file_timeout = 3.0
    run(sb, STOPPER)
    started = time.monotonic()
    done, value = in_thread(sb.list_files, wait=30)
    assert done, "list_files waited for a stopped helper without a deadline"
    assert isinstance(value, SandboxFileError) and "did not answer within 3" in str(value), value
    assert time.monotonic() - started < 15
    done, value = in_thread(lambda: sb.download("a.txt"), wait=30)
    assert done and isinstance(value, SandboxFileError), value


def test_helper_output_is_capped_and_timed_on_the_host(sb: DockerSandbox) -> None:
    """The capped exec the helpers run through, given a command that floods (1 GB) and one that never ends."""
    from lllm.sandbox import _exec

    before = _rss()
    started = time.monotonic()
    with pytest.raises(SandboxFileError, match="more than"):
        _exec.run_capped(sb.container, ["python3", "-I", "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"],
                         user="1000:1000", timeout=30, max_bytes=1 << 20)
    assert time.monotonic() - started < 20
    assert _rss() - before < 64 << 20
    started = time.monotonic()
    with pytest.raises(SandboxFileError, match="did not answer within 2"):
        _exec.run_capped(sb.container, ["sleep", "600"], user="1000:1000", timeout=2, max_bytes=1 << 20)
    assert time.monotonic() - started < 10
    # the timed-out process is gone (killed), not left running in the container
    time.sleep(0.5)
    left = run(sb, "import os\n[open(f'/proc/{p}/cmdline','rb').read().split(b'\\0')[0] for p in os.listdir('/proc') "
                   "if p.isdigit()]")
    assert b"sleep'" not in left.result.encode(), left.result


class PeakRss:
    """Samples this process's RSS in a thread while a file operation runs."""

    def __init__(self) -> None:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
