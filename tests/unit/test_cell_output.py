"""Output capping and the model's text view (`lllm.sandbox._output`), without a kernel."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from lllm.sandbox._cell_loop import CellLimits, ExitStatus, run_cell
from lllm.sandbox._output import OutputCollector, _HeadTail, strip_ansi


def collector(**kw: int) -> OutputCollector:
    opts = {"max_output_chars": 1000, "max_stored_chars": 5000, "max_display_bytes": 10_000}
    opts.update(kw)
    return OutputCollector(**opts)


def test_small_output_is_kept_whole() -> None:
    out = collector()
    out.add("stream", {"name": "stdout", "text": "hello\n"})
    out.add("stream", {"name": "stderr", "text": "warn\n"})
    out.add("execute_result", {"data": {"text/plain": "42"}, "execution_count": 3})
    res = out.finish(status="ok", duration_s=0.01)
    assert res.stdout == "hello\n" and res.stderr == "warn\n"
    assert res.result == "42" and res.execution_count == 3
    assert res.text == "hello\nwarn\n42"
    assert not res.truncated and res.notices == []


def test_streams_are_capped_while_they_arrive() -> None:
    out = collector()
    chunk = "x" * 999 + "\n"
    for _ in range(10_000):  # 10 MB through a collector that keeps a few KB
        out.add("stream", {"name": "stdout", "text": chunk})
    out.add("stream", {"name": "stdout", "text": "THE END\n"})
    assert out.stdout.kept == 5000 and sum(map(len, out.stdout.parts)) == 5000
    assert len(out.body.head) <= 1000 and len(out.body.tail) <= 1000
    res = out.finish(status="ok", duration_s=1.0)
    assert res.truncated
    assert res.output_chars == 10_000 * 1000 + 8
    assert len(res.stdout) == 5000
    assert "characters of output omitted" in res.text
    assert res.text.rstrip().endswith("[sandbox: stdout: kept the first 5,000 of 10,000,008 characters]")
    assert "THE END" in res.text  # the tail is kept: the end of the output is often what matters
    body = res.text.split("\n[sandbox:")[0]
    assert len(body) <= 1000


def test_one_huge_line_is_capped() -> None:
    out = collector()
    out.add("stream", {"name": "stdout", "text": "y" * 3_000_000})
    res = out.finish(status="ok", duration_s=0.1)
    assert res.truncated and len(res.stdout) == 5000
    assert len(res.text) < 1300


def test_head_tail_render() -> None:
    ht = _HeadTail(10)
    ht.add("abcdefghij")
    assert ht.render(100) == ("abcdefghij", 0)
    ht.add("KLMNOPQRSTUVWXYZ")
    text, omitted = ht.render(90)
    assert text.startswith("abcdefghij\n[... 6 characters") and text.endswith("QRSTUVWXYZ")
    assert omitted == 6  # KLMNOP: between the kept head and the kept tail
    whole = _HeadTail(1000)
    whole.add("a" * 500 + "b" * 500)
    text, omitted = whole.render(200)
    head, tail = text.split("\n")[0], text.split("\n")[-1]
    assert len(text) <= 200 and set(head) == {"a"} and set(tail) == {"b"} and len(head) > 2 * len(tail)
    assert omitted == 1000 - len(head) - len(tail) and f"[... {omitted} characters of output omitted ...]" in text


def test_error_is_kept_and_ansi_stripped() -> None:
    out = collector()
    out.add("stream", {"name": "stdout", "text": "z" * 5000})
    tb = ["\x1b[0;31mZeroDivisionError\x1b[0m   Traceback", "----> 1 1/0", "ZeroDivisionError: division by zero"]
    out.add("error", {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": tb})
    res = out.finish(status="error", duration_s=0.0)
    assert res.error_name == "ZeroDivisionError"
    assert "\x1b" not in "".join(res.traceback)
    assert res.text.endswith("ZeroDivisionError: division by zero")  # the error survives the cap
    assert len(res.text) <= 1000 + 200


def test_images_and_displays() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    out = collector()
    out.add("display_data", {"data": {"image/png": png, "text/plain": "<Figure>"}, "metadata": {}})
    out.add("display_data", {"data": {"text/html": "<b>x</b>", "text/plain": "x"}, "metadata": {}})
    res = out.finish(status="ok", duration_s=0.0)
    assert [i.mime for i in res.images] == ["image/png"] and res.images[0].data == png
    assert len(res.display_data) == 2
    assert "<Figure> [image/png]" in res.text


def test_display_over_the_limit_is_dropped_with_a_notice() -> None:
    out = collector(max_display_bytes=1000)
    out.add("display_data", {"data": {"image/png": "A" * 5000}, "metadata": {}})
    res = out.finish(status="ok", duration_s=0.0)
    assert res.images == [] and res.display_data == [] and res.truncated
    assert "dropped" in res.notices[0] and "image/png" in res.notices[0]


def test_display_dropped_by_the_guest_is_reported() -> None:
    out = collector()
    meta = {"lllm_dropped": {"mime_types": "image/png", "bytes": 200_000_000, "limit": 8 << 20}}
    out.add("display_data", {"data": {"text/plain": "[display output dropped ...]"}}, meta)
    res = out.finish(status="ok", duration_s=0.0)
    assert res.truncated and "200.0 MB" in res.notices[0]


def test_oversized_message_dropped_unread() -> None:
    out = collector()
    out.add_oversized("display_data", 300_000_000)
    res = out.finish(status="ok", duration_s=0.0)
    assert res.truncated and "dropped unread" in res.notices[0]


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[1;32mok\x1b[0m") == "ok"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ExitStatus(-11), "killed by SIGSEGV"),
        (ExitStatus(-9, oom=True), "SIGKILL for using more memory"),
        (ExitStatus(1), "exited with code 1"),
        (ExitStatus(137, oom=True), "exited with 137 (SIGKILL)"),
    ],
)
def test_exit_status_describe(status: ExitStatus, expected: str) -> None:
    assert expected in status.describe()


# -- the cell loop against a scripted kernel (no ZMQ, no process) ---------------------------------------------------
class ScriptedChannels:
    """Stands in for KernelChannels: answers each execute with the scripted IOPub messages and shell reply."""

    def __init__(self, iopub: list[tuple[str, dict]], *, reply: str | None = "ok") -> None:
        self.script, self.reply_status = iopub, reply
        self.iopub: list[dict] = []
        self.shell: list[dict] = []
        self.controls: list[str] = []
        self.resets: list[str] = []

    def execute(self, code: str, *, timeout: float = 10.0) -> str:
        msg_id = f"m{len(self.controls)}-{code}"
        stale = {"msg_type": "stream", "parent_header": {"msg_id": "old"}, "content": {"name": "stdout", "text": "X"}}
        self.iopub = [stale] + [{"msg_type": t, "parent_header": {"msg_id": msg_id}, "content": c, "metadata": {}}
                                for t, c in self.script]
        if self.reply_status:
            self.shell = [{"msg_type": "execute_reply", "parent_header": {"msg_id": msg_id},
                           "content": {"status": self.reply_status, "execution_count": 7}}]
        return msg_id

    def poll(self, timeout: float) -> tuple[bool, bool, bool]:
        if not (self.iopub or self.shell):
            time.sleep(min(timeout, 0.02))
        return bool(self.iopub), bool(self.shell), False

    @staticmethod
    def _read(queue: list[dict], want: str) -> Iterator[dict]:
        while queue:
            msg = dict(queue.pop(0))
            msg.setdefault("metadata", {})
            msg["foreign"] = msg["parent_header"].get("msg_id") != want
            yield msg

    def read_iopub(self, want: str) -> Iterator[dict]:
        return self._read(self.iopub, want)

    def read_shell(self, want: str) -> Iterator[dict]:
        return self._read(self.shell, want)

    def discard_pending(self) -> None:
        pass

    def resync(self) -> bool:
        return True

    def take_problems(self) -> list[str]:
        return []

    def reset_iopub(self) -> None:
        self.resets.append("iopub")

    def reset_shell(self) -> None:
        self.resets.append("shell")

    def drain_control(self) -> None:
        pass


class ScriptedKernel:
    def __init__(self, channels: ScriptedChannels, *, exit_after: int | None = None,
                 exit_status: ExitStatus | None = None) -> None:
        self.channels = channels
        self.calls: list[str] = []
        self.polls = 0
        self.exit_after, self.ended = exit_after, exit_status

    def exit_status(self) -> ExitStatus | None:
        self.polls += 1
        return self.ended if self.exit_after is not None and self.polls > self.exit_after else None

    def send_interrupt(self) -> None:
        self.calls.append("interrupt")

    def restart_kernel(self) -> None:
        self.calls.append("restart")
        self.exit_after = None


def limits(timeout: float | None = 5.0) -> CellLimits:
    return CellLimits(timeout=timeout, interrupt_grace=0.2, max_output_chars=1000, max_stored_chars=5000,
                      max_display_bytes=10_000)


IDLE = ("status", {"execution_state": "idle"})


def test_loop_collects_one_cell_and_ignores_stale_messages() -> None:
    kernel = ScriptedKernel(ScriptedChannels([("stream", {"name": "stdout", "text": "hi\n"}),
                                              ("execute_result", {"data": {"text/plain": "2"}}), IDLE]))
    res = run_cell(kernel, "1+1", limits())
    assert (res.status, res.stdout, res.result, res.execution_count) == ("ok", "hi\n", "2", 7)
    assert kernel.calls == []


def test_loop_ends_when_idle_is_lost() -> None:
    kernel = ScriptedKernel(ScriptedChannels([("stream", {"name": "stdout", "text": "x"})]))
    t0 = time.monotonic()
    res = run_cell(kernel, "x", limits())
    assert res.status == "ok" and time.monotonic() - t0 < 3
    assert "final status message was lost" in res.notices[0]


def test_loop_escalates_a_timeout_to_a_restart() -> None:
    kernel = ScriptedKernel(ScriptedChannels([], reply=None))  # never answers
    res = run_cell(kernel, "while True: pass", limits(timeout=0.2))
    assert kernel.calls == ["interrupt", "restart"]
    assert res.status == "timeout" and res.timeout_action == "restarted" and res.state_lost


def test_loop_reports_an_interrupted_timeout() -> None:
    class StopsOnInterrupt(ScriptedKernel):
        def send_interrupt(self) -> None:
            super().send_interrupt()
            ch = self.channels
            ch.iopub.append({"msg_type": "error", "parent_header": {"msg_id": self.msg_id},
                             "content": {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}})
            ch.iopub.append({"msg_type": "status", "parent_header": {"msg_id": self.msg_id},
                             "content": {"execution_state": "idle"}})
            ch.shell.append({"msg_type": "execute_reply", "parent_header": {"msg_id": self.msg_id},
                             "content": {"status": "error"}})

    channels = ScriptedChannels([], reply=None)
    kernel = StopsOnInterrupt(channels)
    original = channels.execute
    channels.execute = lambda code, **kw: setattr(kernel, "msg_id", original(code)) or kernel.msg_id  # type: ignore[method-assign]
    res = run_cell(kernel, "loop", limits(timeout=0.2))
    assert kernel.calls == ["interrupt"]
    assert res.status == "timeout" and res.timeout_action == "interrupted" and not res.state_lost


def test_loop_reports_death_and_oom_and_restarts() -> None:
    for ended, status in ((ExitStatus(-11), "died"), (ExitStatus(-9, oom=True), "oom")):
        kernel = ScriptedKernel(ScriptedChannels([], reply=None), exit_after=0, exit_status=ended)
        res = run_cell(kernel, "boom", limits())
        assert res.status == status and res.restarted and res.state_lost and kernel.calls == ["restart"]


def test_loop_maps_memory_error_to_oom() -> None:
    err = ("error", {"ename": "MemoryError", "evalue": "", "traceback": ["MemoryError"]})
    res = run_cell(ScriptedKernel(ScriptedChannels([err, IDLE], reply="error")), "bytearray(10**11)", limits())
    assert res.status == "oom" and not res.restarted


# -- one rendering, within the cap, notices whole ------------------------------------------------------------------
def test_text_holds_output_error_and_notices_within_the_cap() -> None:
    out = collector(max_output_chars=400, max_stored_chars=2000)
    for _ in range(50):
        out.add("stream", {"name": "stdout", "text": "y" * 99 + "\n"})
    out.add("error", {"ename": "ValueError", "evalue": "bad", "traceback": ["line " * 100, "ValueError: bad"]})
    out.notices.append("the cell ran past its 3s timeout and was interrupted (KeyboardInterrupt); variables are kept")
    res = out.finish(status="timeout", duration_s=1.0)
    assert len(res.text) <= 400
    for note in res.notices:  # every notice whole, the timeout first among them
        assert f"[sandbox: {note}]" in res.text
    assert res.text.count("characters of output omitted") == 1 and "ValueError: bad" in res.text


def test_render_cell_fits_a_header_and_one_marker() -> None:
    from lllm.sandbox.render import render_cell

    out = collector(max_output_chars=1000)
    out.add("stream", {"name": "stdout", "text": "x" * 5000})
    out.notices.append("the kernel was killed and restarted, and every variable was lost")
    res = out.finish(status="timeout", duration_s=1.0)
    header = "[timeout: the cell ran past 3s; the kernel was restarted and earlier variables are gone]"
    text = render_cell(res, max_chars=300, header=header, marker="... (output truncated)")
    assert len(text) <= 300 and text.startswith(header + "\nxxx")
    assert text.count("... (output truncated)") == 1 and "omitted" not in text
    assert text.endswith("[sandbox: the kernel was killed and restarted, and every variable was lost]")
    assert render_cell(res, max_chars=1000) == res.text  # the sandbox's own rendering, again


def test_render_cell_keeps_notices_before_output_when_the_cap_is_tiny() -> None:
    from lllm.sandbox.render import render_cell

    out = collector(max_output_chars=100)
    out.add("stream", {"name": "stdout", "text": "z" * 10_000})
    out.notices.append("the cell ran past its 1s timeout and was interrupted")
    res = out.finish(status="timeout", duration_s=1.0)
    text = render_cell(res, max_chars=100)
    assert len(text) <= 100 and "[sandbox: the cell ran past its 1s timeout and was interrupted]" in text


# -- sanitised intake and budgets ------------------------------------------------------------------------------------
def test_junk_fields_are_sanitised_or_dropped_with_a_notice() -> None:
    import json

    out = collector()
    out.add("stream", {"name": "stdout", "text": {"not": "text"}})
    out.add("stream", {"name": "stdout", "text": "lone \ud800 surrogate\n"})
    out.add("display_data", {"data": "not a bundle"})
    out.add("display_data", {"data": {"text/plain": ["a", "b"], "image/png": 123, 7: "x",
                                      "application/json": {"k": "\udc00", "deep": [[[[1]]]]}}, "metadata": []})
    out.add("execute_input", {"execution_count": "abc"})
    out.add("execute_result", {"data": {"text/plain": {"x": 1}}, "execution_count": True})
    out.add("error", {"ename": 5, "evalue": "\ud800", "traceback": "not a list"})
    out.add("stream", [1, 2])  # type: ignore[arg-type]
    res = out.finish(status="error", duration_s=0.0)
    json.dumps(res.model_dump()).encode("utf-8")  # every text is valid Unicode
    assert "lone \ufffd surrogate" in res.stdout and res.error_name == "5" and res.error_value == "\ufffd"
    assert res.display_data == [{"text/plain": "ab", "image/png": "123",
                                 "application/json": {"k": "\ufffd", "deep": [[[[1]]]]}}]
    assert res.result == '{"x": 1}' and res.execution_count is None
    assert any(note.startswith("the kernel sent") and "malformed" in note for note in res.notices)


def test_error_text_is_capped_keeping_its_end() -> None:
    out = collector()
    out.add("error", {"ename": "ValueError", "evalue": "v" * 10_000_000 + " END",
                      "traceback": ["frame\n"] * 5000 + ["ValueError: " + "v" * 10_000_000 + " END"]})
    res = out.finish(status="error", duration_s=0.0)
    assert res.error_value.endswith(" END") and res.traceback[-1].endswith(" END")
    assert len(res.error_value) + sum(map(len, res.traceback)) <= 20_000 + 200
    assert res.truncated and any("cut to 20,000 characters" in note for note in res.notices)


def test_displays_and_images_are_budgeted_per_cell_and_per_session() -> None:
    from lllm.sandbox._output import RecordBudget
    from lllm.sandbox.base import RecordLimits

    limits = RecordLimits(cell_display_bytes=3000, cell_images=1, session_display_bytes=3000,
                          session_stored_chars=7000)
    budget = RecordBudget(limits)
    out = OutputCollector(max_output_chars=1000, max_stored_chars=5000, max_display_bytes=2000, budget=budget)
    for _ in range(3):
        out.add("display_data", {"data": {"image/png": "QUJD" * 250, "text/plain": "fig"}})
    res = out.finish(status="ok", duration_s=0.0)
    assert len(res.display_data) == 2 and len(res.images) == 1  # 3000 bytes a cell; one image a cell
    assert any("displays passed" in n for n in res.notices) and any("first 1 images" in n for n in res.notices)
    out = OutputCollector(max_output_chars=1000, max_stored_chars=5000, max_display_bytes=2000, budget=budget)
    out.add("display_data", {"data": {"text/plain": "p" * 1500}})
    out.add("stream", {"name": "stdout", "text": "s" * 6000})
    res = out.finish(status="ok", duration_s=0.0)
    assert res.display_data == [] and any("session's budget for stored displays" in n for n in res.notices)
    assert len(res.stdout) == 5000  # the cell's own cap; the session has 7000 - 0 left
    out = OutputCollector(max_output_chars=1000, max_stored_chars=5000, max_display_bytes=2000, budget=budget)
    out.add("stream", {"name": "stdout", "text": "t" * 6000})
    res = out.finish(status="ok", duration_s=0.0)
    assert len(res.stdout) == 2000 and "session's budget for stored output" in res.notices[0]
