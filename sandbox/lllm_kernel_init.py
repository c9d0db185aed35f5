"""Kernel start-up, loaded as an IPython extension in every sandbox kernel (Docker and local).

- Installs the guest API (`CALL_API`, `query_api_doc`, `CallAPIError`) with
  `lllm_guest.install(get_ipython().user_ns)` when `lllm_guest` is importable; without it the kernel runs as a
  plain Python kernel.
- Keeps output messages small: stdout/stderr are flushed every `LLLM_FLUSH_BYTES` (default 1 MiB) so one huge
  `print` reaches the host as many modest messages, and a display bundle larger than `LLLM_MAX_DISPLAY_BYTES`
  (default 8 MiB) is replaced by a text notice before it is serialised.
- Keeps error messages small: an exception's message and each traceback line are cut in the middle to half of
  `LLLM_MAX_ERROR_CHARS` (default 20,000) and the traceback to its last 200 lines before the `error` message
  is sent, so a 10 MB exception message costs neither side 10 MB (and keeps its type and its end).
- Caps one cell's stream output at `LLLM_MAX_CELL_OUTPUT` characters (default 16 Mi): past that, writes are
  counted and discarded in the kernel, and a notice at the end of the cell says how much. A cell that prints
  a gigabyte then finishes at the kernel's speed instead of queueing a gigabyte of messages in the
  container's memory (ZMQ's PUB socket never blocks the writer).
These protect the kernel's own memory and time; the host enforces its own caps regardless, since code in the
kernel can undo anything done here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

FLUSH_BYTES = int(os.environ.get("LLLM_FLUSH_BYTES", str(1 << 20)))
MAX_DISPLAY_BYTES = int(os.environ.get("LLLM_MAX_DISPLAY_BYTES", str(8 << 20)))
MAX_CELL_OUTPUT = int(os.environ.get("LLLM_MAX_CELL_OUTPUT", str(16 << 20)))
MAX_ERROR_CHARS = int(os.environ.get("LLLM_MAX_ERROR_CHARS", "20000"))


class _CellBudget:
    """Characters of stream output one cell may still send; reset before each cell."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0
        self.report_to: Any = None

    def reset(self, *args: Any) -> None:
        self.used = 0
        self.dropped = 0

    def take(self, text: str) -> str:
        room = self.limit - self.used
        if len(text) <= room:
            self.used += len(text)
            return text
        kept = text[: max(room, 0)]
        self.used += len(kept)
        self.dropped += len(text) - len(kept)
        return kept

    def report(self, *args: Any) -> None:
        if self.dropped and self.report_to is not None:
            self.report_to(f"\n[lllm sandbox: the cell printed {self.used + self.dropped:,} characters; the "
                           f"kernel sent the first {self.used:,} and discarded the rest]\n")
        self.reset()


_budget = _CellBudget(MAX_CELL_OUTPUT)


def _bundle_size(data: dict[str, Any]) -> int:
    size = 0
    for value in data.values():
        size += len(value) if isinstance(value, (str, bytes)) else len(repr(value))
    return size


def _chunk_stream(stream: Any, limit: int) -> Any:
    """Make `stream.write` count against the cell's budget and flush every `limit` characters (an ipykernel
    OutStream); return the original `write`."""
    original = stream.write
    pending = [0]

    def write(text: str) -> int | None:
        if not isinstance(text, str):
            return original(text)
        size = len(text)
        text = _budget.take(text)
        if not text:
            return size
        if len(text) + pending[0] < limit:
            pending[0] += len(text)
            original(text)
            return size
        for start in range(0, len(text), limit):
            piece = text[start : start + limit]
            original(piece)
            pending[0] += len(piece)
            if pending[0] >= limit:
                stream.flush()
                pending[0] = 0
        return size

    stream.write = write
    return original


def _cap_display(shell: Any, limit: int) -> None:
    pub = shell.display_pub
    original = pub.publish

    def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        size = _bundle_size(data or {})
        if size > limit:
            kinds = ", ".join(sorted(data))
            note = (f"[display output dropped: {kinds}, {size / 1e6:.1f} MB is over the sandbox's "
                    f"{limit / 1e6:.1f} MB limit for one display; save it to a file or make it smaller]")
            data = {"text/plain": note}
            metadata = {"lllm_dropped": {"mime_types": kinds, "bytes": size, "limit": limit}}
        return original(data, metadata, *args, **kwargs)

    pub.publish = publish


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit:,} characters omitted ...]\n"
    keep = max(0, limit - len(marker))
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2) :]


def _cap_errors(shell: Any, limit: int) -> None:
    original = getattr(shell, "_showtraceback", None)
    if original is None:
        return

    def _showtraceback(etype: Any, evalue: Any, stb: Any) -> Any:
        try:
            text = str(evalue)
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
            text = f"<{type(evalue).__name__} whose str() failed>"
        lines = [_cut(line, limit // 2) if isinstance(line, str) else line for line in list(stb or [])[-200:]]
        return original(etype, _cut(text, limit // 2), lines)

    shell._showtraceback = _showtraceback


def wrap_output_streams() -> None:
    """Chunk and budget the kernel's stdout/stderr (again for a branch kernel, which makes new ones)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if hasattr(stream, "flush") and type(stream).__name__ == "OutStream":
            original = _chunk_stream(stream, FLUSH_BYTES)
            if name == "stderr":
                _budget.report_to = original


def load_ipython_extension(shell: Any) -> None:
    """IPython entry point: called once when the kernel starts."""
    wrap_output_streams()
    shell.events.register("pre_execute", _budget.reset)
    shell.events.register("post_execute", _budget.report)
    _cap_display(shell, MAX_DISPLAY_BYTES)
    _cap_errors(shell, MAX_ERROR_CHARS)
    try:
        import lllm_fork  # type: ignore[import-not-found]

        lllm_fork.install(shell)  # sb.fork(): branch kernels
        import lllm_snapshot  # type: ignore[import-not-found]

        lllm_snapshot.install(shell)  # sb.save() / resume()
    except ImportError:
        pass
    try:
        import lllm_guest  # type: ignore[import-not-found]
    except ImportError:
        return
    try:
        lllm_guest.install(shell.user_ns)
    except Exception as exc:  # noqa: BLE001 - a broken guest must not keep the kernel from starting
        print(f"lllm_kernel_init: lllm_guest.install failed: {exc!r}", file=sys.__stderr__)
