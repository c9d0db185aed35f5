"""lllm-core's `lllm.sandbox.jupyter.JupyterSession` as Lesson 4 and core/proxy-and-sandbox.md use it, here in a
real Docker sandbox: CALL_API wired from `metadata["proxy"]`, `run_cell(code)` returning the output text,
`last_cell_failed`, `add_markdown_cell`, `notebook_path`; and lllm-core's own index form, `run_cell(i) -> bool`."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from lllm.sandbox.jupyter import JupyterSession

pytestmark = pytest.mark.docker


def test_a_notebook_session_runs_in_a_sandbox_with_call_api(tmp_path: Path, sandbox_image: str) -> None:
    session = JupyterSession(name="analysis", dir=str(tmp_path / "notebooks"),
                             metadata={"proxy": {"activate_proxies": ["fmp"], "deploy_mode": False,
                                                 "source": "offline"}},
                             sandbox_options={"image": sandbox_image})
    session.init_session()
    try:
        container = session.sandbox.container.id
        out = session.run_cell('q = CALL_API("fmp/quote", {"symbol": "AAPL"})\nprint(q["symbol"])')
        assert out.strip() == "AAPL" and not session.last_cell_failed
        assert "ProxyNotActivated" in session.run_cell(
            'try:\n    CALL_API("fred/series", {"series_id": "GDP"})\nexcept CallAPIError as e:\n    print(e.type)')
        failed = session.run_cell("1 / 0")
        assert session.last_cell_failed and "ZeroDivisionError" in failed
        session.add_markdown_cell("The division failed, as planned.")
        fix = session.append_code_cell("print(q['symbol'].lower())")  # state survives between cells
        assert session.run_cell(fix) is True and session.last_result.stdout == "aapl\n"
    finally:
        session.shutdown()
    notebook = json.loads(session.notebook_path.read_text())
    assert session.notebook_path == tmp_path / "notebooks" / "analysis.ipynb"
    assert [c["cell_type"] for c in notebook["cells"]] == ["code", "code", "code", "markdown", "code"]
    assert notebook["cells"][2]["outputs"][-1]["ename"] == "ZeroDivisionError"
    with pytest.raises(docker.errors.NotFound):  # shutdown removed it
        docker.from_env().containers.get(container)
