"""Reading what the guest plugin reports, as hostile input: the tests it runs can write anything to the same
stream. Only whole lines that start with the run's prefix and nonce are taken; each is size-capped, parsed as
JSON and validated field by field; the number of records is capped; everything else is kept as a short tail of
pytest's own output."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from lllm.ci.report import MESSAGE_CHARS, TRACEBACK_CHARS

PREFIX = "\x1elllm-ci "
MAX_LINE_CHARS = 64 * 1024
"""A record line longer than this is dropped (the plugin writes at most ~10 KB: two capped texts)."""
MAX_RECORDS = 200_000
MAX_NODEID_CHARS = 2000
MAX_NET_ATTEMPTS = 200
TAIL_CHARS = 4000
OUTCOMES = ("passed", "failed", "error", "skipped", "xfail", "xpass")


def cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def _text(value: Any, limit: int) -> str:
    return cut_middle(value, limit) if isinstance(value, str) else ""


def _nodeid(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NODEID_CHARS and "\n" not in value:
        return value
    return None


def _number(value: Any, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value <= high else None


@dataclass
class GuestReport:
    """What one pytest run in a sandbox reported (validated)."""

    assigned: list[str] | None = None
    collected: int | None = None
    started: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    collect_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    network: list[tuple[str, str]] = field(default_factory=list)
    hung: str | None = None
    end: dict[str, Any] | None = None
    dropped: int = 0
    """Record lines refused: too long, not JSON, wrong fields, or past `MAX_RECORDS`."""
    tail: str = ""

    @property
    def running(self) -> str | None:
        """The test that started last and never reported its end."""
        for nodeid in reversed(self.started):
            return None if nodeid in self.results else nodeid
        return None


class GuestReader:
    """Feed it the command's stdout as it arrives (`feed`), then `close()`; `report` holds what was valid."""

    def __init__(self, nonce: str) -> None:
        self.marker = PREFIX + nonce + " "
        self.report = GuestReport()
        self._partial = ""
        self._records = 0
        self._tail = ""
        self._assigned: set[str] = set()

    def feed(self, text: str) -> None:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE_CHARS + len(self.marker):  # a line without end: keep only its tail
            self._note_other(self._partial[:-MAX_LINE_CHARS])
            self._partial = self._partial[-MAX_LINE_CHARS:]
            if self._partial.startswith(self.marker):
                self._partial = self._partial[1:]
        for line in lines:
            self._line(line)

    def close(self) -> GuestReport:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        self.report.tail = self._tail[-TAIL_CHARS:]
        return self.report

    def _note_other(self, line: str) -> None:
        self._tail = (self._tail + line + "\n")[-TAIL_CHARS:]

    def _line(self, line: str) -> None:
        if not line.startswith(self.marker):
            if line.strip():
                self._note_other(line)
            return
        body = line[len(self.marker):]
        self._records += 1
        if self._records > MAX_RECORDS or len(body) > MAX_LINE_CHARS:
            self.report.dropped += 1
            return
        try:
            event = json.loads(body)
        except ValueError:
            self.report.dropped += 1
            return
        if not isinstance(event, dict) or not self._take(event):
            self.report.dropped += 1

    def _take(self, event: dict[str, Any]) -> bool:
        report = self.report
        kind = event.get("ev")
        if kind in ("start", "result", "net", "hung") and _nodeid(event.get("nodeid")) not in self._assigned:
            return False  # only tests pytest collected for this shard: a record cannot add a test
        if kind == "start":
            nodeid = _nodeid(event.get("nodeid"))
            if nodeid is None:
                return False
            report.started.append(nodeid)
            return True
        if kind == "result":
            nodeid = _nodeid(event.get("nodeid"))
            outcome = event.get("outcome")
            duration = _number(event.get("duration_s"), 1e7)
            if nodeid is None or outcome not in OUTCOMES or duration is None:
                return False
            report.results[nodeid] = {"outcome": outcome, "duration_s": duration,
                                      "message": _text(event.get("message"), MESSAGE_CHARS),
                                      "traceback": _text(event.get("traceback"), TRACEBACK_CHARS)}
            return True
        if kind == "assigned":
            ids = event.get("nodeids")
            collected = _number(event.get("collected"), 1e7)
            if report.assigned is not None or not isinstance(ids, list) or collected is None:
                return False
            valid = [n for n in map(_nodeid, ids) if n is not None]
            if len(valid) != len(ids) or len(valid) > MAX_RECORDS:
                return False
            report.assigned, report.collected = valid, int(collected)
            self._assigned = set(valid)
            return True
        if kind == "collect_error":
            nodeid = _nodeid(event.get("nodeid"))
            if nodeid is None:
                return False
            report.collect_errors[nodeid] = {"message": _text(event.get("message"), MESSAGE_CHARS),
                                             "traceback": _text(event.get("traceback"), TRACEBACK_CHARS)}
            return True
        if kind == "net":
            nodeid, target = _nodeid(event.get("nodeid")), event.get("target")
            if nodeid is None or not isinstance(target, str):
                return False
            if len(report.network) < MAX_NET_ATTEMPTS and (nodeid, target[:200]) not in report.network:
                report.network.append((nodeid, target[:200]))
            return True
        if kind == "hung":
            nodeid = _nodeid(event.get("nodeid"))
            if nodeid is None:
                return False
            report.hung = nodeid
            return True
        if kind == "end":
            status = event.get("exitstatus")
            if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 255:
                return False
            report.end = {"exitstatus": status, "cpu_s": _number(event.get("cpu_s"), 1e9),
                          "max_rss_kb": _number(event.get("max_rss_kb"), 1e12)}
            return True
        return False
