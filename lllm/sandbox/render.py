"""The model's view of one cell, within one cap: header, output, error and notices fitted together.

`render_cell(result, max_chars=..., header=...)` is the one place that turns a `CellResult` into the text a
model reads. Everything it returns fits in `max_chars`, and it cuts in this order: the middle of the output
first (its head and tail stay, with a marker saying how much went), then the start of the error (its last
lines say what happened), never the header or the notices (a timeout or a restart must always be seen). The
sandbox renders `CellResult.text` with it (no header); a tool that wants a header of its own (a status line)
renders again with it instead of cutting the sandbox's text a second time.
"""

from __future__ import annotations

from typing import Any

_NOTICE_MAX = 400
"""One notice is at most this long (they are short; a hostile one cannot crowd out the others)."""


def fit_output(head: str, tail: str, total: int, limit: int, marker: str | None = None) -> tuple[str, int]:
    """A text kept as `head` and `tail` (of `total` characters in all) within `limit` characters: whole when it
    fits, else its start and end around a marker. Returns the text and how many characters were left out.

    Args:
        marker: the line put where the middle was cut (default: `[... N characters of output omitted ...]`).
    """
    contiguous = len(head) + len(tail) == total
    if total <= limit and contiguous:
        return head + tail, 0
    if contiguous:
        whole = head + tail
        head, tail = whole, whole
    line_room = len(marker) if marker is not None else 48
    avail = max(0, limit - line_room - 2)
    head_n = min(len(head), int(avail * 0.7))
    tail_n = min(len(tail), avail - head_n)
    kept_head = head[:head_n]
    kept_tail = tail[len(tail) - tail_n :] if tail_n else ""
    omitted = total - len(kept_head) - len(kept_tail)
    line = marker if marker is not None else f"[... {omitted:,} characters of output omitted ...]"
    text = f"{kept_head}\n{line}\n{kept_tail}"
    if len(text) > limit:  # a marker longer than the room
        text = text[:limit]
    return text, omitted


def render_cell(result: Any, *, max_chars: int, header: str = "", marker: str | None = None) -> str:
    """The model's text for `result` (a `CellResult`) in at most `max_chars` characters (see the module
    docstring).

    Args:
        result: the cell's result.
        max_chars: the cap, everything included.
        header: a first line of the caller's (a status line); kept whole unless it alone passes half the cap
            (or what the notices leave).
        marker: the line put where output was cut (default: one that says how many characters were left out).
    """
    notices = _fit_notices([f"[sandbox: {note}]" for note in result.notices], max_chars)
    fixed = sum(len(n) + 1 for n in notices)
    header_room = min(max_chars // 2, max_chars - fixed - 1)
    header = header if len(header) <= header_room else header[: max(0, header_room - 1)] + "…" * (header_room > 0)
    if header:
        fixed += len(header) + 1
    room = max(0, max_chars - fixed)
    parts = _pieces(result)
    error = parts["error"]
    body_total = parts["total"]
    body_room = room
    if error:
        error_room = room // 2 if body_total else room
        if len(error) > error_room:
            cut = "[... traceback start omitted ...]\n"
            keep = max(0, error_room - len(cut))
            error = (cut + error[len(error) - keep :])[:error_room] if keep else ""
        body_room = max(0, room - len(error) - (1 if error else 0))
    body = ""
    if body_total:
        body, _ = fit_output(parts["head"], parts["tail"], body_total, body_room, marker)
        body = body.rstrip("\n")
        if not body.strip():
            body = ""
    pieces = [p for p in (header, body, error) if p] + notices
    return "\n".join(pieces)[:max_chars]


def _fit_notices(notices: list[str], max_chars: int) -> list[str]:
    """In order (the kernel's fate comes first), each capped, as many as fit in the cap; then a line saying how
    many more were left out, if that fits. The first one is always kept, cut only if it alone passes the cap."""
    kept: list[str] = []
    used = 0
    for i, note in enumerate(notices):
        if len(note) > _NOTICE_MAX:
            note = note[: _NOTICE_MAX - 2] + "…]"
        if used + len(note) + 1 <= max_chars:
            kept.append(note)
            used += len(note) + 1
            continue
        if not kept:
            kept.append(note[: max(0, max_chars - 2)] + "…]")
            break
        more = f"[sandbox: {len(notices) - i} more notice{'s' if len(notices) - i > 1 else ''} left out]"
        if used + len(more) + 1 <= max_chars:
            kept.append(more)
        break
    return kept


def _pieces(result: Any) -> dict[str, Any]:
    """The output (head, tail, total) and error text behind a result's `text`: kept by the sandbox as it
    collected the cell; for a result built by hand (FakeSandbox), its `text` stands for the output."""
    pieces = getattr(result, "_view", None)
    if pieces:
        return pieces
    text = result.text or ""
    return {"head": text, "tail": "", "total": len(text), "error": ""}


__all__ = ["fit_output", "render_cell"]
