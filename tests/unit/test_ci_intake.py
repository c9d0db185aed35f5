"""lllm.ci on the host, without containers: the guest's report lines read as hostile input, the split of tests
across shards, the requirements a project declares, and the report's views (text, agent summary, JUnit)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from lllm.ci import install
from lllm.ci._guest_plugin import split
from lllm.ci._intake import MAX_LINE_CHARS, PREFIX, GuestReader
from lllm.ci.render import render_summary, render_text, to_junit
from lllm.ci.report import TestReport, TestResult
from lllm.ci.runner import ShardRun, report_from_runs, stage_project


def line(nonce: str, **event: object) -> str:
    return f"\n{PREFIX}{nonce} {json.dumps(event)}\n"


def reader_for(nonce: str, *nodeids: str) -> GuestReader:
    reader = GuestReader(nonce)
    reader.feed(line(nonce, ev="assigned", nodeids=list(nodeids), collected=len(nodeids)))
    return reader


def test_only_whole_lines_with_the_runs_nonce_count() -> None:
    reader = reader_for("n1", "t.py::a", "t.py::b")
    reader.feed("a test printed this\n" + line("n1", ev="start", nodeid="t.py::a")[:20])
    reader.feed(line("n1", ev="start", nodeid="t.py::a")[20:])
    reader.feed(line("other", ev="result", nodeid="t.py::a", outcome="passed", duration_s=1))  # another run's
    reader.feed(f"prefix {PREFIX}n1 " + json.dumps({"ev": "start", "nodeid": "t.py::b"}) + "\n")  # not at line start
    got = reader.close()
    assert got.started == ["t.py::a"]
    assert got.results == {}
    assert got.running == "t.py::a"
    assert "a test printed this" in got.tail


def test_bad_records_are_dropped_and_counted() -> None:
    reader = GuestReader("n")
    reader.feed(line("n", ev="assigned", nodeids=["ok", 3], collected=2))
    reader.feed(line("n", ev="assigned", nodeids=["t::a", "t::b", "t::c", "t::d"], collected=4))
    reader.feed(line("n", ev="result", nodeid="t::a", outcome="exploded", duration_s=1))  # unknown outcome
    reader.feed(line("n", ev="result", nodeid="t::b", outcome="passed", duration_s=float("nan")))
    reader.feed(line("n", ev="result", nodeid="t::c", outcome="passed", duration_s=-1))
    reader.feed(line("n", ev="result", nodeid=["list"], outcome="passed", duration_s=1))
    reader.feed(line("n", ev="end", exitstatus=True))
    reader.feed(line("n", ev="assigned", nodeids=["t::ghost"], collected=1))  # a second one
    reader.feed(line("n", ev="result", nodeid="t::ghost", outcome="passed", duration_s=1))  # not collected
    reader.feed(f"\n{PREFIX}n {{not json\n")
    reader.feed(f"\n{PREFIX}n " + json.dumps({"ev": "start", "nodeid": "x" * MAX_LINE_CHARS}) + "\n")
    reader.feed(line("n", ev="result", nodeid="t::d", outcome="failed", duration_s=2, message="m" * 20_000,
                     traceback="t" * 20_000))
    got = reader.close()
    assert got.dropped == 10
    assert list(got.results) == ["t::d"]
    assert len(got.results["t::d"]["message"]) < 1100 and len(got.results["t::d"]["traceback"]) < 4100
    assert got.assigned == ["t::a", "t::b", "t::c", "t::d"] and got.end is None


def test_an_endless_line_is_kept_bounded() -> None:
    reader = reader_for("n", "t::a")
    for _ in range(40):
        reader.feed("y" * 100_000)  # no newline ever
    reader.feed(line("n", ev="start", nodeid="t::a"))
    got = reader.close()
    assert got.started == ["t::a"]
    assert len(reader._partial) == 0 and len(got.tail) <= 4000


def test_the_split_is_even_without_durations_and_balanced_with_them() -> None:
    ids = [f"t.py::t{i}" for i in range(10)]
    parts = split(ids, 3, {})
    assert sorted(sum(parts, [])) == sorted(ids) and [len(p) for p in parts] == [4, 3, 3]
    durations = {"t.py::t0": 9.0, **{i: 1.0 for i in ids[1:]}}
    parts = split(ids, 2, durations)
    assert parts[0] == ["t.py::t0"] and len(parts[1]) == 9
    assert split(ids, 2, durations) == parts  # every shard computes the same split


def test_requirements_come_from_the_files_then_pyproject(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# comment\nrequests>=2  # inline\n\nnumpy\n")
    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    found = install.project_requirements(tmp_path)
    assert [(r.line, r.source) for r in found] == [("pytest", "requirements-dev.txt:1"),
                                                    ("requests>=2", "requirements.txt:2"),
                                                    ("numpy", "requirements.txt:4")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["attrs>=20"]\n')
    assert [r.line for r in install.project_requirements(other)] == ["attrs>=20"]
    assert install.unsatisfied_problems(found, '[["numpy", "not installed in the image"], ["evil", "x"], 3]\n')[0] \
        .startswith("requirement 'numpy' (requirements.txt:4) cannot be installed: not installed")
    assert install.unsatisfied_problems(found, "garbage") == [
        "the image's packages could not be checked against the requirements"]


def test_staging_leaves_out_vcs_caches_venvs_and_links(tmp_path: Path) -> None:
    src = tmp_path / "p"
    for folder in (".git", "__pycache__", "venv", "pkg"):
        (src / folder).mkdir(parents=True)
    (src / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    (src / "pkg" / "link.py").symlink_to(src / "pkg" / "mod.py")
    notes = stage_project(src, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "pkg", "pkg/mod.py"]
    assert notes and "pkg/link.py" in notes[0]


def _report() -> TestReport:
    run = ShardRun.__new__(ShardRun)
    from lllm.ci.report import ShardReport

    run.__init__(ShardReport(index=0))  # type: ignore[misc]
    run.results = {
        "t.py::ok": {"outcome": "passed", "duration_s": 0.5, "message": "", "traceback": ""},
        "t.py::bad": {"outcome": "failed", "duration_s": 0.1, "message": "assert 1 == 2\x1b[2J\x00",
                      "traceback": "t.py:3: in bad\n    assert 1 == 2\nE   assert 1 == 2\x00"},
    }
    run.network = [("t.py::bad", "example.com:443")]
    run.end_codes = [1]
    run.shard.exit_code = 1
    return report_from_runs("proj", [run], image="img", wall_s=1.5)


def test_views_of_a_report() -> None:
    report = _report()
    assert report.exit_code == 1 and report.totals["failed"] == 1 and report.totals["passed"] == 1
    assert report.tried_network and "the sandbox has no network" in report.failures()[0].message
    text = render_text(report)
    assert text.splitlines()[0].startswith("FAILED t.py::bad - assert 1 == 2")
    assert text.splitlines()[-1] == "1 failed, 1 passed in 1.50 s (1 shard, image img)"
    assert "slowest: 0.5 s t.py::ok; 0.1 s t.py::bad" in text
    summary = render_summary(report, max_chars=300)
    assert summary.startswith("NOT PASSED (exit code 1): 1 failed, 1 passed") and len(summary) <= 300
    root = ET.fromstring(to_junit(report).split("?>", 1)[1])
    assert root.get("failures") == "1" and root.get("tests") == "2"
    assert root.find("testcase/failure") is not None
    assert TestReport.model_validate_json(report.model_dump_json()) == report


def test_an_empty_run_says_no_tests() -> None:
    from lllm.ci.report import ShardReport

    run = ShardRun(ShardReport(index=0, exit_code=5))
    report = report_from_runs("proj", [run])
    assert report.exit_code == 5 and "no tests were collected" in report.reason


def test_results_are_test_results() -> None:
    assert TestResult(nodeid="a", outcome="xpass").outcome == "xpass"


def test_no_shape_of_record_makes_the_reader_raise() -> None:
    odd = [None, True, -1, 1e400, "x", "", ["a"], {"a": 1}, "\n", "\ud800"]
    fields = ["nodeid", "outcome", "duration_s", "message", "traceback", "nodeids", "collected", "target",
              "exitstatus", "cpu_s", "max_rss_kb"]
    reader = reader_for("n", "t::a")
    for kind in ("start", "result", "assigned", "collect_error", "net", "hung", "end", "other", None, 3):
        for name in fields:
            for value in odd:
                base = {"ev": kind, "nodeid": "t::a", "outcome": "passed", "duration_s": 1, "nodeids": ["t::a"],
                        "collected": 1, "target": "h:1", "exitstatus": 0}
                base[name] = value
                reader.feed(f"\n{PREFIX}n " + json.dumps(base, default=str) + "\n")
        reader.feed(f"\n{PREFIX}n " + json.dumps([kind]) + "\n")
    got = reader.close()
    assert got.dropped > 0 and set(got.results) <= {"t::a"}


def test_option_lines_are_setup_problems_not_installs(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r base.txt\n-e .\n")
    prepared = install.prepare_image(install.project_requirements(tmp_path), image=None)
    assert prepared.image is None and prepared.unchecked == []
    assert [p.split(" is an option")[0] for p in prepared.problems] == [
        "requirement line '-r base.txt' (requirements.txt:1)", "requirement line '-e .' (requirements.txt:2)"]
    assert install.prepare_image(install.project_requirements(tmp_path), image="mine:1").image == "mine:1"


class _Stub:
    """A started sandbox whose every command ends as given (for how a run ends before any test ran)."""

    image = "some:image"

    def __init__(self, **result: object) -> None:
        from lllm.sandbox.commands import CommandResult

        self.result = CommandResult(**result)  # type: ignore[arg-type]

    def run_command(self, argv: list[str], **options: object):  # noqa: ANN201
        return self.result


def test_an_image_without_pytest_and_a_usage_error_say_so() -> None:
    from lllm.ci.runner import run_in_sandbox

    missing = run_in_sandbox(_Stub(status="error", exit_code=1,
                                   stderr="Traceback...\nModuleNotFoundError: No module named 'pytest'\n"))
    report = report_from_runs("p", [missing])
    assert report.exit_code == 2
    assert report.reason == "shard 0: the image 'some:image' has no pytest: give an image with pytest installed"
    usage = report_from_runs("p", [run_in_sandbox(_Stub(status="error", exit_code=4, stderr="ERROR: usage"))])
    assert usage.exit_code == 4 and usage.reason == "pytest refused its arguments (usage error)"


def test_requirements_go_to_the_sandbox_rooms_derived_images_when_it_has_them(tmp_path: Path, monkeypatch) -> None:
    import sys
    import types

    from lllm.errors import SandboxStartError

    asked: list[list[str]] = []

    def derived_image(packages: list[str], *, log=None) -> str:  # the sandbox room's signature (issue 11)
        asked.append(list(packages))
        if "broken" in packages:
            raise SandboxStartError("pip download found no distribution for broken (index https://pypi.org/simple)")
        return "lllm-sandbox:pkgs-0123"

    monkeypatch.setitem(sys.modules, "lllm.sandbox.derived", types.SimpleNamespace(derived_image=derived_image))
    (tmp_path / "requirements.txt").write_text("attrs>=20\n-r other.txt\n")
    prepared = install.prepare_image(install.project_requirements(tmp_path), image=None)
    assert prepared.image == "lllm-sandbox:pkgs-0123" and asked == [["attrs>=20"]]
    assert len(prepared.problems) == 1 and prepared.unchecked == []
    (tmp_path / "requirements.txt").write_text("broken\n")
    failed = install.prepare_image(install.project_requirements(tmp_path), image=None)
    assert failed.image is None and failed.problems[0].startswith(
        "the requirements 'broken' (requirements.txt:1) could not be installed: pip download found no distribution")


def test_lllm_logs_show_lists_a_test_run() -> None:
    from lllm.logging.cli import _record_lines
    from lllm.records import TestRunRecord

    record = TestRunRecord(agent="coder", path="project", exit_code=1, passed=1, failed=1, total=2, duration_s=1.5,
                           summary="NOT PASSED (exit code 1): 1 failed, 1 passed")
    lines = _record_lines(record, full=False)
    assert "test_run" in lines[0] and "exit 1" in lines[0]
    assert "project: 1 passed, 1 failed, 0 errors in 1.50s" in lines[0]
    assert lines[1].strip() == "summary:" and "NOT PASSED" in lines[2]
