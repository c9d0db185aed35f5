"""Collecting one cell's output as it streams: sanitised and capped on arrival, then the `CellResult`.

`OutputCollector.add()` takes each IOPub message of the cell as it arrives and keeps at most a bounded amount
of it (the head of each stream up to `max_stored_chars`; for the model's text a head and a tail), so a cell
that prints a gigabyte costs the host a few megabytes while the loop keeps draining. Display bundles over
`max_display_bytes` are dropped with a notice, and so is what passes the cell's and the session's budgets
(`RecordLimits`, counted in a `RecordBudget` the sandbox keeps for its whole life).

Everything is sanitised here, once, because kernel code can send any signed message: text with lone
surrogates (which no UTF-8 writer accepts: not the notebook, not the SQLite log) gets U+FFFD in their place,
display values that are not text are coerced to text, fields of the wrong type are dropped, and each kind of
malformed message is reported once in a notice. What leaves this module can be written anywhere.
`finish()` builds the `CellResult`, whose `text` comes from `lllm.sandbox.render.render_cell`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from lllm.sandbox._text import clean_text, cut_middle
from lllm.sandbox.base import CellImage, CellResult, CellStatus, RecordLimits
from lllm.sandbox.render import fit_output, render_cell

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
_MAX_DEPTH = 64
_ENAME_MAX = 200


def clean_json(value: Any, depth: int = 0) -> Any:
    """A JSON value with every string (keys too) cleaned; nesting deeper than 64 becomes a text note."""
    if isinstance(value, str):
        return clean_text(value)
    if depth >= _MAX_DEPTH:
        return "[nested too deep to keep]"
    if isinstance(value, dict):
        return {clean_text(k): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(value)


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def clean_bundle(data: dict[Any, Any]) -> tuple[dict[str, Any], int]:
    """A MIME bundle that nbformat accepts: str keys, text values (a list of str is joined; anything else is
    coerced to its JSON text), any JSON under `application/*json`. Returns it and how many entries had to be
    coerced or dropped."""
    bundle: dict[str, Any] = {}
    bad = 0
    for key, value in data.items():
        if not isinstance(key, str) or not key or len(key) > 255:
            bad += 1
            continue
        key = clean_text(key)
        if _is_json_mime(key):
            bundle[key] = clean_json(value)
        elif isinstance(value, str):
            bundle[key] = clean_text(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            bundle[key] = clean_text("".join(value))
        else:
            bad += 1
            try:
                bundle[key] = clean_text(json.dumps(clean_json(value)))
            except (TypeError, ValueError):
                bundle[key] = clean_text(repr(value)[:10_000])
    return bundle, bad


def bundle_size(data: dict[str, Any]) -> int:
    """About how many bytes a bundle takes (its text values' lengths; JSON values as JSON text)."""
    size = 0
    for value in data.values():
        if isinstance(value, (str, bytes)):
            size += len(value)
        else:
            try:
                size += len(json.dumps(value))
            except (TypeError, ValueError):
                size += len(repr(value))
    return size


class RecordBudget:
    """What a sandbox's cells may still store over its whole life (`RecordLimits.session_*`)."""

    def __init__(self, limits: RecordLimits) -> None:
        self.limits = limits
        self.stored_chars = 0
        self.display_bytes = 0

    def take_chars(self, n: int) -> int:
        """Reserve up to `n` characters; return how many were granted."""
        granted = max(0, min(n, self.limits.session_stored_chars - self.stored_chars))
        self.stored_chars += granted
        return granted

    def take_display(self, n: int) -> bool:
        """Reserve `n` display bytes, all or nothing."""
        if self.display_bytes + n > self.limits.session_display_bytes:
            return False
        self.display_bytes += n
        return True


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
        return fit_output(self.head, self.tail, self.total, limit)


class _Stream:
    """One stored stream (stdout or stderr): the first `cap` characters (as far as the session's budget goes)
    and a count of the rest."""

    def __init__(self, cap: int, budget: RecordBudget | None) -> None:
        self.cap = cap
        self.budget = budget
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0
        self.session_limited = False

    def add(self, text: str) -> None:
        self.total += len(text)
        room = self.cap - self.kept
        if room > 0:
            piece = text[:room]
            if self.budget is not None:
                granted = self.budget.take_chars(len(piece))
                if granted < len(piece):
                    self.session_limited = True
                    piece = piece[:granted]
            if piece:
                self.parts.append(piece)
                self.kept += len(piece)

    @property
    def text(self) -> str:
        return "".join(self.parts)



class OutputCollector:
    """Accumulates one cell's IOPub messages, sanitised and under caps; see the module docstring.

    Args:
        max_output_chars: cap of `CellResult.text`.
        max_stored_chars: cap of each of `stdout` and `stderr` as stored in the result.
        max_display_bytes: a display or result bundle larger than this is dropped with a notice.
        record_limits: the cell's budgets for displays, images and errors (default `RecordLimits()`).
        budget: the session's budget, shared by every cell of one sandbox (None: no session budget).
        listen: `listen(kind, value)` is handed each piece as it arrives, cleaned, before any cap on what is kept:
            `("stdout" | "stderr", text)` and `("display", bundle)` (displays within `max_display_bytes`).
    """

    def __init__(self, *, max_output_chars: int, max_stored_chars: int, max_display_bytes: int,
                 record_limits: RecordLimits | None = None, budget: RecordBudget | None = None,
                 listen: Callable[[str, Any], None] | None = None) -> None:
        self.listen = listen
        self.max_output_chars = max_output_chars
        self.max_display_bytes = max_display_bytes
        self.limits = record_limits or (budget.limits if budget is not None else RecordLimits())
        self.budget = budget
        self.stdout = _Stream(max_stored_chars, budget)
        self.stderr = _Stream(max_stored_chars, budget)
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
        self.fate: list[str] = []
        """Notices of what happened to the kernel (timeout, death, restart): rendered before all others."""
        self.truncated = False
        self._display_bytes = 0
        self._once: set[str] = set()
        self._malformed: dict[str, int] = {}

    # -- intake -----------------------------------------------------------------------------------------------
    def add(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """Take one IOPub message of this cell (already matched on its parent msg_id). Never raises for what
        the message holds: a field of the wrong type is dropped and counted (see `malformed`)."""
        if not isinstance(content, dict):
            self.malformed(f"a {msg_type} message whose content is not an object")
            return
        if msg_type == "stream":
            text = content.get("text", "")
            if not isinstance(text, str):
                self.malformed("a stream message whose text is not a string")
                text = str(text)
            text = clean_text(text)
            name = "stderr" if content.get("name") == "stderr" else "stdout"
            (self.stderr if name == "stderr" else self.stdout).add(text)
            self.body.add(text)
            if self.listen is not None and text:
                self.listen(name, text)
        elif msg_type in ("display_data", "update_display_data", "execute_result"):
            if msg_type == "execute_result":
                self._count(content.get("execution_count"))
            data = content.get("data")
            if not isinstance(data, dict):
                self.malformed(f"a {msg_type} message whose data is not a MIME bundle")
                return
            meta = content.get("metadata")
            if not isinstance(meta, dict) or not meta:
                meta = metadata if isinstance(metadata, dict) else {}
            self._add_bundle(data, meta, result=msg_type == "execute_result")
        elif msg_type == "error":
            self._add_error(content)
        elif msg_type == "execute_input":
            self._count(content.get("execution_count"))

    def malformed(self, what: str) -> None:
        """Count a message (or a field of one) that was not what the Jupyter protocol says; reported once."""
        self._malformed[what] = self._malformed.get(what, 0) + 1

    def _count(self, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62:
            self.execution_count = value
        elif value is not None:
            self.malformed("an execution_count that is not a number")

    def _note_once(self, key: str, notice: str) -> None:
        if key not in self._once:
            self._once.add(key)
            self.notices.append(notice)

    def _add_error(self, content: dict[str, Any]) -> None:
        cap = self.limits.error_chars
        cut = False
        name = clean_text(content.get("ename", "Error"))[:_ENAME_MAX] or "Error"
        raw = content.get("evalue", "")
        raw = raw if isinstance(raw, str) else str(raw)[: cap + 1]
        value = clean_text(cut_middle(raw, cap // 4))
        cut = len(value) < len(raw)
        lines = content.get("traceback")
        if not isinstance(lines, list):
            if lines is not None:
                self.malformed("an error message whose traceback is not a list")
            lines = []
        kept: list[str] = []
        room = cap - len(value)
        for i, line in enumerate(reversed(lines)):  # the end of a traceback says what happened
            if room <= 0 or i >= 200:
                cut = True
                break
            text = line if isinstance(line, str) else str(line)[: cap + 1]
            short = strip_ansi(clean_text(cut_middle(text, room + 400)))  # colour codes take room until stripped
            short = cut_middle(short, room)
            cut = cut or len(short) < len(strip_ansi(text[: room + 400])) or len(text) > room + 400
            kept.append(short)
            room -= len(short) + 1
        kept.reverse()
        stored = len(value) + sum(len(x) for x in kept)
        if self.budget is not None and self.budget.take_chars(stored) < stored:
            kept, value = kept[-3:], cut_middle(value, 500)
            self._note_once("error-session", "the error's traceback was cut to its last lines: the session's "
                            f"budget for stored output ({self.limits.session_stored_chars:,} characters) is used up")
        if cut:
            self.truncated = True
            self._note_once("error-cap", f"the error's message and traceback were cut to {cap:,} characters")
        self.error_name, self.error_value, self.traceback = name, value, kept

    def add_oversized(self, msg_type: str, size: int) -> None:
        """A message too large to even read was dropped as it arrived (the host's hard cap)."""
        self.truncated = True
        self.notices.append(f"a {msg_type} message of {size / 1e6:.1f} MB was dropped unread: over the sandbox's "
                            f"{self.max_display_bytes / 1e6:.1f} MB limit for one output message")
        self.body.add(f"[{msg_type} of {size / 1e6:.1f} MB dropped]\n")
        if msg_type == "error" and self.error_name is None:
            self.error_name, self.error_value = "Error", f"(its error message of {size / 1e6:.1f} MB was dropped)"

    def _add_bundle(self, data: dict[str, Any], metadata: dict[str, Any], *, result: bool) -> None:
        dropped = metadata.get("lllm_dropped")
        if dropped is not None and not isinstance(dropped, dict):
            dropped = {"mime_types": "?", "bytes": 0}
        bundle, bad = clean_bundle(data)
        if bad:
            self.malformed("a display whose values are not text (coerced to text)")
        size = bundle_size(bundle)
        if dropped or size > self.max_display_bytes:
            self.truncated = True
            kinds = ", ".join(sorted(bundle)) if not dropped else clean_text(dropped.get("mime_types", "?"))[:200]
            nbytes = size if not dropped else dropped.get("bytes", 0)
            nbytes = nbytes if isinstance(nbytes, (int, float)) and not isinstance(nbytes, bool) else 0
            self.notices.append(f"display output ({kinds}, {nbytes / 1e6:.1f} MB) dropped: over the "
                                f"{self.max_display_bytes / 1e6:.1f} MB limit for one display")
            self.body.add(f"[display output of {nbytes / 1e6:.1f} MB dropped: too large]\n")
            return
        if self.listen is not None and not result:
            self.listen("display", bundle)
        if self._display_bytes + size > self.limits.cell_display_bytes:
            self.truncated = True
            self._note_once("cell-displays", "more displays dropped: the cell's displays passed "
                            f"{self.limits.cell_display_bytes / 1e6:.0f} MB in all")
            self.body.add("[display dropped: the cell's display budget is used up]\n")
            return
        if self.budget is not None and not self.budget.take_display(size):
            self.truncated = True
            self._note_once("session-displays", "display dropped: the session's budget for stored displays "
                            f"({self.limits.session_display_bytes / 1e6:.0f} MB) is used up")
            self.body.add("[display dropped: the session's display budget is used up]\n")
            return
        self._display_bytes += size
        images = [CellImage(mime=mime, data=bundle[mime]) for mime in _IMAGE_MIMES
                  if isinstance(bundle.get(mime), str) and (mime == "image/svg+xml" or _BASE64.fullmatch(bundle[mime]))][:1]
        if images and len(self.images) >= self.limits.cell_images:
            self.truncated = True
            self._note_once("cell-images", f"only the first {self.limits.cell_images} images of the cell are "
                            "shown; the others are kept in the notebook")
            images = []
        self.images.extend(images)
        plain = bundle.get("text/plain")
        line = plain if isinstance(plain, str) else ""
        if images:
            line = f"{line} [{images[0].mime}]".strip()
        if result:
            self.result = plain if isinstance(plain, str) else None
            self.result_data = bundle
        else:
            self.displays.append(bundle)
        if line:
            self.body.add(line + "\n")

    # -- outcome ----------------------------------------------------------------------------------------------
    def finish(self, *, status: CellStatus, duration_s: float, timeout_action: str | None = None,
               restarted: bool = False, state_lost: bool = False) -> CellResult:
        """Build the `CellResult`; `text` holds the output, then the error, then the notices, within the cap."""
        for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream.total > stream.kept:
                self.truncated = True
                why = (f" (the session's budget for stored output, {self.limits.session_stored_chars:,} characters, "
                       "is used up)" if stream.session_limited else "")
                self.notices.append(f"{name}: kept the first {stream.kept:,} of {stream.total:,} characters{why}")
        if self._malformed:
            count = sum(self._malformed.values())
            kinds = "; ".join(f"{what} (x{n})" if n > 1 else what for what, n in list(self._malformed.items())[:3])
            self.notices.append(f"the kernel sent {count} malformed message{'s' if count > 1 else ''} or field"
                                f"{'s' if count > 1 else ''}, dropped or coerced: {kinds}")
        error_text = ""
        if self.error_name:
            error_text = "\n".join(self.traceback) if self.traceback else f"{self.error_name}: {self.error_value}"
        _, omitted = self.body.render(self.max_output_chars)
        if omitted:
            self.truncated = True
        result = CellResult(
            status=status, stdout=self.stdout.text, stderr=self.stderr.text, result=self.result,
            result_data=self.result_data, display_data=self.displays, images=self.images,
            error_name=self.error_name, error_value=self.error_value, traceback=self.traceback,
            execution_count=self.execution_count, duration_s=round(duration_s, 6), truncated=self.truncated,
            output_chars=self.stdout.total + self.stderr.total, timeout_action=timeout_action,
            restarted=restarted, state_lost=state_lost, notices=self.fate + self.notices,
        )
        result._view = {"head": self.body.head, "tail": self.body.tail, "total": self.body.total,
                        "error": error_text}
        result.text = render_cell(result, max_chars=self.max_output_chars)
        return result
