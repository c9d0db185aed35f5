"""`JupyterSession`: run cells on any Sandbox and keep them as a `.ipynb` notebook a person can open.

    with DockerSandbox() as sb:
        nb = JupyterSession(sb, path="run.ipynb", title="Exploring the data")
        nb.add_markdown("First, the data.")
        nb.run("import pandas as pd; df = pd.DataFrame({'x': [1, 2]}); df")
        nb.save()

Each cell is written with its code, execution count and outputs in nbformat 4: streams, the result
(`execute_result` with its MIME bundle), displays (figures as PNG), errors with their traceback, and for
timeouts, OOM and deaths a stderr note saying what the sandbox did. The notebook is saved after every cell
when `autosave` is on, so a crash leaves everything up to the last cell on disk.

A cell is checked against the nbformat schema before it joins the notebook. Sandbox results arrive sanitised,
but a result from anywhere else can hold what nbformat refuses (a display value that is not text, a lone
surrogate): its outputs are coerced, and if they still fail they are replaced by a note saying why. So one
bad cell is recorded as well as it can be and never stops the notebook from saving that cell or any later one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lllm.errors import UsageError
from lllm.sandbox._output import clean_bundle, clean_text
from lllm.sandbox.base import CellResult, Sandbox


def result_outputs(result: CellResult) -> list[Any]:
    """nbformat output nodes for one cell's result, every text cleaned (see `lllm.sandbox._output`)."""
    from nbformat import v4

    outputs: list[Any] = []
    if result.stdout:
        outputs.append(v4.new_output("stream", name="stdout", text=clean_text(result.stdout)))
    if result.stderr:
        outputs.append(v4.new_output("stream", name="stderr", text=clean_text(result.stderr)))
    for bundle in result.display_data:
        outputs.append(v4.new_output("display_data", data=_bundle(bundle), metadata={}))
    if result.result_data:
        outputs.append(v4.new_output("execute_result", data=_bundle(result.result_data), metadata={},
                                     execution_count=_count(result.execution_count)))
    if result.error_name:
        outputs.append(v4.new_output("error", ename=clean_text(result.error_name),
                                     evalue=clean_text(result.error_value or ""),
                                     traceback=[clean_text(line) for line in result.traceback]))
    if result.notices:
        text = "".join(f"[sandbox: {clean_text(note)}]\n" for note in result.notices)
        outputs.append(v4.new_output("stream", name="stderr", text=text))
    return outputs


def _bundle(data: Any) -> dict[str, Any]:
    return clean_bundle(data)[0] if isinstance(data, dict) else {"text/plain": clean_text(data)}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _checked_cell(source: str, result: CellResult) -> Any:
    """The code cell for `result`, valid under the nbformat schema (see the module docstring)."""
    import nbformat
    from nbformat import v4

    meta = {"status": result.status, "duration_s": result.duration_s, "truncated": result.truncated,
            "restarted": result.restarted}
    try:
        outputs = result_outputs(result)
    except Exception as exc:  # noqa: BLE001 - a result that cannot even be read is noted, never lost
        outputs = [_failure_note(exc)]
    cell = v4.new_code_cell(source=clean_text(source), execution_count=_count(result.execution_count),
                            outputs=outputs)
    cell.metadata["lllm"] = meta
    probe = v4.new_notebook(cells=[cell])
    try:
        nbformat.validate(probe)
    except nbformat.ValidationError as exc:
        cell.outputs = [_failure_note(exc)]
        cell.metadata["lllm"]["outputs_dropped"] = True
    return cell


def _failure_note(exc: BaseException) -> Any:
    from nbformat import v4

    why = clean_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
    return v4.new_output("stream", name="stderr",
                         text=f"[lllm: this cell's outputs could not be recorded in the notebook ({why})]\n")


class JupyterSession:
    """A notebook record of the cells run on `sandbox` (see the module docstring).

    Args:
        sandbox: any started Sandbox (Docker, local, fake).
        path: where `save()` writes; may be given to `save()` instead.
        title: written as a first markdown cell.
        autosave: save after every cell (needs `path`).
    """

    def __init__(self, sandbox: Sandbox, *, path: str | Path | None = None, title: str | None = None,
                 autosave: bool = False) -> None:
        from nbformat import v4

        if autosave and path is None:
            raise UsageError("JupyterSession(autosave=True) needs path=... to save to")
        self.sandbox = sandbox
        self.path = Path(path) if path is not None else None
        self.autosave = autosave
        self.notebook = v4.new_notebook()
        self.notebook.metadata.update({
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "lllm": {"sandbox": getattr(sandbox, "kind", type(sandbox).__name__),
                     "sandbox_id": getattr(sandbox, "sandbox_id", "")},
        })
        self.results: list[CellResult] = []
        if title:
            self.add_markdown(f"# {title}")

    def run(self, code: str, *, timeout: float | None | object = ...) -> CellResult:
        """Run `code` on the sandbox, record the cell and its outputs, and return the result."""
        if timeout is ...:
            result = self.sandbox.run_cell(code)
        else:
            result = self.sandbox.run_cell(code, timeout=timeout)  # type: ignore[arg-type]
        self.notebook.cells.append(_checked_cell(code, result))
        self.results.append(result)
        self._autosave()
        return result

    def add_markdown(self, text: str) -> None:
        """Append a markdown cell (notes, the model's reasoning, headings)."""
        from nbformat import v4

        self.notebook.cells.append(v4.new_markdown_cell(source=clean_text(text)))
        self._autosave()

    def save(self, path: str | Path | None = None) -> Path:
        """Validate and write the notebook (atomically); return where it went."""
        import nbformat

        target = Path(path) if path is not None else self.path
        if target is None:
            raise UsageError("JupyterSession.save() needs a path (here or in the constructor)")
        nbformat.validate(self.notebook)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".nb-", suffix=".ipynb")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(self.notebook, fh)
        os.replace(tmp, target)
        return target

    def _autosave(self) -> None:
        if self.autosave:
            self.save()
