"""Issue 11, on a real container and a local kernel: output streamed to callbacks while a cell or a command runs,
`run_command` beside the kernel (limits, user, process group killed on timeout), folders both ways."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lllm.errors import SandboxFileError, UsageError
from lllm.sandbox import DockerSandbox, LocalSandbox, SandboxLimits
from lllm.sandbox.live import CellEvent, watch_cells

BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), "local"]
DOCKER_ONLY = pytest.mark.parametrize("sb", [pytest.param("docker", marks=pytest.mark.docker)], indirect=True)
MARK = "lllm-straggler-7f3e"
"""Put in the command lines of processes that must not survive: the tests look for it in /proc."""


@pytest.fixture(scope="module", params=BACKENDS)
def sb(request: pytest.FixtureRequest) -> Iterator[Any]:
    opts: dict[str, Any] = {"cell_timeout": 20, "interrupt_grace": 1.5, "max_stored_chars": 2000}
    if request.param == "docker":
        request.getfixturevalue("sandbox_image")
        sandbox: Any = DockerSandbox(limits=SandboxLimits(memory="384m", pids=128, workspace_size="32m"), **opts)
    else:
        sandbox = LocalSandbox(**opts)
    with sandbox:
        yield sandbox


def timed(t0: float, into: list[tuple[float, str]], tag: str = "") -> Any:
    return lambda piece: into.append((time.monotonic() - t0, tag + (piece if isinstance(piece, str) else "<d>")))


# -- streaming ---------------------------------------------------------------------------------------------------
def test_a_cell_delivers_its_first_output_well_before_it_ends(sb: Any) -> None:
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    res = sb.run_cell("import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')",
                      on_stdout=timed(t0, seen))
    ended = time.monotonic() - t0
    assert res.status == "ok" and res.stdout == "first\nsecond\n"
    assert [text for _, text in seen] == ["first\n", "second\n"]
    assert ended - seen[0][0] >= 0.8, (seen, ended)  # the first piece came while the cell slept


def test_stderr_and_displays_stream_too(sb: Any) -> None:
    errs: list[str] = []
    shown: list[dict[str, Any]] = []
    res = sb.run_cell("import sys\nfrom IPython.display import HTML, display\nprint('oops', file=sys.stderr)\n"
                      "display(HTML('<b>hi</b>'))\n42", on_stderr=errs.append, on_display=shown.append)
    assert errs == ["oops\n"] and res.stderr == "oops\n"
    assert shown == [{"text/html": "<b>hi</b>", "text/plain": "<IPython.core.display.HTML object>"}]
    assert res.result == "42"  # the result is the cell's value, not a display


def test_callbacks_see_all_output_while_the_result_keeps_its_cap(sb: Any) -> None:
    pieces: list[str] = []
    res = sb.run_cell("print('x' * 9000)", on_stdout=pieces.append)
    assert len("".join(pieces)) == 9001
    assert len(res.stdout) == 2000 and res.truncated and any("kept the first 2,000" in n for n in res.notices)


def test_a_raising_callback_surfaces_after_the_cell_ran_to_its_end(sb: Any) -> None:
    calls: list[str] = []

    def broken(text: str) -> None:
        calls.append(text)
        raise ValueError("the callback's own bug")

    with pytest.raises(ValueError, match="the callback's own bug") as caught:
        sb.run_cell("import time\nprint('a', flush=True)\ntime.sleep(0.3)\nprint('b')\nafter_callback = 1",
                    on_stdout=broken)
    assert calls == ["a\n"]  # not called again
    assert "ran to its end with status 'ok'" in "".join(caught.value.__notes__)
    assert sb.run_cell("after_callback").result == "1"


def test_watchers_see_cells_and_commands_from_start_to_end(sb: Any) -> None:
    events: list[CellEvent] = []
    with watch_cells(events.append):
        sb.run_cell("print('watched')")
        sb.run_command(["echo", "cmd"])
    sb.run_cell("print('not watched')")
    assert [(e.kind, e.what, e.text) for e in events] == [
        ("start", "cell", "print('watched')"), ("stdout", "cell", "watched\n"), ("end", "cell", "ok"),
        ("start", "command", "echo cmd"), ("stdout", "command", "cmd\n"), ("end", "command", "ok")]


# -- commands ----------------------------------------------------------------------------------------------------
def test_a_command_streams_and_reports_how_it_ended(sb: Any) -> None:
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    res = sb.run_command("echo one; sleep 1; echo two >&2; exit 3", on_stdout=timed(t0, seen),
                         on_stderr=timed(t0, seen, "E:"))
    assert (res.status, res.exit_code, res.stdout, res.stderr) == ("error", 3, "one\n", "two\n")
    assert [text for _, text in seen] == ["one\n", "E:two\n"] and seen[1][0] - seen[0][0] >= 0.8, seen
    assert res.argv == ["/bin/sh", "-c", "echo one; sleep 1; echo two >&2; exit 3"] and res.duration_s >= 1


def test_command_argv_cwd_env_and_stdin(sb: Any) -> None:
    sb.run_command(["mkdir", "-p", "sub dir"])
    res = sb.run_command(["sh", "-c", 'printf "%s|%s|" "$PWD" "$GREETING"; cat'], cwd="sub dir",
                         env={"GREETING": "hello there"}, stdin="from stdin")
    where = "/home/sandbox/work" if isinstance(sb, DockerSandbox) else str(sb.workspace)
    assert res.ok and res.stdout == f"{where}/sub dir|hello there|from stdin"
    assert sb.run_command(["cat"]).stdout == ""  # no stdin: end of file at once, no hang
    missing = sb.run_command(["no-such-program-here"])
    assert missing.status == "error" and missing.exit_code is None
    assert "did not start" in missing.notices[0] and "no-such-program-here" in missing.notices[0]
    with pytest.raises(UsageError):
        sb.run_command([])
    with pytest.raises(UsageError):
        sb.run_command("true", env={"A=B": "x"})


def test_command_output_is_capped_while_it_streams(sb: Any) -> None:
    got = []
    res = sb.run_command("head -c 3000000 /dev/zero | tr '\\0' x", on_stdout=lambda t: got.append(len(t)))
    assert res.ok and sum(got) == 3_000_000 and res.output_bytes == 3_000_000
    assert len(res.stdout) == 2000 and res.truncated


def _stragglers(sb: Any) -> list[str]:
    """Command lines of live processes carrying MARK (in the container, or on this host)."""
    code = ("import os\nfound = []\nfor p in os.listdir('/proc'):\n    try:\n"
            "        line = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
            "        state = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]\n"
            "    except (OSError, IndexError):\n        continue\n"
            f"    if {MARK!r} in line and state not in 'ZX' and 'found' not in line:\n        found.append(line)\n"
            "print(found)")
    res = sb.run_cell(code)
    assert res.ok, res.text
    return eval(res.stdout)  # noqa: S307 - a list literal this test printed


def test_a_timeout_kills_the_whole_process_group_and_session(sb: Any) -> None:
    # a shell with two background children, one of which moves to a process group of its own
    sleeper = f"python3 -c 'import time; time.sleep(300)' {MARK}"
    mover = f"python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(300)' {MARK}"
    script = f"{sleeper} & {mover} & echo started; {sleeper}"
    t0 = time.monotonic()
    res = sb.run_command(["sh", "-c", script], timeout=1.5)
    assert res.status == "timeout" and res.stdout == "started\n", res
    assert time.monotonic() - t0 < 1.5 + 5
    assert "killed with every process it started" in res.notices[0]
    time.sleep(0.3)
    assert _stragglers(sb) == []


def test_what_a_finished_command_leaves_running_is_killed(sb: Any) -> None:
    res = sb.run_command(["sh", "-c", f"python3 -c 'import time; time.sleep(300)' {MARK} & echo left"], timeout=10)
    assert res.ok and res.stdout == "left\n"
    assert any(re.search(r"\d+ process(es)? it left running (was|were) killed", n) for n in res.notices), res.notices
    assert _stragglers(sb) == []


def test_a_command_runs_beside_a_busy_kernel(sb: Any) -> None:
    box: dict[str, Any] = {}
    cell = threading.Thread(target=lambda: box.setdefault("cell", sb.run_cell("import time; time.sleep(3); 'done'")))
    cell.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    res = sb.run_command(["echo", "beside"])
    took = time.monotonic() - t0
    cell.join(30)
    assert res.stdout == "beside\n" and took < 2.0, took  # not queued behind the cell
    assert box["cell"].result == "'done'"


@DOCKER_ONLY
def test_a_container_command_has_the_sandbox_user_and_limits(sb: Any) -> None:
    res = sb.run_command("id -u; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                         "cat /sys/fs/cgroup/memory.max; touch /usr/x 2>&1; echo $HOME")
    uid, limit, refused, home = res.stdout.splitlines()
    assert uid == "1000" or uid == str(os.getuid()) and os.getuid() != 0
    assert int(limit) == 384 << 20
    assert "Read-only file system" in refused and home == "/home/sandbox"


def test_a_kernel_restart_leaves_a_running_command_alone(sb: Any) -> None:
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.setdefault("res", sb.run_command("sleep 2; echo survived")))
    worker.start()
    time.sleep(0.5)
    sb.restart()  # in a container: every process of the kernel is killed, not the command's
    worker.join(30)
    assert box["res"].ok and box["res"].stdout == "survived\n", box["res"]


@DOCKER_ONLY
def test_a_command_out_of_memory_is_oom_and_the_kernel_lives_on(sb: Any) -> None:
    sb.run_cell("before_oom = 'kept'")
    res = sb.run_command(["python3", "-c", "blocks = []\nwhile True: blocks.append(bytearray(32 << 20))"], timeout=60)
    assert res.status == "oom" and res.exit_code == -9, res
    assert sb.run_cell("before_oom").result == "'kept'"


# -- folders -----------------------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "/") for p in sorted(root.rglob("*"))}


def test_a_folder_goes_in_as_one_archive_and_comes_back(sb: Any, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    (src / "pkg" / "deep").mkdir(parents=True)
    (src / "pkg" / "deep" / "data.txt").write_text("deep data")
    (src / "run.py").write_text("print('ran')")
    (src / "empty").mkdir()
    assert sb.upload(src) == "proj"
    assert sb.run_command(["python3", "proj/run.py"]).stdout == "ran\n"
    assert sb.upload(src, "copies/second") == "copies/second"
    sb.run_cell("open('proj/pkg/made-inside.txt', 'w').write('made inside')")
    back = sb.download_dir("proj", tmp_path / "back")
    assert _tree(back) == {"empty": "/", "pkg": "/", "pkg/deep": "/", "pkg/deep/data.txt": "deep data",
                           "pkg/made-inside.txt": "made inside", "run.py": "print('ran')"}
    with pytest.raises(SandboxFileError, match="not empty"):
        sb.download_dir("proj", back)


def test_links_and_special_files_are_refused_both_ways(sb: Any, tmp_path: Path) -> None:
    src = tmp_path / "withlink"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    os.symlink("/etc/passwd", src / "passwd")
    with pytest.raises(SandboxFileError, match="'passwd' is a symlink"):
        sb.upload(src)
    os.unlink(src / "passwd")
    os.mkfifo(src / "pipe")
    with pytest.raises(SandboxFileError, match="'pipe' is not a regular file"):
        sb.upload(src)
    sb.run_cell("import os\nos.makedirs('out/sub', exist_ok=True)\nos.path.lexists('out/sub/etc') or "
                "os.symlink('/etc', 'out/sub/etc')")
    with pytest.raises(SandboxFileError, match="symlink"):
        sb.download_dir("out", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@DOCKER_ONLY
def test_a_folder_over_the_workspace_is_refused_before_sending(sb: Any, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "a.bin").write_bytes(b"\0" * (20 << 20))
    (big / "b.bin").write_bytes(b"\0" * (20 << 20))
    t0 = time.monotonic()
    with pytest.raises(SandboxFileError) as caught:
        sb.upload(big)
    message = str(caught.value)
    assert "larger than the sandbox's workspace (32m)" in message and "workspace_size" in message
    assert time.monotonic() - t0 < 2  # refused on the host, nothing sent
    assert not any(name.startswith("big") for name in sb.list_files())


# -- bad input ---------------------------------------------------------------------------------------------------
def _our_containers() -> set[str]:
    from lllm.sandbox._docker import LABEL_TEST_RUN, client

    found = client().containers.list(all=True, filters={"label": f"{LABEL_TEST_RUN}={os.environ['LLLM_TEST_RUN']}"})
    return {c.id for c in found}


@pytest.mark.docker
def test_a_mount_of_a_missing_folder_is_a_clear_error_and_nothing_runs(sandbox_image: str, tmp_path: Path) -> None:
    before = _our_containers()
    with pytest.raises(UsageError, match=r"the host folder '.*/nope' does not exist; create it, or fix the path"):
        DockerSandbox(image=sandbox_image, mounts={str(tmp_path / "nope"): "project"})
    folder = tmp_path / "gone"
    folder.mkdir()
    sandbox = DockerSandbox(image=sandbox_image, mounts={str(folder): "project"})
    folder.rmdir()  # gone between the constructor and start()
    with pytest.raises(UsageError, match="does not exist"):
        sandbox.start()
    assert sandbox._session_dir is None and _our_containers() == before
    for bad, why in (({"/": "root"}, "is refused"), ({str(tmp_path): "../up"}, "one plain folder name")):
        with pytest.raises(UsageError, match=why):
            DockerSandbox(image=sandbox_image, mounts=bad)
