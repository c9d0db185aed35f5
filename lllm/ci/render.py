"""Views of a `TestReport`: the terminal report of `lllm test`, the compact summary an agent reads, and JUnit
XML for other CI tools. All text in a report came from the sandbox: the terminal view goes through
`lllm._textsafe` when printed (the CLI does it), the XML is made with ElementTree after dropping the characters
XML cannot hold."""

from __future__ import annotations

import re

from lllm.ci.report import TestReport, TestResult

SHORT_TRACEBACK_LINES = 8
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def totals_line(report: TestReport) -> str:
    t = report.totals
    parts = [f"{t[k]} {k}" for k in ("failed", "error", "passed", "skipped", "xfail", "xpass") if t.get(k)]
    counted = ", ".join(parts) or "no tests"
    shards = len(report.shards)
    where = f"{shards} shard{'s' if shards != 1 else ''}" + (f", image {report.image}" if report.image else "")
    return f"{counted} in {report.wall_s:.2f} s ({where})"


def _short_traceback(test: TestResult, lines: int = SHORT_TRACEBACK_LINES) -> list[str]:
    rows = [row for row in test.traceback.splitlines() if row.strip()]
    return rows[-lines:]


def render_text(report: TestReport, *, slowest: int = 5) -> str:
    """The report `lllm test` prints: one line per failure with its short traceback, the shards that did not
    end well, setup problems, network attempts, the slowest tests, and the totals."""
    out: list[str] = []
    for test in report.failures():
        label = "FAILED" if test.outcome == "failed" else "ERROR"
        out.append(f"{label} {test.nodeid} - {test.message}".rstrip(" -"))
        out += [f"    {row}" for row in _short_traceback(test)]
    for shard in report.shards:
        extra = f" (running then: {', '.join(shard.interrupted[:3])})" if shard.interrupted else ""
        if shard.status != "ok":
            out.append(f"SHARD {shard.index} {shard.status.upper()}: {shard.reason}{extra}")
        elif shard.interrupted:
            out.append(f"SHARD {shard.index}: pytest was ended {len(shard.interrupted)} time(s) by a test that would "
                       f"not stop, and started again for the tests after it{extra}")
    for problem in report.setup_problems:
        out.append(f"SETUP {problem}")
    if report.tried_network:
        shown = ", ".join(f"{a.nodeid} -> {a.target}" for a in report.network_attempts[:3])
        out.append(f"NETWORK {len(report.network_attempts)} attempt(s) to reach the network, which the sandbox does "
                   f"not have: {shown}")
    if report.reason and report.exit_code:
        out.append(f"REASON {report.reason}")
    if report.output_tail.strip():
        out.append("pytest said:")
        out += [f"    {row}" for row in report.output_tail.strip().splitlines()[-15:]]
    for note in report.notes:
        out.append(f"NOTE {note}")
    timed = [t for t in report.slowest(slowest) if t.duration_s > 0]
    if timed:
        out.append("slowest: " + "; ".join(f"{t.duration_s:.3g} s {t.nodeid}" for t in timed))
    out.append(totals_line(report))
    return "\n".join(out)


def render_summary(report: TestReport, *, max_chars: int = 4000, failures: int = 5) -> str:
    """What an agent's `run_tests` returns: the totals, then the first failures (message and the end of the
    traceback), within `max_chars`."""
    head = [("PASSED: " if report.passed else f"NOT PASSED (exit code {report.exit_code}): ") + totals_line(report)]
    if report.reason and report.exit_code:
        head.append(f"reason: {report.reason}")
    head += [f"setup: {p}" for p in report.setup_problems[:2]]
    text = "\n".join(head)
    bad = report.failures()
    for shown, test in enumerate(bad[:failures]):
        block = "\n".join([f"\n{test.outcome.upper()} {test.nodeid}: {test.message}",
                           *(f"  {row}" for row in _short_traceback(test, 12))])
        if len(text) + len(block) > max_chars - 80:
            text += f"\n[{len(bad) - shown} more failure(s) not shown]"
            break
        text += block
    else:
        if len(bad) > failures:
            text += f"\n[{len(bad) - failures} more failure(s) not shown]"
    return text[:max_chars]


def to_junit(report: TestReport) -> str:
    """The report as JUnit XML (one testsuite; a test's shard in its properties)."""
    import xml.etree.ElementTree as ET

    def clean(text: str) -> str:
        return _XML_BAD.sub("\ufffd", text)

    t = report.totals
    suite = ET.Element("testsuite", name="lllm test", tests=str(t.get("total", 0)),
                       failures=str(t.get("failed", 0)), errors=str(t.get("error", 0)),
                       skipped=str(t.get("skipped", 0) + t.get("xfail", 0)), time=f"{report.wall_s:.3f}")
    for test in report.tests:
        path, _, name = test.nodeid.partition("::")
        case = ET.SubElement(suite, "testcase", classname=clean(path.replace("/", ".").removesuffix(".py")),
                             name=clean(name or path), time=f"{test.duration_s:.3f}")
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="shard", value=str(test.shard))
        if test.outcome in ("failed", "error"):
            tag = "failure" if test.outcome == "failed" else "error"
            ET.SubElement(case, tag, message=clean(test.message)).text = clean(test.traceback)
        elif test.outcome in ("skipped", "xfail"):
            ET.SubElement(case, "skipped", message=clean(test.message))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
