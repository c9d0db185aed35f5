"""Helpers lllm-core's docs import from `lllm.utils`.

`find_all_xml_tags_sorted(text)`: every `<tag>...</tag>` block of a model's answer, in the order they appear
(what a notebook-style parser needs to run `<python_cell>`s and keep `<markdown_cell>`s in sequence).
For the parsed tags of a prompt's answer, use `DefaultTagParser` (`lllm.core.prompt`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["find_all_xml_tags_sorted"]

_BLOCK = re.compile(r"<([A-Za-z0-9_]+)>(.*?)</\1>", re.S)


def find_all_xml_tags_sorted(text: str) -> list[dict[str, Any]]:
    """Every `<tag>content</tag>` block of `text`, in order of position.

    Returns:
        `[{"tag": name, "content": the text inside (stripped), "pos": where it starts, "start": same,
        "end": where it ends}]`. Blocks do not nest: an inner block of the same name ends the outer one.
    """
    if not isinstance(text, str):
        raise TypeError(f"find_all_xml_tags_sorted takes a str, got {type(text).__name__}")
    return [{"tag": m.group(1), "content": m.group(2).strip(), "pos": m.start(), "start": m.start(),
             "end": m.end()} for m in _BLOCK.finditer(text)]
