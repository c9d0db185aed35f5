"""Parsers: turn a model's text into the `parsed` dict of its message, or raise `ParseError` to ask for a retry.

`DefaultTagParser` finds `<tag>...</tag>` blocks, fenced ```` ```tag ... ``` ```` blocks and `<SIGNAL>` markers.
Any callable `(text, **kwargs) -> dict` is a parser too; `as_parser` wraps one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Callable

from lllm.errors import ConfigError, ParseError

__all__ = ["BaseParser", "DefaultTagParser", "FunctionParser", "as_parser"]


class BaseParser(ABC):
    """A parser: `parse(text, **runtime_args) -> dict`; raising `ParseError` makes the agent retry."""

    @abstractmethod
    def parse(self, content: str, **runtime_args: Any) -> dict[str, Any]:
        """Parse the model's text.

        Args:
            content: The assistant message's text.
            **runtime_args: The turn's prompt arguments, for parsers that check against them.

        Returns:
            A dict; the agent adds the key "raw" (the text) when it is missing.

        Raises:
            ParseError: The text broke the expected format; its message is shown to the model in the retry.
        """

    def __call__(self, content: str, **runtime_args: Any) -> dict[str, Any]:
        return self.parse(content, **runtime_args)


class FunctionParser(BaseParser):
    """Adapts a plain callable `(text, **kwargs) -> dict` to `BaseParser`."""

    def __init__(self, fn: Callable[..., dict[str, Any]]) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionParser({getattr(self.fn, '__name__', self.fn)!r})"

    def parse(self, content: str, **runtime_args: Any) -> dict[str, Any]:
        """Call the wrapped function; it must return a dict."""
        out = self.fn(content, **runtime_args)
        if not isinstance(out, dict):
            raise ConfigError(
                f"parser {getattr(self.fn, '__name__', self.fn)!r} returned {type(out).__name__!r}; a parser must "
                "return a dict (or raise lllm.errors.ParseError to make the model retry)",
                key="parser",
            )
        return out


def as_parser(parser: Any) -> BaseParser | None:
    """A `BaseParser` from a parser or a plain callable (None stays None).

    Raises:
        ConfigError: `parser` is neither.
    """
    if parser is None or isinstance(parser, BaseParser):
        return parser
    if callable(parser):
        return FunctionParser(parser)
    raise ConfigError(
        f"parser must be a BaseParser or a callable (text, **kwargs) -> dict, got {type(parser).__name__!r}",
        key="parser",
    )


class DefaultTagParser(BaseParser):
    """Extracts XML-style tags, fenced markdown blocks and signal markers from the model's text.

    `parse` returns exactly `{"raw": text, "xml_tags": {tag: [contents...]}, "md_tags": {tag: [contents...]},
    "signal_tags": {tag: bool}}`. Every listed tag has an entry (an empty list when absent). A tag in
    `required_xml_tags` / `required_md_tags` that is absent (or only empty) raises `ParseError` naming it and
    showing how to write it, which makes the agent ask the model again.

    Example:
        ```python
        DefaultTagParser(xml_tags=["step", "risk"], required_xml_tags=["step"], signal_tags=["DONE"])
        # "<step>a</step><step>b</step> <DONE>" -> xml_tags={"step": ["a", "b"], "risk": []}, signal DONE=True
        ```
    """

    def __init__(
        self,
        *,
        xml_tags: list[str] | None = None,
        md_tags: list[str] | None = None,
        signal_tags: list[str] | None = None,
        required_xml_tags: list[str] | None = None,
        required_md_tags: list[str] | None = None,
    ) -> None:
        """Configure the tags.

        Args:
            xml_tags: Tags written `<tag>...</tag>` (attributes allowed: `<tag id="1">`).
            md_tags: Fenced blocks written ```` ```tag ... ``` ```` (e.g. "python", "json").
            signal_tags: Markers written `<TAG>` or `<TAG/>`; their value is whether they occur.
            required_xml_tags: XML tags that must occur at least once (extracted even when not in `xml_tags`).
            required_md_tags: Fenced blocks that must occur at least once.

        Raises:
            ConfigError: A tag name is empty or has characters a tag cannot have.
        """
        self.required_xml_tags = _names(required_xml_tags, "required_xml_tags")
        self.required_md_tags = _names(required_md_tags, "required_md_tags")
        self.xml_tags = _merge(_names(xml_tags, "xml_tags"), self.required_xml_tags)
        self.md_tags = _merge(_names(md_tags, "md_tags"), self.required_md_tags)
        self.signal_tags = _names(signal_tags, "signal_tags")
        self._xml = {t: re.compile(rf"<{re.escape(t)}(?:\s[^>]*)?>(.*?)</{re.escape(t)}\s*>", re.S) for t in self.xml_tags}
        self._md = {t: re.compile(rf"```[ \t]*{re.escape(t)}[ \t]*\r?\n(.*?)```", re.S) for t in self.md_tags}
        self._signal = {t: re.compile(rf"<{re.escape(t)}\s*/?>") for t in self.signal_tags}

    def __repr__(self) -> str:
        return (
            f"DefaultTagParser(xml_tags={self.xml_tags!r}, md_tags={self.md_tags!r}, signal_tags={self.signal_tags!r}, "
            f"required_xml_tags={self.required_xml_tags!r}, required_md_tags={self.required_md_tags!r})"
        )

    def parse(self, content: str, **runtime_args: Any) -> dict[str, Any]:
        """Extract the tags; raise `ParseError` listing every required tag that is missing."""
        text = content or ""
        xml = {t: [m.strip() for m in rx.findall(text)] for t, rx in self._xml.items()}
        md = {t: [m.strip() for m in rx.findall(text)] for t, rx in self._md.items()}
        signals = {t: rx.search(text) is not None for t, rx in self._signal.items()}
        errors = [f"missing <{t}>...</{t}>: write it as <{t}>your {t} here</{t}>" for t in self.required_xml_tags
                  if not any(xml[t])]
        errors += [f"missing a ```{t} block: write it as ```{t} on its own line, the content, then ```"
                   for t in self.required_md_tags if not any(md[t])]
        if errors:
            raise ParseError("the answer is missing required parts: " + "; ".join(errors), missing=errors)
        return {"raw": text, "xml_tags": xml, "md_tags": md, "signal_tags": signals}


def _names(tags: list[str] | None, key: str) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str) or not re.fullmatch(r"[A-Za-z_][\w.:-]*", t):
            raise ConfigError(f"{key}: {t!r} is not a valid tag name (letters, digits, '_', '-', '.', ':')", key=key)
        out.append(t)
    return out


def _merge(first: list[str], extra: list[str]) -> list[str]:
    return first + [t for t in extra if t not in first]
