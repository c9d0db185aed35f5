"""The one runner of the user guide's examples: the ```python blocks of docs/guide/*.md, run as written.

A page says which test runs its blocks with an HTML comment (not shown on the rendered page):
    <!-- guide-test: tests/sandbox/test_guide_sandbox.py -->
at its top, and again before a section when another test runs the blocks from there on (the sandbox page's
package sections need a package index the test starts, for instance). A block that is shown but never run says
so, and why, on the line before it:
    <!-- guide: no-run (it needs a model provider's key) -->
`tests/unit/test_guide_pages.py` checks every page: each ```python block is either run by the test its page
names (which exists and calls this runner for that page) or marked no-run with a reason.

`run_blocks(page, test=__file__)` runs the blocks assigned to the calling test, in order, in one namespace,
with stdout captured; a line `print(...)  # text` must print `text` (so a page shows what its example prints,
and the test holds it to that). Tests with needs of their own (a fake server's address in place of the page's)
use `blocks(page)` and run them their own way.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide"
_FENCE = re.compile(r"^```(\w*)\s*$")
_TEST = re.compile(r"^<!--\s*guide-test:\s*(\S+)\s*-->\s*$")
_NO_RUN = re.compile(r"^<!--\s*guide:\s*no-run\s*(.*?)\s*-->\s*$")
_EXPECT = re.compile(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a guide page."""

    page: str
    lang: str
    line: int
    """1-based line of its opening fence."""
    code: str
    section: str
    """The `## ` heading it is under ('' before the first)."""
    test: str | None
    """The test file that runs it (the nearest `guide-test` comment above it)."""
    run: bool
    """False when marked no-run."""
    why_not: str = ""


def pages() -> list[Path]:
    return sorted(GUIDE.glob("*.md"))


def blocks(page: str, lang: str | None = "python") -> list[Block]:
    """The page's fenced blocks of `lang` (every language when None), in order."""
    lines = (GUIDE / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    test: str | None = None
    section = ""
    no_run: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := _TEST.match(line):
            test = match.group(1)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif match := _NO_RUN.match(line):
            no_run = match.group(1).strip("() ") or "?"
            i += 1
            continue
        elif match := _FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            code = "\n".join(lines[i + 1:end]) + "\n"
            if lang is None or match.group(1) == lang:
                found.append(Block(page, match.group(1), i + 1, code, section, test, no_run is None,
                                   no_run or ""))
            no_run = None
            i = end + 1
            continue
        if line.strip():
            no_run = None  # the mark belongs to the block right after it
        i += 1
    return found


def run_blocks(page: str, *, test: str | None = None, namespace: dict[str, Any] | None = None,
               replace: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Run the page's runnable ```python blocks (those of `test`, a test file's path or `__file__`, when given)
    in order, in one namespace; return it and what they printed. `print(...)  # text` lines are checked."""
    scope: dict[str, Any] = namespace if namespace is not None else {"__name__": f"guide_{Path(page).stem}"}
    mine = _relative(test) if test else None
    printed = io.StringIO()
    ran = 0
    for block in blocks(page):
        if not block.run or (mine is not None and block.test != mine):
            continue
        code = block.code
        for old, new in (replace or {}).items():
            code = code.replace(old, new)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/guide/{page}:{block.line}", "exec"), scope)
        expected = [m.group(1) for m in map(_EXPECT.match, block.code.splitlines()) if m]
        if expected:
            assert out.getvalue().splitlines() == expected, (f"docs/guide/{page}:{block.line} printed",
                                                             out.getvalue().splitlines(), "not", expected)
        printed.write(out.getvalue())
        ran += 1
    assert ran, f"no runnable block of docs/guide/{page} belongs to {mine or 'any test'}"
    return scope, printed.getvalue()


def _relative(test: str) -> str:
    path = Path(test)
    return str(path.resolve().relative_to(ROOT)) if path.is_absolute() else str(path)
