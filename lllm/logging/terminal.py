"""Terminal logging: `setup_logging()` puts one stderr handler on the `lllm` logger, `ColoredFormatter` colours a
line by its level.

lllm logs through the standard `logging` module under the `lllm` logger (`lllm.agent`, `lllm.trace_sinks`, ...);
nothing is printed until the application configures logging, this way or any other.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from lllm._textsafe import neutralise

__all__ = ["ColoredFormatter", "setup_logging"]

DEFAULT_FORMAT = "%(levelname)-8s %(name)s - %(message)s"

_COLOURS = {
    logging.DEBUG: "\033[90m",        # dark grey
    logging.INFO: "\033[32m",         # green
    logging.WARNING: "\033[33m",      # yellow
    logging.ERROR: "\033[31m",        # red
    logging.CRITICAL: "\033[1;31m",   # bold red
}
_RESET = "\033[0m"
_HANDLER_MARK = "_lllm_setup_logging"


class ColoredFormatter(logging.Formatter):
    """A `logging.Formatter` that colours each line by its level with ANSI codes (DEBUG grey, INFO green,
    WARNING yellow, ERROR red, CRITICAL bold red).

    The formatted text has its own control characters made visible first (a log line may quote what sandboxed
    code printed), so the only escape sequences that reach the terminal are the colours.

    Args:
        fmt, datefmt, style: as for `logging.Formatter`.
        color: False formats plainly (the same text, no codes).
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: Any = "%", *,
                 color: bool = True) -> None:
        super().__init__(fmt, datefmt, style)
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        text = neutralise(super().format(record))
        if not self.color:
            return text
        at_or_below = [k for k in _COLOURS if k <= record.levelno]  # custom levels take the colour below them
        return f"{_COLOURS[max(at_or_below)]}{text}{_RESET}" if at_or_below else text


def setup_logging(level: str | int = "INFO", fmt: str | None = None, color: bool = True, *,
                  stream: IO[str] | None = None) -> logging.Logger:
    """Show lllm's log on stderr: one handler on the `lllm` logger, at `level`.

    Calling it again replaces its own handler (never adds a second one) and sets the level again; handlers
    the application added itself are left alone.

    Args:
        level: "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL" (any case) or a number.
        fmt: the line format (default `"%(levelname)-8s %(name)s - %(message)s"`).
        color: colour lines by level (`ColoredFormatter`); False for plain text (CI logs).
        stream: where to write (default `sys.stderr`).

    Returns:
        The `lllm` logger.

    Raises:
        ValueError: `level` is not a level name or number.
    """
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise ValueError(f"setup_logging: unknown level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    logger = logging.getLogger("lllm")
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(ColoredFormatter(fmt or DEFAULT_FORMAT, color=color))
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(numeric)
    return logger
