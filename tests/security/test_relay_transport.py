"""Issue 15: what code in the sandbox can do to the relay transport (`lllm.sandbox.remote`), on the local engine.

The guest relay runs as the sandbox user, like the kernel, so kernel code can see it. It must not be able to
write frames into its stream (forge kernel messages, files or sockets on the host), to make the host replace or
follow its files, or to hang the host by stopping it: then the cell ends in bounded time and the next cell works.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits

pytestmark = pytest.mark.docker

FIND_RELAY = """
import os
relay = [p for p in os.listdir('/proc') if p.isdigit() and b'lllm-relay' in open(f'/proc/{p}/cmdline', 'rb').read()]
"""


@pytest.fixture
def sb(sandbox_image: str) -> Any:
    with DockerSandbox(image=sandbox_image, transport="relay", limits=SandboxLimits(memory="384m", pids=128),
                       cell_timeout=20, interrupt_grace=1.0) as sandbox:
        yield sandbox


def test_kernel_code_cannot_write_into_the_relays_stream(sb: DockerSandbox) -> None:
    # the relay is not dumpable: /proc/<pid>/fd of another process of the same uid is then closed to it
    res = sb.run_cell(FIND_RELAY + """
out = []
for pid in relay:
    for fd in (0, 1):
        try:
            os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY)
            out.append(f'opened {fd}')
        except OSError as exc:
            out.append(type(exc).__name__)
print(len(relay), sorted(set(out)))
""")
    assert res.stdout == "1 ['PermissionError']\n", res.text


def test_files_the_kernel_plants_never_replace_the_hosts_or_lead_it_elsewhere(sb: DockerSandbox, tmp_path: Any) -> None:
    host_json = (sb.session_dir / "kernel.json").read_bytes()
    target = tmp_path / "host-secret"
    target.write_text("host only")
    res = sb.run_cell(f"""
import os
open('/run/lllm/kernel.json', 'w').write('{{"forged": 1}}')
os.symlink({str(target)!r}, '/run/lllm/link-to-host')
os.mkfifo('/run/lllm/a-fifo')
open('/run/lllm/planted.txt', 'w').write('from the kernel')
""")
    assert res.status == "ok", res.text
    deadline = time.monotonic() + 10
    while not (sb.session_dir / "planted.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (sb.session_dir / "planted.txt").read_text() == "from the kernel"  # what it writes is mirrored...
    assert (sb.session_dir / "kernel.json").read_bytes() == host_json  # ...but never over the host's own files
    assert not os.path.lexists(sb.session_dir / "link-to-host") and not os.path.lexists(sb.session_dir / "a-fifo")
    assert target.read_text() == "host only"
    assert stat.S_ISREG(os.lstat(sb.session_dir / "planted.txt").st_mode)
    assert sb.run_cell("print('fine')").stdout == "fine\n"


def test_a_stopped_relay_costs_a_cell_not_the_host_and_the_sandbox_recovers(sb: DockerSandbox) -> None:
    sb.upload(b"kept", "note.txt")
    started = time.monotonic()
    res = sb.run_cell(FIND_RELAY + "import signal\nfor pid in relay: os.kill(int(pid), signal.SIGSTOP)\n"
                      "import time\ntime.sleep(5)", timeout=3.0)
    assert res.status == "timeout" and res.restarted, res.text
    assert time.monotonic() - started < 60
    assert sb.run_cell("print('back')").stdout == "back\n"
    assert sb.download("note.txt") == b"kept"
