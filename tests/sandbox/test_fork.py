"""`sb.fork()`: branch kernels in the same container (lllm.sandbox.fork, sandbox/lllm_fork.py, the supervisor).

One container for most tests (module fixture); each test closes the branches it made.
"""

from __future__ import annotations

import threading
import time

import pytest

from lllm.errors import SandboxClosed, SandboxForkError
from lllm.sandbox.base import SandboxLimits
from lllm.sandbox.docker import DockerSandbox
from lllm.sandbox.fork import default_max_branches

pytestmark = pytest.mark.docker

SETUP = """
import numpy as np, threading
arr = np.arange(5)
x = 1
def read_x():
    return x
gen = (i * i for i in range(100))
first = next(gen)
ticker = threading.Thread(target=lambda: threading.Event().wait(600), daemon=True)
ticker.start()
print("ready")
"""


@pytest.fixture(scope="module")
def sb(sandbox_image: str):
    sandbox = DockerSandbox(image=sandbox_image, cell_timeout=30, interrupt_grace=2, max_output_chars=2000,
                            max_stored_chars=50_000)
    sandbox.start()
    assert sandbox.run_cell(SETUP).stdout == "ready\n"
    yield sandbox
    sandbox.close()


def _kernels(sandbox, expect: int) -> int:
    """How many kernel processes run in the container (zombies not counted), once it is `expect` or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        count = int(_out(sandbox, "import os\nprint(sum(1 for p in os.listdir('/proc') if p.isdigit() and "
                                  "'lllm_kernel_boot' in open(f'/proc/{p}/cmdline').read() and "
                                  "open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'))"))
        if count == expect or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def _out(sandbox, code: str) -> str:
    result = sandbox.run_cell(code)
    assert result.status == "ok", result.text
    return result.stdout.strip()


def test_a_branch_has_the_parents_state_and_then_evolves_on_its_own(sb: DockerSandbox) -> None:
    branch = sb.fork()
    try:
        assert branch in sb.branches and branch.session_dir == sb.session_dir
        assert branch._conn["key"] != sb._conn["key"]  # its own signing key and socket names
        # variables, arrays, generators and functions that read their globals carry over; then diverge
        assert _out(branch, "x = 2; arr[0] = 99; print(read_x(), arr[0], next(gen))") == "2 99 1"
        assert _out(sb, "print(read_x(), arr[0], next(gen))") == "1 0 1"
        assert _out(sb, "x = 3; print(read_x(), next(gen))") == "3 4"
        assert _out(branch, "print(read_x(), next(gen))") == "2 4"
        # threads do not survive a fork (documented); the parent's still runs
        assert _out(branch, "print(ticker.is_alive(), threading.active_count() > 0)") == "False True"
        assert _out(sb, "print(ticker.is_alive())") == "True"
        # the workspace is shared
        _out(branch, "open('from_branch.txt', 'w').write('hi')")
        assert _out(sb, "print(open('from_branch.txt').read())") == "hi"
        # a branch forks again; closing a branch ends its own branches
        grand = branch.fork()
        assert _out(grand, "print(read_x())") == "2"
        assert branch.branches == [grand]
    finally:
        branch.close()
    assert grand.state.value == "closed" and branch not in sb.branches
    assert _kernels(sb, 1) == 1  # the branch of the branch was killed too (it runs in a session of its own)
    with pytest.raises(SandboxClosed, match="ended"):
        grand.run_cell("1")
    assert _out(sb, "print(read_x())") == "3"


def test_a_branch_gets_the_parents_caps(sb: DockerSandbox) -> None:
    branch = sb.fork()
    try:
        result = branch.run_cell("print('y' * 5_000_000)")
        assert result.status == "ok"
        assert len(result.text) <= 2000 and len(result.stdout) <= 50_000
        assert result.truncated
        assert branch.record_budget is sb.record_budget  # charged to the parent: a fork does not multiply it
    finally:
        branch.close()


def test_a_branch_runs_commands_and_folders_in_the_one_container(sb: DockerSandbox, tmp_path) -> None:
    branch = sb.fork()
    try:
        result = branch.run_command("echo made-by-branch > cmd.txt && cat cmd.txt")
        assert (result.status, result.stdout) == ("ok", "made-by-branch\n")
        assert _out(sb, "print(open('cmd.txt').read().strip())") == "made-by-branch"
        _out(sb, "import os; os.makedirs('tree', exist_ok=True); open('tree/a.txt', 'w').write('a')")
        assert (branch.download_dir("tree", tmp_path / "tree") / "a.txt").read_text() == "a"
    finally:
        branch.close()


def test_a_timeout_kill_in_a_branch_leaves_the_parent_and_gives_the_branch_a_fresh_kernel(sb: DockerSandbox) -> None:
    branch = sb.fork()
    try:
        sub = branch.fork()
        result = branch.run_cell("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
                                 timeout=1.5)
        assert result.status == "timeout" and result.timeout_action == "restarted", result.text
        assert "ended with it" in result.text  # its own branch went with the old kernel, and it says so
        assert sub.state.value == "closed"
        assert _kernels(sb, 2) == 2  # the parent and the branch's fresh kernel: the old one's branch is gone
        assert _out(branch, "print('x' in dir())") == "False"  # a fresh, empty kernel
        assert _out(sb, "print(read_x())") == "3"  # the parent is untouched
    finally:
        branch.close()


def test_a_fork_asked_for_while_a_cell_runs_waits_for_the_cell(sb: DockerSandbox) -> None:
    done: dict[str, object] = {}

    def long_cell() -> None:
        done["cell"] = sb.run_cell("import time; time.sleep(1.5); late = 'set by the cell'")

    worker = threading.Thread(target=long_cell)
    worker.start()
    time.sleep(0.3)
    branch = sb.fork()  # queued behind the cell: the branch has what the cell made
    try:
        worker.join()
        assert done["cell"].status == "ok"  # type: ignore[attr-defined]
        assert _out(branch, "print(late)") == "set by the cell"
    finally:
        branch.close()


def test_more_branches_than_allowed_is_a_clear_error_and_leaves_nothing(sandbox_image: str) -> None:
    with DockerSandbox(image=sandbox_image, max_branches=2) as sandbox:
        sandbox.run_cell("v = 7")
        first, second = sandbox.fork(), sandbox.fork()
        with pytest.raises(SandboxForkError, match=r"already has 2 live branch kernels.*max_branches") as err:
            first.fork()
        assert "close a branch" in str(err.value)
        assert len(sandbox.branches) == 2 and first.branches == []
        second.close()
        third = first.fork()  # room again
        assert _out(third, "print(v)") == "7"
        # a restart of the root ends every branch and says so, and spares a command running beside the kernels
        done: list = []
        runner = threading.Thread(target=lambda: done.append(sandbox.run_command("sleep 2; echo survived")))
        runner.start()
        time.sleep(0.8)
        sandbox.restart()
        runner.join(30)
        assert done and (done[0].status, done[0].stdout) == ("ok", "survived\n")
        assert [b.state.value for b in (first, third)] == ["closed", "closed"]
        assert "branch kernels" in sandbox.restart_note()
        with pytest.raises(SandboxClosed, match="restarted"):
            first.run_cell("1")
        # nothing of them is left running in the container
        assert _kernels(sandbox, 1) == 1
    assert default_max_branches(256) >= 15


def test_the_supervisor_reaps_a_branch_that_dies_and_the_branch_says_so(sandbox_image: str) -> None:
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(pids=128)) as sandbox:
        assert sandbox.max_branches == default_max_branches(128)
        branch = sandbox.fork()
        result = branch.run_cell("import os; os._exit(3)")
        assert result.status == "died" and "exited with code 3" in result.text, result.text
        assert _out(branch, "print('alive again')") == "alive again"
        ppid = _out(branch, "import os; print(os.getppid())")
        supervisor = _out(sandbox, "import os; print(os.getppid())")
        assert ppid == supervisor  # the branch is the supervisor's child, not tini's
        # a process that re-attaches has no handle on earlier branches: it can end them all
        assert sandbox.end_leftover_branches() == 1
        assert branch.state.value == "closed" and sandbox.branches == []


def test_a_dialog_whose_branch_ended_with_the_main_kernel_gets_a_new_branch_and_is_told(sandbox_image: str,
                                                                                       tmp_path) -> None:
    from lllm.core.agent import Agent
    from lllm.core.config import AgentBuildContext
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.tools.code import attach

    agent = Agent(name="explorer", system_prompt="You explore.", model="scripted", llm_invoker=ScriptedInvoker([]))
    ctx = AgentBuildContext(session_id="forkdialog", tracer=lambda r: None, workdir_base=tmp_path)
    tools = attach(agent, {"timeout": 2.0, "sandbox": {"backend": "docker", "image": sandbox_image}}, ctx)
    try:
        agent.open("base")
        tools.run("x = 1", dialog="base")
        agent.fork("base", "side")
        assert "1 2" in tools.run("y = 2; print(x, y)", dialog="side")
        stuck = tools.run("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
                          dialog="base")
        assert "timeout" in stuck and "branch kernel" in stuck, stuck  # the restart says the branch went too
        out = tools.run("print('x' in dir(), 'y' in dir())", dialog="side")
        assert "had ended" in out and "False False" in out, out
        again = tools.run("print('x' in dir(), 'y' in dir())", dialog="side")
        assert "False False" in again and "had ended" not in again  # told once
    finally:
        agent.shutdown()


def test_attaching_to_a_kept_sandbox_whose_owner_is_gone_ends_the_branches_it_left(sandbox_image: str,
                                                                                  tmp_path) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    import docker

    from lllm.sandbox._docker import LABEL, LABEL_NAME, LABEL_TEST_RUN

    name = f"fork-{os.environ['LLLM_TEST_RUN']}"
    owner = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from lllm.sandbox import DockerSandbox
        sb = DockerSandbox(image={sandbox_image!r}, name={name!r})
        sb.start()
        sb.run_cell("kept = 5")
        first, second = sb.fork(), sb.fork()
        print(second.run_cell("print(kept)").stdout.strip(), flush=True)
        os._exit(0)  # gone without closing anything: the kept sandbox and its branches stay
        """)], capture_output=True, text=True, timeout=120)
    try:
        assert owner.returncode == 0 and owner.stdout.strip() == "5", owner.stderr
        sandbox = DockerSandbox.attach(name)
        assert _kernels(sandbox, 1) == 1  # the two branches of the process that is gone were ended
        assert _out(sandbox, "print(kept)") == "5"
        branch = sandbox.fork()  # and the new owner forks as before
        assert _out(branch, "print(kept + 1)") == "6"
        sandbox.close()
    finally:
        filters = [f"{LABEL}=1", f"{LABEL_TEST_RUN}={os.environ['LLLM_TEST_RUN']}", f"{LABEL_NAME}={name}"]
        for container in docker.from_env().containers.list(all=True, filters={"label": filters}):
            container.remove(force=True)


def test_a_busy_branch_is_use_of_its_sandbox_for_the_idle_timeout(sandbox_image: str) -> None:
    with DockerSandbox(image=sandbox_image, idle_timeout=3) as sandbox:
        branch = sandbox.fork()
        result = branch.run_cell("import time\nfor i in range(7):\n    time.sleep(1)\nprint('slept')")
        assert (result.status, result.stdout) == ("ok", "slept\n"), result.text
        assert sandbox.state.value == "running" and _out(sandbox, "print(1)") == "1"


def test_the_supervisor_is_signalled_through_a_pidfd_and_through_the_engine_when_that_is_gone(sb: DockerSandbox,
                                                                                              monkeypatch) -> None:
    import os

    calls: list[str] = []
    kill = type(sb.container).kill

    def engine_kill(container, *args, **kwargs):
        calls.append(str(kwargs.get("signal")))
        return kill(container, *args, **kwargs)

    monkeypatch.setattr(type(sb.container), "kill", engine_kill)
    sb.run_cell("signalled = 7")
    branch = sb.fork()
    assert branch.run_cell("print(signalled)").stdout == "7\n"
    assert branch.fork_timing["guest_total"] > 0 and "sockets" in branch.fork_timing
    if sb.runtime == "runc":  # the engine's pid of the container's init is this host's: no API round trip
        assert calls == [] and sb._init_pidfd is not None
        # a pidfd that no longer works (as when the container's init is gone): the engine's way, and it works
        sb._drop_supervisor_pidfd()
        sb._init_pidfd = os.open("/dev/null", os.O_RDONLY)  # not a pidfd: pidfd_send_signal fails
    branch.close()
    assert "SIGUSR1" in calls
    assert sb._init_pidfd is None  # dropped after the failure, not retried
    again = sb.fork()
    assert again.run_cell("print(signalled)").stdout == "7\n"
    again.close()
