"""`lllm.sandbox.jupyter.JupyterSession`'s notebook API on the fake sandbox backend: cells by index (lllm-core's
code), code in / text out (lllm-core's docs), an existing notebook read back, autorun, nothing started in the
constructor. (The Docker run with CALL_API is tests/sandbox/test_compat_jupyter_docker.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from lllm.errors import UsageError
from lllm.sandbox.base import CellResult
from lllm.sandbox.fake import FakeSandbox
from lllm.sandbox.jupyter import JupyterSession


def handler(code: str) -> CellResult | str:
    if "boom" in code:
        return CellResult(status="error", error_name="ValueError", error_value="boom", traceback=["ValueError: boom"],
                          text="ValueError: boom")
    return f"ran: {code}\n"


def fake(tmp_path: Path, **kwargs: object) -> JupyterSession:
    return JupyterSession("nb", tmp_path, sandbox=FakeSandbox(handler), **kwargs)  # type: ignore[arg-type]


def test_cells_by_index_and_code_in_text_out(tmp_path: Path) -> None:
    s = fake(tmp_path)
    assert s.sandbox is None and not s.notebook_path.exists()  # the constructor starts nothing
    first = s.append_code_cell("a = 1")
    s.append_markdown_cell("# notes")
    s.insert_cell(0, "print('first')")
    assert [c.cell_type for c in s.cells] == ["code", "code", "markdown"] and first == 0
    assert s.run_cell(0) is True and s.sandbox is not None  # started on first use
    assert s.run_cell("x = boom") .startswith("ValueError: boom") and s.last_cell_failed
    assert s.run_cell("print(2)") == "ran: print(2)" and not s.last_cell_failed
    s.overwrite_cell(1, "b = 2")
    s.delete_cells([2])
    assert [c.source for c in s.cells] == ["print('first')", "b = 2", "x = boom", "print(2)"]
    with pytest.raises(UsageError, match="no cell 9"):
        s.run_cell(9)
    s.add_markdown_cell("done")
    with pytest.raises(UsageError, match="is a markdown cell, not code"):
        s.run_cell(4)
    s.shutdown()
    s.shutdown()
    import nbformat

    saved = nbformat.read(str(s.notebook_path), as_version=4)
    assert saved.cells[-1].source == "done"
    assert saved.cells[0].outputs[0].text == "ran: print('first')\n"


def test_an_existing_notebook_is_read_and_autorun_stops_at_the_first_error(tmp_path: Path) -> None:
    s = fake(tmp_path)
    for code in ("one", "two boom", "three"):
        s.append_code_cell(code)
    again = fake(tmp_path, metadata={"autorun": True})
    assert again.n_cells == 3
    again.init_session()
    assert again.last_stop_index == 1 and again.last_cell_failed
    again.overwrite_cell(1, "two")
    assert again.run_all_cells() == 3 and not again.last_cell_failed
    again.shutdown()
    assert JupyterSession.from_dict(again.to_dict()).notebook_file == again.notebook_file
    (tmp_path / "broken.ipynb").write_text("not json")
    with pytest.raises(UsageError, match="is not a notebook nbformat can read"):
        JupyterSession("broken", tmp_path, backend="fake")
    with pytest.raises(UsageError, match="only python kernels"):
        JupyterSession("r", tmp_path, programming_language="r")
