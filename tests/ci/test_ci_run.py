"""`lllm test` and `lllm.ci.run_tests` against real containers: the report of a small project (every outcome,
a collection error, a test that tried the network), its JSON and JUnit files and exit status, and shards
split by recorded durations."""

from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


def ci_containers() -> list[str]:
    """Names of this test run's `lllm test` containers still on the engine."""
    from lllm.sandbox import _docker

    labels = ["lllm.ci=1", f"lllm.test_run={os.environ['LLLM_TEST_RUN']}"]  # set for every test run
    return [c.name for c in _docker.client().containers.list(all=True, filters={"label": labels})]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


SMALL = {
    "calc.py": """
        def add(a, b):
            return a - b
    """,
    "tests/test_calc.py": """
        import socket
        import pytest
        from calc import add

        def test_add():
            assert add(2, 2) == 4

        def test_sub():
            assert add(2, 0) == 2

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_known_bug():
            assert add(1, 1) == 2

        @pytest.mark.xfail(reason="was broken")
        def test_fixed_since():
            assert add(1, 0) == 1

        @pytest.fixture
        def broken():
            raise RuntimeError("the fixture broke")

        def test_setup_error(broken):
            pass

        def test_download():
            socket.create_connection(("example.com", 443), timeout=3)
    """,
    "tests/test_broken.py": "import not_a_module_anywhere\n",
}


def test_a_small_project_reported_by_lllm_test(tmp_path: Path, sandbox_image: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from lllm.ci import TestReport
    from lllm.cli import main

    project = write(tmp_path / "proj", SMALL)
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    code = main(["test", str(project), "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    out = capsys.readouterr().out
    assert code == 1, out
    report = TestReport.model_validate_json((tmp_path / "r.json").read_text())
    outcomes = {t.nodeid.split("::")[-1].split("/")[-1]: t.outcome for t in report.tests}
    assert outcomes == {"test_broken.py": "error", "test_add": "failed", "test_sub": "passed",
                        "test_skipped": "skipped", "test_known_bug": "xfail", "test_fixed_since": "xpass",
                        "test_setup_error": "error", "test_download": "failed"}
    by_name = {t.nodeid.split("::")[-1].split("/")[-1]: t for t in report.tests}
    assert by_name["test_add"].message == "assert 0 == 4"
    assert "assert add(2, 2) == 4" in by_name["test_add"].traceback
    assert "collection failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'" in \
        by_name["test_broken.py"].message
    assert "RuntimeError: the fixture broke" in by_name["test_setup_error"].message
    assert by_name["test_skipped"].message.endswith("not today")
    assert report.tried_network and report.network_attempts[0].target == "example.com:443"
    assert "the sandbox has no network" in by_name["test_download"].message
    assert report.totals == {"passed": 1, "failed": 2, "error": 2, "skipped": 1, "xfail": 1, "xpass": 1, "total": 8}
    assert report.image == sandbox_image and report.shards[0].status == "ok" and report.shards[0].exit_code == 1
    assert report.shards[0].cpu_s and report.shards[0].max_rss_mb
    lines = out.splitlines()
    assert lines[-1].startswith("2 failed, 2 error, 1 passed, 1 skipped, 1 xfail, 1 xpass in ")
    assert any(line.startswith("FAILED tests/test_calc.py::test_add - assert 0 == 4") for line in lines)
    assert any(line.startswith("ERROR tests/test_broken.py - collection failed") for line in lines)
    assert any(line.startswith("slowest: ") for line in lines)
    junit = ET.parse(tmp_path / "r.xml").getroot()
    assert (junit.get("tests"), junit.get("failures"), junit.get("errors")) == ("8", "2", "2")
    assert ci_containers() == []


def test_only_passing_tests_exit_zero_and_pytest_args_pass_through(tmp_path: Path, sandbox_image: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from lllm.cli import main

    project = write(tmp_path / "proj", SMALL)
    assert main(["test", str(project), "--timeout", "300", "--", "-k", "sub or skipped", "tests/test_calc.py"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 passed, 1 skipped in ")


def test_shards_split_by_recorded_durations_and_merge(tmp_path: Path, sandbox_image: str) -> None:
    from lllm.ci import run_tests

    body = "\n".join(f"def test_{i}():\n    assert {i} != 3\n" for i in range(6))
    project = write(tmp_path / "proj", {"test_many.py": body})
    recorded = {f"test_many.py::test_{i}": (5.0 if i == 2 else 0.1) for i in range(6)}
    report = run_tests(project, shards=2, previous=recorded)
    assert report.exit_code == 1 and report.totals["passed"] == 5 and report.totals["failed"] == 1
    shard_of = {t.nodeid: t.shard for t in report.tests}
    assert [n for n, s in shard_of.items() if s == shard_of["test_many.py::test_2"]] == ["test_many.py::test_2"]
    assert sorted(s.assigned for s in report.shards) == [1, 5]
    assert all(s.status == "ok" for s in report.shards) and len(report.shards) == 2
    again = json.loads(report.model_dump_json())
    assert {t["nodeid"] for t in again["tests"]} == set(recorded)
    assert ci_containers() == []
