"""Bad input to `lllm test`, against real containers: each ends in the report with a clear reason, the other
tests' results are kept, and no sandbox is left behind.

The hostile tests share one run (`hostile`): a test that hangs (the per-test timeout's alarm stops it), one
that ignores the alarm (its pytest is ended, the rest run again), one that fills the disk, one that runs out of
memory, one that floods the report channel with junk and forged records and one that forks without end, with
a passing test after each."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from lllm.ci import TestReport

pytestmark = pytest.mark.docker


def ci_containers() -> list[str]:
    from lllm.sandbox import _docker

    labels = ["lllm.ci=1", f"lllm.test_run={os.environ['LLLM_TEST_RUN']}"]  # set for every test run
    return [c.name for c in _docker.client().containers.list(all=True, filters={"label": labels})]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


HOSTILE = """
    import os, signal, time

    def test_a_hangs():
        time.sleep(600)

    def test_b_after_hang():
        pass

    def test_c_ignores_the_alarm():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(600)

    def test_d_after_ignore():
        pass

    def test_e_fills_the_disk():
        with open("filler", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))

    def test_f_after_disk():
        os.remove("filler")

    def test_g_eats_memory():
        hog = []
        while True:
            hog.append(b"x" * (128 << 20))

    def test_h_after_memory():
        pass

    def test_ha_floods_the_report_channel():
        import __main__ as plugin, json
        junk = b"y" * (1 << 20) + b"\\n"
        for _ in range(8):
            os.write(plugin._OUT, junk)  # 8 MB of lines that are no records
        forged = [{"ev": "result", "nodeid": "test_hostile.py::test_ghost", "outcome": "passed", "duration_s": 1},
                  {"ev": "result", "nodeid": "test_hostile.py::test_b_after_hang", "outcome": "exploded"},
                  {"ev": "end", "exitstatus": "zero"}]
        for event in forged * 100:
            os.write(plugin._OUT, ("\\n\\x1elllm-ci %s %s\\n" % (plugin._NONCE, json.dumps(event))).encode())

    def test_i_forks_without_end():
        while True:
            try:
                os.fork()
            except OSError:
                pass

    def test_j_after_fork():
        pass
"""


def outcomes(report: TestReport) -> dict[str, tuple[str, str]]:
    return {t.nodeid.split("::")[-1]: (t.outcome, t.message) for t in report.tests}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> TestReport:
    from lllm.ci import run_tests
    from lllm.sandbox import SandboxLimits

    project = write(tmp_path_factory.mktemp("hostile"), {"test_hostile.py": HOSTILE})
    report = run_tests(project, test_timeout=5, timeout=300,
                       limits=SandboxLimits(memory="384m", workspace_size="32m", pids=128))
    assert ci_containers() == []
    return report


def test_every_other_test_still_ran_and_passed(hostile: TestReport) -> None:
    got = outcomes(hostile)
    from lllm.ci import render_text
    assert [name for name, (outcome, _) in got.items() if outcome == "passed"] == [
        "test_b_after_hang", "test_d_after_ignore", "test_f_after_disk", "test_h_after_memory",
        "test_ha_floods_the_report_channel", "test_j_after_fork"], render_text(hostile)
    assert hostile.exit_code == 1 and hostile.totals["total"] == 11


def test_a_flood_of_junk_and_forged_records_is_dropped_and_counted(hostile: TestReport) -> None:
    assert "test_ghost" not in outcomes(hostile)  # a record cannot add a test pytest did not collect
    assert outcomes(hostile)["test_b_after_hang"][0] == "passed"
    assert any(note.startswith("shard 0: 300 unreadable report line(s) were dropped") for note in hostile.notes)
    assert len(hostile.model_dump_json()) < 200_000


def test_a_hanging_test_stops_at_the_per_test_timeout(hostile: TestReport) -> None:
    outcome, message = outcomes(hostile)["test_a_hangs"]
    assert outcome == "failed" and "ran past the per-test timeout of 5 s" in message


def test_a_test_that_ignores_the_timeout_costs_only_itself(hostile: TestReport) -> None:
    outcome, message = outcomes(hostile)["test_c_ignores_the_alarm"]
    assert outcome == "failed"
    assert message.startswith("timed out: it ran past the per-test timeout of 5 s and did not stop")
    shard = hostile.shards[0]
    assert "test_hostile.py::test_c_ignores_the_alarm" in shard.interrupted and shard.restarts >= 2


def test_a_test_that_fills_the_disk_fails_with_its_error(hostile: TestReport) -> None:
    outcome, message = outcomes(hostile)["test_e_fills_the_disk"]
    assert outcome == "failed" and "No space left on device" in message


def test_a_test_that_runs_out_of_memory_is_reported_so(hostile: TestReport) -> None:
    outcome, message = outcomes(hostile)["test_g_eats_memory"]
    assert outcome in ("error", "failed"), message
    assert "out of memory" in message or "MemoryError" in message
    if outcome == "error":
        assert hostile.shards[0].status == "oom"


def test_a_fork_bomb_ends_at_the_process_limit_and_timeout(hostile: TestReport) -> None:
    outcome, message = outcomes(hostile)["test_i_forks_without_end"]
    # the process limit stops the forks; what ends the test is its timeout, or the memory its copies took
    assert (outcome == "failed" and "per-test timeout" in message) or (outcome == "error" and "out of memory" in message), message


def test_a_folder_without_tests(tmp_path: Path, sandbox_image: str) -> None:
    from lllm.ci import run_tests

    folder = write(tmp_path / "notes", {"README.md": "just notes\n", "tool.py": "print('hi')\n"})
    report = run_tests(folder)
    assert report.exit_code == 5 and report.tests == []
    assert report.reason.startswith("no tests were collected: is this the folder of a project with tests")
    assert ci_containers() == []


def test_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    from lllm.ci import run_tests
    from lllm.errors import UsageError

    with pytest.raises(UsageError, match="is not a folder; give the folder of a project with tests"):
        run_tests(tmp_path / "missing")


def test_a_requirement_that_cannot_be_installed(tmp_path: Path, sandbox_image: str) -> None:
    from lllm.ci import run_tests

    project = write(tmp_path / "proj", {"requirements.txt": "pytest\nno-such-package-lllm-test==9.9\n",
                                        "test_one.py": "def test_one():\n    assert True\n"})
    report = run_tests(project)
    assert [t.outcome for t in report.tests] == ["passed"]
    assert len(report.setup_problems) == 1
    assert "'no-such-package-lllm-test==9.9' (requirements.txt:2)" in report.setup_problems[0]
    assert report.exit_code == 3 and "could not install" in report.reason
    assert ci_containers() == []


def test_the_whole_run_timeout_keeps_what_ran(tmp_path: Path, sandbox_image: str) -> None:
    from lllm.ci import run_tests

    project = write(tmp_path / "proj", {"test_slow.py": """
        import time

        def test_quick():
            pass

        def test_forever():
            time.sleep(600)

        def test_never_reached():
            pass
    """})
    report = run_tests(project, timeout=30)
    got = outcomes(report)
    assert got["test_quick"][0] == "passed"
    assert got["test_forever"] == ("error", "interrupted: it was running when the whole-run timeout ended the shard")
    assert got["test_never_reached"][0] == "error" and got["test_never_reached"][1].startswith("not run: ")
    assert report.exit_code == 2 and report.shards[0].status == "timeout"
    assert report.wall_s < 60
    assert ci_containers() == []
