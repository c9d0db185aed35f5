"""Collecting one cell's output as it streams: caps applied on arrival, and the model's capped `text` view.

`OutputCollector.add()` takes each IOPub message of the cell as it arrives and keeps at most a bounded amount
of it (the head of each stream up to `max_stored_chars`; for the model's text a head and a tail), so a cell
that prints a gigabyte costs the host a few megabytes while the loop keeps draining. Display bundles over
`max_display_bytes` are dropped with a notice. `finish()` builds the `CellResult`.
"""

from __future__ import annotations

import re
from typing import Any

from lllm.sandbox.base import CellImage, CellResult, CellStatus

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython tracebacks are coloured)."""
    return _ANSI.sub("", text)


class _HeadTail:
    """Keeps the first `cap` and the last `cap` characters of a long text, and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = ""
        self.tail = ""
        self.total = 0

    def add(self, text: str) -> None:
        if not text:
            return
        self.total += len(text)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += text[:room]
            text = text[room:]
            if not text:
                return
        self.tail = (self.tail + text)[-self.cap :] if len(text) < self.cap else text[-self.cap :]

    def render(self, limit: int) -> tuple[str, int]:
        """The text within `limit` characters, with a marker where the middle was cut; and how many were cut."""
        kept = len(self.head) + len(self.tail)
        contiguous = kept == self.total
        if self.total <= limit and contiguous:
            return self.head + self.tail, 0
        avail = max(0, limit - 60)  # room for the marker
        head_n = min(len(self.head), int(avail * 0.7))
        tail_n = avail - head_n
        if contiguous:
            whole = self.head + self.tail
            head, tail = whole[:head_n], whole[len(whole) - tail_n :] if tail_n else ""
        else:
            head, tail = self.head[:head_n], self.tail[len(self.tail) - min(tail_n, len(self.tail)) :] if tail_n else ""
        omitted = self.total - len(head) - len(tail)
        return f"{head}\n[... {omitted:,} characters of output omitted ...]\n{tail}", omitted


class _Stream:
    """One stored stream (stdout or stderr): the first `cap` characters and a count of the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0

    def add(self, text: str) -> None:
        self.total += len(text)
        room = self.cap - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OutputCollector:
    """Accumulates one cell's IOPub messages under caps; see the module docstring.

    Args:
        max_output_chars: cap of `CellResult.text`.
        max_stored_chars: cap of each of `stdout` and `stderr` as stored in the result.
        max_display_bytes: a display or result bundle larger than this is dropped with a notice.
    """

    def __init__(self, *, max_output_chars: int, max_stored_chars: int, max_display_bytes: int) -> None:
        self.max_output_chars = max_output_chars
        self.max_display_bytes = max_display_bytes
        self.stdout = _Stream(max_stored_chars)
        self.stderr = _Stream(max_stored_chars)
        self.body = _HeadTail(max_output_chars)
        self.result: str | None = None
        self.result_data: dict[str, Any] = {}
        self.displays: list[dict[str, Any]] = []
        self.images: list[CellImage] = []
        self.error_name: str | None = None
        self.error_value: str | None = None
        self.traceback: list[str] = []
        self.execution_count: int | None = None
        self.notices: list[str] = []
        self.truncated = False
        self._display_bytes = 0

    # -- intake -----------------------------------------------------------------------------------------------
    def add(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """Take one IOPub message of this cell (already matched on its parent msg_id)."""
        if msg_type == "stream":
            text = content.get("text", "")
            if not isinstance(text, str):
                text = str(text)
            (self.stderr if content.get("name") == "stderr" else self.stdout).add(text)
            self.body.add(text)
        elif msg_type in ("display_data", "update_display_data"):
            self._add_bundle(content.get("data") or {}, metadata or content.get("metadata") or {}, result=False)
        elif msg_type == "execute_result":
            self.execution_count = content.get("execution_count", self.execution_count)
            self._add_bundle(content.get("data") or {}, content.get("metadata") or {}, result=True)
        elif msg_type == "error":
            self.error_name = str(content.get("ename", "Error"))
            self.error_value = str(content.get("evalue", ""))
            self.traceback = [strip_ansi(str(line)) for line in content.get("traceback") or []][-200:]
        elif msg_type == "execute_input":
            self.execution_count = content.get("execution_count", self.execution_count)

    def add_oversized(self, msg_type: str, size: int) -> None:
        """A message too large to even decode was dropped before parsing (the host's hard cap)."""
        self.truncated = True
        self.notices.append(f"a {msg_type} message of {size / 1e6:.1f} MB was dropped unread: over the sandbox's "
                            f"{self.max_display_bytes / 1e6:.1f} MB limit for one output message")
        self.body.add(f"[{msg_type} of {size / 1e6:.1f} MB dropped]\n")

    def _add_bundle(self, data: dict[str, Any], metadata: dict[str, Any], *, result: bool) -> None:
        dropped = metadata.get("lllm_dropped") if isinstance(metadata, dict) else None
        size = sum(len(v) if isinstance(v, (str, bytes)) else len(repr(v)) for v in data.values())
        if dropped or size > self.max_display_bytes:
            self.truncated = True
            kinds = ", ".join(sorted(data)) if not dropped else str(dropped.get("mime_types", "?"))
            nbytes = size if not dropped else int(dropped.get("bytes", 0))
            self.notices.append(f"display output ({kinds}, {nbytes / 1e6:.1f} MB) dropped: over the "
                                f"{self.max_display_bytes / 1e6:.1f} MB limit for one display")
            self.body.add(f"[display output of {nbytes / 1e6:.1f} MB dropped: too large]\n")
            return
        if self._display_bytes + size > 8 * self.max_display_bytes:
            self.truncated = True
            self.notices.append("more displays dropped: the cell's displays passed "
                                f"{8 * self.max_display_bytes / 1e6:.0f} MB in all")
            return
        self._display_bytes += size
        images = [CellImage(mime=mime, data=data[mime]) for mime in _IMAGE_MIMES
                  if isinstance(data.get(mime), str)][:1]
        self.images.extend(images)
        plain = data.get("text/plain")
        line = str(plain) if plain is not None else ""
        if images:
            line = f"{line} [{images[0].mime}]".strip()
        if result:
            self.result = None if plain is None else str(plain)
            self.result_data = dict(data)
        else:
            self.displays.append(dict(data))
        if line:
            self.body.add(line + "\n")

    # -- outcome ----------------------------------------------------------------------------------------------
    def finish(self, *, status: CellStatus, duration_s: float, timeout_action: str | None = None,
               restarted: bool = False, state_lost: bool = False) -> CellResult:
        """Build the `CellResult`; `text` holds the output, then the error, then the notices."""
        for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream.total > stream.kept:
                self.truncated = True
                self.notices.append(f"{name}: kept the first {stream.kept:,} of {stream.total:,} characters")
        error_text = ""
        if self.error_name:
            error_text = "\n".join(self.traceback) if self.traceback else f"{self.error_name}: {self.error_value}"
            budget = self.max_output_chars // 2
            if len(error_text) > budget:
                error_text = "[... traceback start omitted ...]\n" + error_text[-budget:]
        body, omitted = self.body.render(max(0, self.max_output_chars - len(error_text)))
        if omitted:
            self.truncated = True
        pieces = [body.rstrip("\n")] if body.strip() else []
        if error_text:
            pieces.append(error_text)
        pieces.extend(f"[sandbox: {note}]" for note in self.notices)
        return CellResult(
            status=status, stdout=self.stdout.text, stderr=self.stderr.text, result=self.result,
            result_data=self.result_data, display_data=self.displays, images=self.images,
            error_name=self.error_name, error_value=self.error_value, traceback=self.traceback,
            execution_count=self.execution_count, duration_s=round(duration_s, 6), truncated=self.truncated,
            output_chars=self.stdout.total + self.stderr.total, timeout_action=timeout_action,  # type: ignore[arg-type]
            restarted=restarted, state_lost=state_lost, notices=list(self.notices), text="\n".join(pieces),
        )
