"""Text for a terminal: control characters made visible, so that text from a sandbox cannot drive the terminal.

Cell output, error messages, CALL_API paths and anything a model repeats from them reach the user's terminal
through `lllm demo`, `lllm run`, `lllm logs ...` and the other commands. A terminal acts on control sequences in
that text: OSC 52 writes the clipboard, OSC 8 hides a link behind other text, OSC 0 sets the window title, CSI
sequences move the cursor or clear the screen, a carriage return overwrites a line. `neutralise()` turns every
control character except newline and tab into visible text, never dropping it, so the user sees that
something was there:

- C0 controls and DEL in caret notation: ESC -> `^[`, BEL -> `^G`, CR -> `^M`, DEL -> `^?`;
- C1 controls (U+0080-U+009F, which some terminals read as 8-bit ESC sequences), the bidirectional overrides
  (U+202A-U+202E, U+2066-U+2069, which reorder what is shown) and lone surrogates (which cannot be encoded) as
  `\\uXXXX` (inside a JSON string that is the same character again, so `--json` output keeps its meaning).

`SafeWriter` applies it to everything written to a stream; `lllm.cli.main` wraps stdout and stderr with it,
so every command's printing goes through this one place.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["SafeWriter", "neutralise", "safe_stdio", "safe_writer"]

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"\\u{code:04x}"


def neutralise(text: str) -> str:
    """`text` with every control character but newline and tab made visible (see the module docstring)."""
    return _UNSAFE.sub(_visible, text) if _UNSAFE.search(text) else text


class SafeWriter(io.TextIOBase):
    """A text stream that neutralises what is written and passes it to `stream` (flush, fileno, isatty too)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(neutralise(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)


def safe_writer(stream: IO[str]) -> IO[str]:
    """`stream` wrapped in a `SafeWriter` (unless it already is one)."""
    return stream if isinstance(stream, SafeWriter) else SafeWriter(stream)  # type: ignore[return-value]


@contextlib.contextmanager
def safe_stdio() -> Iterator[None]:
    """Within the block, `sys.stdout` and `sys.stderr` neutralise everything written to them."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = safe_writer(sys.stdout), safe_writer(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
