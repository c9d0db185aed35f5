"""Issue 9, item 4: nothing of an old kernel survives a restart, and nothing it planted changes the next one.

Before the fix a process started in its own session (setsid) outlived `restart()` and a timeout kill, still
burning CPU and able to call CALL_API; and a `usercustomize.py`, a `.pth` file or an IPython startup file
planted in the home directory ran inside the next kernel.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lllm.sandbox import DockerSandbox, SandboxLimits

pytestmark = pytest.mark.docker

SURVIVORS = r'''
import os, subprocess, sys
# one in its own session, one double-forked into a new session (reparented to PID 1): both burn CPU
subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            pass
    os._exit(0)
os.wait()
'''

# Every process that is not PID 1 (tini), the supervisor (this kernel's parent) or this kernel and its children.
STRAYS = r'''
import os
def _parent(pid):
    return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
def _cmd(pid):
    return open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace').strip()
me, strays = os.getpid(), []
for name in os.listdir('/proc'):
    if not name.isdigit() or int(name) in (1, me, os.getppid()):
        continue
    try:
        pid = int(name)
        while pid not in (0, 1, me):
            pid = _parent(pid)
        if pid != me:
            strays.append(_cmd(int(name)))
    except OSError:
        pass  # gone while we looked
strays
'''


@pytest.fixture
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="512m", pids=64), cell_timeout=10,
                       interrupt_grace=1.0) as sandbox:
        yield sandbox


def test_restart_leaves_no_process_of_the_old_kernel(sb: DockerSandbox) -> None:
    assert sb.run_cell(SURVIVORS).status == "ok"
    assert len(eval(sb.run_cell(STRAYS).result)) >= 1  # noqa: S307 - our own literal; the double-forked one
    sb.restart()
    assert "2 processes" in sb.restart_note()  # the one in its own session and the double-forked one
    assert eval(sb.run_cell(STRAYS).result) == []  # noqa: S307


def test_timeout_kill_leaves_no_process_of_the_old_kernel(sb: DockerSandbox) -> None:
    code = SURVIVORS + "import signal, time\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: time.sleep(0.1)"
    res = sb.run_cell(code, timeout=2)
    assert res.status == "timeout" and res.timeout_action == "restarted", res.text
    assert "processes" in res.text and "home" in res.text  # the result says what the restart cleaned up
    assert eval(sb.run_cell(STRAYS).result) == []  # noqa: S307


def test_files_planted_in_home_do_not_change_the_next_kernel(sb: DockerSandbox) -> None:
    plant = r'''
import os, site
user_site = site.getusersitepackages()
os.makedirs(user_site, exist_ok=True)
open(os.path.join(user_site, 'usercustomize.py'), 'w').write("open('/tmp/usercustomize-ran', 'w')\n")
open(os.path.join(user_site, 'evil.pth'), 'w').write("import os; open('/tmp/pth-ran', 'w')\n")
startup = os.path.expanduser('~/.ipython/profile_default/startup')
os.makedirs(startup, exist_ok=True)
open(os.path.join(startup, '00-evil.py'), 'w').write("PLANTED = 'an IPython startup file ran'\n")
open(os.path.expanduser('~/planted.txt'), 'w').write('x')
open('kept.txt', 'w').write('the workspace stays')
'''
    assert sb.run_cell(plant).status == "ok"
    sb.restart()
    check = ("import os, sys\n(os.path.exists('/tmp/usercustomize-ran'), os.path.exists('/tmp/pth-ran'), "
             "'PLANTED' in globals(), os.path.exists(os.path.expanduser('~/planted.txt')), "
             "sys.flags.no_user_site, open('kept.txt').read())")
    assert eval(sb.run_cell(check).result) == (False, False, False, False, 1, "the workspace stays")  # noqa: S307
    assert sb.run_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()").images  # home works


def test_a_rewritten_connection_file_or_planted_state_names_do_not_break_the_next_kernel(sandbox_image: str) -> None:
    # /run/lllm is writable by kernel code: it rewrites the connection file the supervisor starts each kernel
    # from (another key, another transport), plants a FIFO where the supervisor writes its state and a directory
    # where the next kernel binds its shell socket, and locks itself out of home.
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="512m", pids=64), start_timeout=15,
                       interrupt_grace=1.0) as sb:
        code = ("import json, os\ninfo = json.load(open('/run/lllm/kernel.json'))\n"
                "info.update(key='0' * 64, transport='tcp', ip='127.0.0.1')\n"
                "json.dump(info, open('/run/lllm/kernel.json', 'w'))\n"
                "os.mkfifo('/run/lllm/kernel.state.tmp')\nos.chmod('/home/sandbox', 0)\n"
                "os.unlink('/run/lllm/kernel-1')\nos.mkdir('/run/lllm/kernel-1')")
        assert sb.run_cell(code).status == "ok"
        sb.restart()
        assert sb.run_cell("1+1").result == "2"
        assert "reset" in sb.restart_note()
