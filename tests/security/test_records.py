"""Issue 9, items 5 and 10: what a cell sends cannot blind the host's records, nor grow them without bound.

Item 5, before the fix: a signed IOPub message with a deeply nested or non-object payload made `run_cell`
raise; a lone surrogate made the notebook writer raise for that cell and every later one; and a forged `error`
message made the cell's log row fail to insert (SQLite refuses lone surrogates). Item 10, before the fix: a
10 MB exception message went whole into the result and the log, and ~60 MB of displays in one cell went whole
into the notebook, the host's memory and the model's images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from lllm.core.trace import CellRecord
from lllm.logging import sqlite_store
from lllm.sandbox import DockerSandbox, JupyterSession, RecordLimits, SandboxLimits

pytestmark = pytest.mark.docker

# Sends signed (and some unsigned) IOPub messages with this cell as their parent: what a hostile cell can do.
SENDER = r'''
import json
_k = get_ipython().kernel
_parent = json.dumps(_k.get_parent("shell")["header"], default=str).encode()
def _send(msg_type, content, header=None, sign=True):
    header = header if header is not None else json.dumps(
        {"msg_id": "j", "msg_type": msg_type, "session": "s", "username": "u", "date": "", "version": "5.3"}).encode()
    frames = [header, _parent, b"{}", content if isinstance(content, bytes) else json.dumps(content).encode()]
    sig = _k.session.sign(frames) if sign else b"0" * 64
    _k.iopub_socket.send_multipart([b"junk", b"<IDS|MSG>", sig] + frames)
'''

JUNK = SENDER + r'''
_send("stream", {"name": "stdout", "text": {"not": "text"}})
_send("stream", {"name": "stdout", "text": "lone \ud800 surrogate\n"})
_send("display_data", {"data": "not a bundle", "metadata": {}})
_send("display_data", {"data": {"text/plain": ["a", "b"], "image/png": 123, "application/json": {"k": "\udc00"},
                                "text/html": {"x": 1}, "text/\ud800": "k"}, "metadata": []})
_send("execute_input", {"code": "", "execution_count": "abc"})
_send("stream", b"[1, 2, 3]")
_send("stream", {}, header=b'"a header that is a string"')
_send("stream", {}, header=json.dumps({"msg_id": "no type"}).encode())
_send("stream", b"[" * 100000 + b"]" * 100000)
_send("stream", b'{"name": "stdout", "text": "\xff\xfe"}')
_send("stream", {"name": "stdout", "text": "unsigned\n"}, sign=False)
_k.iopub_socket.send_multipart([b"junk", b"no delimiter"])
print("after the junk")
'''

FORGED_ERROR = SENDER + r'''
_send("error", {"ename": 5, "evalue": "\ud800" * 3, "traceback": "not a list"})
'''


@pytest.fixture
def sb(sandbox_image: str, tmp_path: Path) -> Iterator[DockerSandbox]:
    store = sqlite_store(tmp_path / "log.db")
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="1g", pids=128), cell_timeout=30,
                       tracer=store.record) as sandbox:
        sandbox.store = store  # type: ignore[attr-defined]
        yield sandbox
    store.close()


def logged(sb: DockerSandbox) -> list[dict]:
    return list(sb.store.db.query("select status, error from cells order by started_at"))  # type: ignore[attr-defined]


def test_junk_messages_never_break_the_cell_the_notebook_or_the_log(sb: DockerSandbox, tmp_path: Path) -> None:
    nb = JupyterSession(sb, path=tmp_path / "run.ipynb", autosave=True)
    res = nb.run(JUNK)  # raised before the fix (a nested payload, a header that is a string, ...)
    assert res.status == "ok", res.text
    assert "after the junk" in res.stdout and "lone \ufffd surrogate" in res.stdout
    assert "unsigned" not in res.stdout  # a bad signature is not our kernel's message
    assert any("malformed" in note for note in res.notices), res.notices
    res = nb.run(FORGED_ERROR)
    assert res.status == "error" and res.error_name == "5" and res.error_value == "\ufffd" * 3
    assert nb.run("'still recording'").result == "'still recording'"
    saved = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    nbformat.validate(saved)
    assert [c.source for c in saved.cells] == [JUNK, FORGED_ERROR, "'still recording'"]
    assert [row["status"] for row in logged(sb)] == ["ok", "error", "ok"]
    assert logged(sb)[1]["error"] == "5: \ufffd\ufffd\ufffd"


def test_a_huge_exception_message_is_kept_small(sb: DockerSandbox) -> None:
    res = sb.run_cell("raise ValueError('x' * 10_000_000 + ' the end')")
    assert res.status == "error" and res.error_name == "ValueError"
    assert res.error_value.endswith(" the end") and len(res.error_value) < 20_000
    assert sum(map(len, res.traceback)) < 20_000 and len(res.text) <= sb.max_output_chars
    assert len(logged(sb)[-1]["error"]) <= 2_000
    # kernel code can skip the guest's cap and send its own error message: the host caps it on intake
    res = sb.run_cell(SENDER + "_send('error', {'ename': 'Big', 'evalue': 'y' * 3_000_000, 'traceback': ['z' * 3_000_000]})")
    assert res.error_name == "Big" and len(res.error_value) + sum(map(len, res.traceback)) <= 20_000
    assert len(logged(sb)[-1]["error"]) <= 2_000
    # one over the host's limit for a message is dropped unread, and the cell still counts as failed
    res = sb.run_cell(SENDER + "_send('error', {'ename': 'Huge', 'evalue': 'y' * 20_000_000, 'traceback': []})")
    assert res.status == "error" and any("dropped unread" in note for note in res.notices)


def test_displays_are_budgeted_per_cell(sb: DockerSandbox, tmp_path: Path) -> None:
    code = ("from IPython.display import display\nfor i in range(8):\n"
            "    display({'image/png': 'iVBORw0KGgo' + 'A' * 7_500_000, 'text/plain': f'figure {i}'}, raw=True)")
    nb = JupyterSession(sb, path=tmp_path / "big.ipynb", autosave=True)
    res = nb.run(code)  # 60 MB of displays
    assert res.status == "ok", res.text
    kept = sum(len(v) for bundle in res.display_data for v in bundle.values())
    assert kept <= RecordLimits().cell_display_bytes and len(res.images) <= 2
    assert any("displays passed" in note for note in res.notices)
    assert (tmp_path / "big.ipynb").stat().st_size < 20 << 20


def test_stored_output_is_budgeted_per_session(sandbox_image: str) -> None:
    limits = RecordLimits(session_stored_chars=1_500_000, session_display_bytes=10 << 20)
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="1g", pids=128),
                       record_limits=limits) as sb:
        kept = [len(sb.run_cell("print('x' * 999_999)").stdout) for _ in range(3)]
        assert kept == [1_000_000, 500_000, 0]
        res = sb.run_cell("print('x' * 999_999)")
        assert any("session's budget for stored output" in note for note in res.notices)
        assert "xxxx" in res.text  # the model still sees the output's head and tail
        show = "from IPython.display import display\ndisplay({'text/plain': 'p' * 6_000_000}, raw=True)"
        first, second = sb.run_cell(show), sb.run_cell(show)
        assert len(first.display_data) == 1 and second.display_data == []
        assert any("session's budget for stored displays" in note for note in second.notices)


def test_cell_record_is_sanitised_before_the_tracer(sandbox_image: str) -> None:
    records: list[CellRecord] = []
    with DockerSandbox(image=sandbox_image, tracer=records.append) as sb:
        sb.run_cell("x = '\ud800'  # a lone surrogate in the code itself (a model's JSON can carry one)\n"
                    "raise KeyError(x * 5000)")
    assert records[0].status == "error" and len(records[0].error or "") <= 2_000
    json.dumps(records[0].model_dump()).encode("utf-8")  # encodable: no lone surrogate anywhere
    records[0].code.encode("utf-8")


def test_a_cells_output_and_images_reach_the_log_capped_and_clean(sb: DockerSandbox) -> None:
    """Issue 13: a cell's record now carries its output, images and notices; what a hostile cell sends there
    is capped (PAYLOAD_CHARS of output, MAX_IMAGES images of at most IMAGE_BYTES each), sanitised, and the row
    still inserts. Before the record carried them, the log had no output or image of the cell at all."""
    from lllm.records import IMAGE_BYTES, MAX_IMAGES, PAYLOAD_CHARS

    code = SENDER + r'''
import base64
_send("stream", {"name": "stdout", "text": ("lone \ud800 surrogate " * 50_000) + "the end"})
big = base64.b64encode(b"\x89PNG" + b"A" * (IMAGE_BYTES * 3 // 4 + 10)).decode()
_send("display_data", {"data": {"image/png": big}, "metadata": {}})
_send("display_data", {"data": {"image/png": "not base64 <img src=x onerror=alert(1)>"}, "metadata": {}})
for i in range(12):
    _send("display_data", {"data": {"image/png": base64.b64encode(b"\x89PNG%d" % i).decode(), "text/plain": "img"},
                           "metadata": {}})
'''.replace("IMAGE_BYTES", str(IMAGE_BYTES))
    res = sb.run_cell(code)
    assert res.status == "ok", res.text
    row = sb.store.db.query("SELECT output, images, notices FROM cells ORDER BY seq DESC LIMIT 1")  # type: ignore[attr-defined]
    row = next(iter(row))
    output = row["output"]
    assert "\ud800" not in output and "lone \ufffd surrogate" in output and "the end" in output
    assert len(output) <= PAYLOAD_CHARS + 100
    images = json.loads(row["images"])
    assert 1 <= len(images) <= MAX_IMAGES and all(len(i["data"]) <= IMAGE_BYTES for i in images)
    assert all(i["mime"] == "image/png" and "<" not in i["data"] for i in images)
    notices = json.loads(row["notices"])
    assert any("not kept in the log: over" in n for n in notices), notices
