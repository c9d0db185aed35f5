"""Text the sandbox keeps or shows, made safe to store: `clean_text` (lone surrogates replaced) and `cut_middle`
(start and end around a marker). Pure functions shared by the base (records) and the output collector."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["clean_text", "cut_middle"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: Any) -> str:
    """`value` as text that any UTF-8 writer accepts: lone surrogates (from `\\ud800` escapes in JSON) become
    U+FFFD; a value that is not a str is converted with `str()`."""
    text = value if isinstance(value, str) else str(value)
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def cut_middle(text: str, limit: int) -> str:
    """`text` within `limit` characters: its start and end around a marker."""
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit:,} characters omitted ...]\n"
    keep = max(0, limit - len(marker))
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2) :]
