"""docs/guide/sandbox.md, section "Fork and save": its examples run as written, against real containers, and
print what the page says they print (`print(...)  # text`)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "sandbox.md"
_EXPECT = re.compile(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$")


def _section_blocks(heading: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.docker
def test_the_fork_and_save_section_runs_as_written(sandbox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLLM_SANDBOX_IMAGE", sandbox_image)
    try:  # the shared runner of the guide's pages (tests/guide_runner.py), where the checkout has it
        import guide_runner  # type: ignore[import-not-found]
    except ImportError:
        guide_runner = None
    if guide_runner is not None:
        guide_runner.run_blocks("sandbox.md", test=__file__)
        return
    blocks = _section_blocks("Fork and save")
    assert len(blocks) == 2
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(PAGE), "exec"), {})
        expected = [m.group(1) for line in code.splitlines() if (m := _EXPECT.match(line))]
        assert out.getvalue().splitlines() == expected
