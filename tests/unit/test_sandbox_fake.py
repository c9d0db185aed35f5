"""The sandbox contract on FakeSandbox (no Docker): lifecycle, tracing, files, pool, notebook, CLI wiring."""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from lllm.core.trace import CellRecord
from lllm.errors import SandboxClosed, SandboxFileError, SandboxStartError, UsageError
from lllm.sandbox import CellResult, FakeSandbox, JupyterSession, Sandbox, SandboxLimits, SandboxPool, SandboxState
from lllm.sandbox.base import parse_size
from lllm.sandbox.files import clean_relative


def test_lifecycle_new_running_closed() -> None:
    sb = FakeSandbox()
    assert sb.state is SandboxState.NEW
    with pytest.raises(UsageError, match="before start"):
        sb.run_cell("1")
    with pytest.raises(UsageError, match="session_dir"):
        _ = sb.session_dir
    with sb:
        assert sb.state is SandboxState.RUNNING
        assert sb.session_dir.is_dir()
        sb.start()  # idempotent
        session_dir = sb.session_dir
    assert sb.state is SandboxState.CLOSED
    assert not session_dir.exists()
    with pytest.raises(SandboxClosed, match="never reused"):
        sb.run_cell("1")
    with pytest.raises(SandboxClosed):
        sb.start()
    sb.close()  # twice is fine


def test_handler_answers_cells() -> None:
    def handler(code: str) -> CellResult | str:
        if code == "boom":
            return CellResult(status="error", error_name="ValueError", error_value="no", text="ValueError: no")
        return str(eval(code))  # noqa: S307 - test input

    with FakeSandbox(handler, cell_timeout=7) as sb:
        res = sb.run_cell("1+1")
        assert res.ok and res.text == "2" and res.stdout == "2" and res.execution_count == 1
        assert sb.run_cell("boom").status == "error"
        sb.run_cell("3", timeout=None)
        assert sb.cells == ["1+1", "boom", "3"]
        assert sb.timeouts == [7, 7, None]


def test_fake_text_is_capped_like_a_real_sandbox() -> None:
    with FakeSandbox(lambda code: "x" * 50_000, max_output_chars=1000) as sb:
        res = sb.run_cell("print")
    assert res.truncated and len(res.text) < 1200 and "omitted" in res.text


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="function"):
        FakeSandbox(42)  # type: ignore[arg-type]
    with FakeSandbox(lambda code: 3) as sb:  # type: ignore[arg-type, return-value]
        with pytest.raises(UsageError, match="returned int"):
            sb.run_cell("x")
        with pytest.raises(UsageError, match="timeout"):
            sb.run_cell("x", timeout=-1)
        with pytest.raises(UsageError, match="str"):
            sb.run_cell(b"x")  # type: ignore[arg-type]


def test_tracer_gets_one_cell_record_per_cell() -> None:
    records: list[CellRecord] = []
    with FakeSandbox(lambda code: "ok", tracer=records.append, agent="analyst") as sb:
        sb.run_cell("print('ok')")
        sb.run_cell("again")
    assert [r.code for r in records] == ["print('ok')", "again"]
    assert records[0].agent == "analyst" and records[0].sandbox_id == sb.sandbox_id and records[0].status == "ok"


def test_fake_is_a_sandbox() -> None:
    with FakeSandbox() as sb:  # session_dir, part of the protocol, exists once started
        assert isinstance(sb, Sandbox)
    assert not hasattr(FakeSandbox(), "session_dir")


def test_files_and_path_rules() -> None:
    with FakeSandbox(files={"data/a.csv": b"x,y\n"}) as sb:
        assert sb.upload(b"hi", "notes/b.txt") == "notes/b.txt"
        assert sb.download("notes/b.txt") == b"hi"
        assert sb.download("/home/sandbox/work/data/a.csv") == b"x,y\n"
        assert sb.list_files() == ["data/a.csv", "notes/b.txt"]
        assert sb.list_files("notes") == ["notes/b.txt"]
        for bad in ["../etc/passwd", "a/../../x", "/etc/passwd", "", "a\x00b"]:
            with pytest.raises(SandboxFileError):
                sb.upload(b"x", bad)
        with pytest.raises(SandboxFileError, match="no file"):
            sb.download("missing.txt")


def test_upload_from_a_host_file(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00\x01")
    with FakeSandbox() as sb:
        sb.upload(src, "in.bin")
        assert sb.download("in.bin") == b"\x00\x01"
        with pytest.raises(SandboxFileError, match="cannot read"):
            sb.upload(tmp_path / "missing", "x")


def test_clean_relative() -> None:
    assert clean_relative("a/./b/../c.txt", workspace="/w") == "a/c.txt"
    assert clean_relative("/w/x", workspace="/w") == "x"
    with pytest.raises(SandboxFileError, match="leaves the workspace"):
        clean_relative("..", workspace="/w")
    with pytest.raises(SandboxFileError, match="outside the workspace"):
        clean_relative("/wx/y", workspace="/w")


def test_errors_pickle() -> None:
    with FakeSandbox() as sb:
        pass
    with pytest.raises(SandboxClosed) as info:
        sb.run_cell("x")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.sandbox_id == sb.sandbox_id


def test_limits_and_sizes() -> None:
    assert parse_size("256m") == 256 << 20 and parse_size("1g") == 1 << 30 and parse_size(1024) == 1024
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")
    with pytest.raises(Exception, match="not a size"):
        SandboxLimits(memory="lots")
    with pytest.raises(Exception):
        SandboxLimits(memroy="1g")  # type: ignore[call-arg]


def test_notebook_on_a_fake_sandbox(tmp_path: Path) -> None:
    def handler(code: str) -> CellResult | str:
        if code == "plot":
            return CellResult(status="ok", display_data=[{"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}],
                              execution_count=2)
        if code == "bad":
            return CellResult(status="error", error_name="NameError", error_value="x", traceback=["NameError: x"])
        if code == "slow":
            return CellResult(status="timeout", notices=["the cell ran past its 1s timeout"], timeout_action="interrupted")
        return "printed\n"

    target = tmp_path / "out" / "session.ipynb"
    with FakeSandbox(handler) as sb:
        nb = JupyterSession(sb, path=target, title="Fake run", autosave=True)
        nb.add_markdown("Some *notes*.")
        nb.run("print('printed')")
        nb.run("plot")
        nb.run("bad")
        nb.run("slow")
    assert target.exists()
    book = nbformat.read(target, as_version=4)
    nbformat.validate(book)
    kinds = [c.cell_type for c in book.cells]
    assert kinds == ["markdown", "markdown", "code", "code", "code", "code"]
    assert book.cells[2].outputs[0].text == "printed\n"
    assert book.cells[3].outputs[0].output_type == "display_data"
    assert book.cells[3].outputs[0].data["image/png"] == "iVBORw0KGgo="
    assert book.cells[4].outputs[0].ename == "NameError"
    assert "timeout" in book.cells[5].outputs[0].text and book.cells[5].metadata["lllm"]["status"] == "timeout"


def test_notebook_needs_a_path(tmp_path: Path) -> None:
    with FakeSandbox() as sb:
        with pytest.raises(UsageError, match="path"):
            JupyterSession(sb, autosave=True)
        nb = JupyterSession(sb)
        with pytest.raises(UsageError, match="path"):
            nb.save()
        assert nb.save(tmp_path / "x.ipynb").exists()


def test_pool_with_a_fake_factory_hands_out_fresh_sandboxes() -> None:
    made: list[FakeSandbox] = []

    def factory() -> FakeSandbox:
        sb = FakeSandbox(lambda code: "ok")
        made.append(sb)
        return sb

    with SandboxPool(size=2, factory=factory) as pool:
        pool.wait_ready(10)
        t0 = time.perf_counter()
        first = pool.acquire()
        assert time.perf_counter() - t0 < 0.05
        assert first.state is SandboxState.RUNNING
        pool.release(first)
        second = pool.acquire()
        assert second is not first
        pool.release(second)
        deadline = time.monotonic() + 5
        while first.state is not SandboxState.CLOSED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.state is SandboxState.CLOSED  # released means destroyed, never reused
        pool.wait_ready(10)
    assert all(sb.state is SandboxState.CLOSED for sb in made)
    with pytest.raises(SandboxClosed):
        pool.acquire()


def test_pool_reports_start_failures() -> None:
    class Broken(FakeSandbox):
        def _start(self) -> None:
            raise SandboxStartError("no engine here")

    pool = SandboxPool(size=1, factory=Broken, max_failures=2)
    try:
        with pytest.raises(SandboxStartError, match="no engine here"):
            pool.acquire(timeout=20)
    finally:
        pool.close()


def test_pool_arguments() -> None:
    with pytest.raises(UsageError, match="size"):
        SandboxPool(size=0, factory=FakeSandbox)
    with pytest.raises(UsageError, match="either"):
        SandboxPool(size=1, factory=FakeSandbox, image="x")


def test_pool_acquire_blocks_until_refilled() -> None:
    gate = threading.Event()

    class Slow(FakeSandbox):
        def _start(self) -> None:
            gate.wait(5)
            super()._start()

    with SandboxPool(size=1, factory=Slow) as pool:
        threading.Timer(0.2, gate.set).start()
        sb = pool.acquire(timeout=10)
        assert sb.state is SandboxState.RUNNING
        pool.release(sb)


def test_cli_registers_the_sandbox_group() -> None:
    from lllm.sandbox.cli import register

    parser = argparse.ArgumentParser(prog="lllm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", "gc", "--dry-run"])
    assert args.func.__name__ == "cmd_gc" and args.dry_run
    args = parser.parse_args(["sandbox", "build", "--rebuild"])
    assert args.func.__name__ == "cmd_build" and args.rebuild
    assert parser.parse_args(["sandbox", "ls", "--json"]).func.__name__ == "cmd_ls"


def test_cli_help_texts() -> None:
    for cmd in (["--help"], ["gc", "--help"], ["build", "--help"], ["ls", "--help"]):
        out = subprocess.run([sys.executable, "-m", "lllm.sandbox.cli", *cmd], capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout


def test_import_lllm_sandbox_stays_light() -> None:
    code = ("import sys, lllm.sandbox, lllm.sandbox.docker, lllm.sandbox.pool; "
            "print(json.dumps(['docker' in sys.modules, 'zmq' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]


def test_cell_records_carry_output_images_and_notices_within_their_caps() -> None:
    from lllm.records import IMAGE_BYTES, MAX_IMAGES
    from lllm.sandbox import CellImage, CellResult

    images = [CellImage(mime="image/png", data="iVBO\nRw=="), CellImage(mime="image/svg+xml", data="<svg/>"),
              CellImage(mime="image/png", data="<b>not base64</b>"),
              CellImage(mime="image/jpeg", data="A" * (IMAGE_BYTES + 4))]
    images += [CellImage(mime="image/gif", data="R0lG")] * 10
    result = CellResult(status="ok", stdout="hi\n", images=images, notices=[f"note {i}" for i in range(60)],
                        text="hi")
    records: list[CellRecord] = []
    with FakeSandbox(lambda code: result, tracer=records.append) as sb:
        sb.run_cell("draw()")
    (record,) = records
    assert record.output == "hi"
    assert [i["mime"] for i in record.images] == ["image/png", "image/svg+xml"] + ["image/gif"] * (MAX_IMAGES - 2)
    assert record.images[0]["data"] == "iVBORw==" and record.images[1]["data"] == "PHN2Zy8+"
    assert record.notices[:50] == [f"note {i}" for i in range(50)]
    assert "10 more notices" in record.notices[50]
    assert any("image 3 (image/png) not kept in the log: its data is not base64" == n for n in record.notices)
    assert any(n.startswith("image 4 (image/jpeg") for n in record.notices)
    assert any("4 more image(s) not kept" in n for n in record.notices), record.notices
