"""Every example of the user guide is run by a test, or says why not (tests/guide_runner.py, the one runner)."""

from __future__ import annotations

import guide_runner

ROOT = guide_runner.ROOT


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
