"""Page snapshots: Playwright's aria snapshot with element refs, capped to a token budget, and ref lookup.

The model sees the page as Playwright's accessibility snapshot in its "ai" mode (`page.aria_snapshot(mode=
"ai")`, Playwright 1.50+), where every element it can act on carries a ref: `button "Pay" [ref=e12]`, and
elements inside iframes `f1e3`. A ref is resolved with the `aria-ref=e12` selector engine; a ref the page no
longer has raises `StaleRef` with a fresh snapshot attached, so the model can pick again.

Snapshots are capped to a token budget (about 4 characters a token) at a line boundary, with a marker that
says what was cut and how to see the rest (`snapshot(start_line=...)`, `find_text(...)`); single lines
longer than the budget (a 5 MB paragraph) are cut too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lllm.errors import StaleRef, UsageError

__all__ = ["CHARS_PER_TOKEN", "REF_PATTERN", "CappedText", "cap_snapshot", "find_lines", "take_snapshot", "ref_locator"]

CHARS_PER_TOKEN = 4
"""The token estimate used for budgets (characters per token)."""
REF_PATTERN = re.compile(r"^(?:f\d+)?e\d+$")
"""What a ref looks like: `e12`, or `f1e3` inside a frame."""
_MAX_LINE = 2000


@dataclass(frozen=True)
class CappedText:
    """A snapshot cut to a budget."""

    text: str
    """What the model sees, with the marker when something was cut."""
    truncated: bool
    """True when lines were left out or cut."""
    total_lines: int
    """Lines in the whole snapshot."""
    shown: tuple[int, int]
    """The 1-based first and last line shown."""
    total_tokens: int
    """The whole snapshot's size in estimated tokens."""


async def take_snapshot(page: Any, *, timeout_s: float) -> str:
    """Playwright's aria snapshot of the page with refs (call on the driver loop).

    Args:
        page: A Playwright async `Page`.
        timeout_s: How long to wait for the page to answer.
    """
    return str(await page.aria_snapshot(mode="ai", timeout=timeout_s * 1000))


def cap_snapshot(snapshot: str, *, budget_tokens: int, start_line: int = 1) -> CappedText:
    """Cut a snapshot to `budget_tokens`, from `start_line` on, at a line boundary, with a marker.

    Args:
        snapshot: The full snapshot text.
        budget_tokens: The budget in estimated tokens.
        start_line: The 1-based line to start from (to page through a long snapshot).

    Returns:
        The capped text and what was shown.
    """
    lines = snapshot.splitlines()
    total = len(lines)
    total_tokens = len(snapshot) // CHARS_PER_TOKEN + 1
    budget = max(200, budget_tokens) * CHARS_PER_TOKEN
    start = min(max(1, start_line), max(total, 1))
    out: list[str] = []
    used = 0
    cut_lines = 0
    last = start - 1
    for index in range(start - 1, total):
        line = lines[index]
        if len(line) > _MAX_LINE:
            line = f"{line[:_MAX_LINE]} [... line cut: {len(line):,} characters]"
            cut_lines += 1
        if used + len(line) + 1 > budget and out:
            break
        if used + len(line) + 1 > budget:  # a single line over the whole budget
            line = line[: max(0, budget - 80)] + " [... line cut]"
            cut_lines += 1
        out.append(line)
        used += len(line) + 1
        last = index + 1
    truncated = start > 1 or last < total or cut_lines > 0
    text = "\n".join(out)
    if truncated:
        notes = [f"[snapshot cut to ~{budget_tokens} tokens: showing lines {start}-{last} of {total} "
                 f"(the whole page is ~{total_tokens:,} tokens)"]
        if last < total:
            notes.append(f"; call snapshot(start_line={last + 1}) for more, or find_text(...) to search it")
        if cut_lines:
            notes.append(f"; {cut_lines} long line(s) were cut")
        text += "\n" + "".join(notes) + "]"
    return CappedText(text=text, truncated=truncated, total_lines=total, shown=(start, last), total_tokens=total_tokens)


def find_lines(snapshot: str, query: str, *, limit: int = 30, context: int = 0) -> str:
    """The snapshot lines containing `query` (case-insensitive), numbered, for searching a long page.

    Args:
        snapshot: The full snapshot.
        query: Text to look for.
        limit: At most this many matches.
        context: Lines of context around each match.
    """
    if not query.strip():
        raise UsageError("find_text needs a non-empty `text` to look for", text=query)
    lines = snapshot.splitlines()
    needle = query.lower()
    hits = [i for i, line in enumerate(lines) if needle in line.lower()]
    if not hits:
        return f"no line of the page snapshot contains {query!r}"
    out: list[str] = [f"{len(hits)} line(s) contain {query!r}" + (f"; the first {limit}:" if len(hits) > limit else ":")]
    shown: set[int] = set()
    for i in hits[:limit]:
        for j in range(max(0, i - context), min(len(lines), i + context + 1)):
            if j not in shown:
                shown.add(j)
                text = lines[j] if len(lines[j]) <= 400 else lines[j][:400] + " [...]"
                out.append(f"{j + 1}: {text}")
    return "\n".join(out)


async def ref_locator(page: Any, ref: str, *, timeout_s: float) -> Any:
    """The locator for a snapshot ref, checked to exist (call on the driver loop).

    Raises:
        UsageError: `ref` is not shaped like a ref.
        StaleRef: The page no longer has that element; `snapshot` holds a fresh snapshot.
    """
    ref = ref.strip().removeprefix("ref=").strip("[]")
    if not REF_PATTERN.match(ref):
        raise UsageError(
            f"{ref!r} is not an element ref: use a ref from the snapshot such as 'e12' (or 'f1e3' inside a frame), "
            "or pass `selector` or `x`/`y` instead",
            ref=ref,
        )
    locator = page.locator(f"aria-ref={ref}")
    if await locator.count() == 0:
        fresh = await take_snapshot(page, timeout_s=timeout_s)
        raise StaleRef(
            f"the element ref {ref!r} is not on the page any more (the page changed since that snapshot); "
            "use a ref from the fresh snapshot below",
            ref=ref,
            snapshot=fresh,
        )
    return locator
