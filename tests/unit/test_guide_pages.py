"""Every example of the user guide is run by a test, or says why not (tests/guide_runner.py, the one runner); the
guide's index links every page and only pages that exist, and the README links the index. This file also runs
the pages about the library itself as a reader would: each in a fresh process and an empty folder, on the
guide's stand-in model (FRESH_PROCESS)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import guide_runner

ROOT = guide_runner.ROOT

FRESH_PROCESS = ["quickstart.md", "agents.md", "prompts.md", "tools.md", "tactics.md", "packages.md", "logging.md",
                 "computer-use.md"]
"""The pages whose `guide-test` is this file."""


@pytest.mark.parametrize("page", FRESH_PROCESS)
def test_the_page_examples_run_in_a_fresh_process(page: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for need in sorted(guide_runner.needs(page)):
        request.getfixturevalue({"docker": "require_docker", "browser": "require_browser"}[need])
    proc = guide_runner.run_in_fresh_process(page, test=__file__, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:] + proc.stdout[-2000:]


def test_the_pages_this_file_runs_are_the_pages_that_name_it() -> None:
    mine = {b.page for p in guide_runner.pages() for b in guide_runner.blocks(p.name)
            if b.run and b.test == "tests/unit/test_guide_pages.py"}
    assert mine == set(FRESH_PROCESS)


def test_the_index_links_every_page_and_only_pages_that_exist() -> None:
    index = (guide_runner.GUIDE / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    pages = {p.name for p in guide_runner.pages()} - {"index.md"}
    assert sorted(pages - linked) == [], "pages the index does not link"
    assert sorted(linked - pages) == [], "the index links pages that do not exist"
    assert "docs/guide/index.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_fresh_process_run_reports_the_failing_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.md").write_text(
        "<!-- guide-test: tests/unit/test_guide_pages.py -->\nIntro.\n\n```python\nx = 1\nprint(x)  # not held to it\n"
        "```\n\n<!-- guide: no-run (a fragment) -->\n```python\nraise SystemExit('not run')\n```\n\n"
        "```python\nassert x == 2, 'x is 1'\n```\n")
    monkeypatch.setattr(guide_runner, "GUIDE", tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    proc = guide_runner.run_in_fresh_process("broken.md", test=__file__, cwd=run)
    assert proc.returncode == 1
    assert "docs/guide/broken.md:14" in proc.stderr and "AssertionError: x is 1" in proc.stderr, proc.stderr
    assert "not run" not in proc.stderr


def test_every_python_block_of_the_guide_is_run_or_marked_not_to_run() -> None:
    problems = []
    for page in guide_runner.pages():
        for block in guide_runner.blocks(page.name):
            where = f"docs/guide/{page.name}:{block.line}"
            if not block.run:
                if len(block.why_not) < 10:
                    problems.append(f"{where}: a no-run mark must say why")
                continue
            if block.test is None:
                problems.append(f"{where}: no `<!-- guide-test: tests/... -->` above it names the test that runs it")
                continue
            test = ROOT / block.test
            if not test.is_file():
                problems.append(f"{where}: its test {block.test} does not exist")
                continue
            source = test.read_text(encoding="utf-8")
            if page.name not in source or "guide_runner" not in source:
                problems.append(f"{where}: {block.test} does not run {page.name} through tests/guide_runner.py")
    assert problems == []


def test_the_runner_reads_marks_sections_and_expected_prints(tmp_path, monkeypatch) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- guide-test: tests/unit/test_guide_pages.py -->\n# T\n\n## One\n```python\nx = 2\n"
                    "print(x * 21)  # 42\n```\n\n<!-- guide: no-run (needs a provider key) -->\n```python\n"
                    "raise SystemExit\n```\n\n## Two\n<!-- guide-test: tests/other.py -->\n```python\ny = 1\n```\n"
                    "```yaml\na: 1\n```\n")
    monkeypatch.setattr(guide_runner, "GUIDE", tmp_path)
    found = guide_runner.blocks("page.md")
    assert [(b.section, b.run, b.test, b.why_not) for b in found] == [
        ("One", True, "tests/unit/test_guide_pages.py", ""), ("One", False, "tests/unit/test_guide_pages.py",
                                                              "needs a provider key"),
        ("Two", True, "tests/other.py", "")]
    scope, printed = guide_runner.run_blocks("page.md", test=__file__)
    assert scope["x"] == 2 and "y" not in scope and printed == "42\n"
    page.write_text(page.read_text().replace("# 42", "# 41"))
    try:
        guide_runner.run_blocks("page.md", test=__file__)
    except AssertionError as exc:
        assert "printed" in str(exc)
    else:
        raise AssertionError("a wrong expected print went unnoticed")
