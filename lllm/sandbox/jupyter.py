"""lllm-core's `lllm.sandbox.jupyter.JupyterSession`: a named notebook in a folder whose cells run in a sandbox.

lllm-core's session runs a Jupyter kernel on the host, next to your files and keys. This one runs every cell in
a sandbox (Docker by default: no network, its own filesystem; `backend="local"` for a plain local kernel),
records the notebook at `<dir>/<name>.ipynb` after every change, and gives the kernel `CALL_API` through the
host's gateway when `metadata["proxy"]` names proxies to activate (the proxy keys stay on the host):

```python
session = JupyterSession(name="analysis", dir="/tmp/notebooks",
                         metadata={"proxy": {"activate_proxies": ["fmp"], "deploy_mode": False}})
session.init_session()                        # starts the sandbox; CALL_API("fmp/...") works in cells
out = session.run_cell("print(6 * 7)")        # the docs' form: run code, get its output text ("42\\n")
session.add_markdown_cell("A note.")
i = session.append_code_cell("x = 1")         # lllm-core's code form: cells by index ...
ok = session.run_cell(i)                      # ... run_cell(index) -> bool
session.last_cell_failed, session.notebook_path
session.shutdown()
```

`run_cell` takes either form: a string is run as a new cell and its output text returned (what lllm-core's
docs write); an index runs that stored cell and returns whether it succeeded (what lllm-core's code does).
Services other rooms wire to the sandbox by metadata key (`proxy` -> CALL_API) are found in `SESSION_SERVICES`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lllm.errors import UsageError
from lllm.registry import Registry
from lllm.sandbox.base import CellResult

__all__ = ["SESSION_SERVICES", "JupyterCellType", "JupyterSession", "ProgrammingLanguage"]

SESSION_SERVICES: Registry[Callable[..., Any]] = Registry(
    "sandbox session service", group="lllm.sandbox_services",
    hint="A service is serve(sandbox, block: dict, *, session_id: str) -> an object with close().")
"""`metadata` key -> `serve(sandbox, block, *, session_id)`, which starts a service for the sandbox's kernel and
returns something to `close()` at shutdown. lllm's `proxy` (CALL_API through the gateway) is an entry point of the
group `lllm.sandbox_services` (`lllm.tools.code:serve_proxies`)."""


class JupyterCellType:
    """Cell types (lllm-core's enum values)."""

    MARKDOWN = "markdown"
    CODE = "code"


class ProgrammingLanguage:
    """Kernel languages: only Python (as in lllm-core)."""

    PYTHON = "python"


class JupyterSession:
    """A notebook `<dir>/<name>.ipynb` whose code cells run in a sandbox (see the module docstring).

    Args:
        name: the notebook's name (its file name without `.ipynb`).
        dir: the folder of the notebook (created when the notebook is first written).
        metadata: `{"proxy": {"activate_proxies": [...], "cutoff_date": ..., "deploy_mode": ...}}` wires
            CALL_API; `{"autorun": True}` runs every stored cell at `init_session()`. Kept in the notebook.
        notebook_file: the notebook's path, instead of `<dir>/<name>.ipynb`; an existing notebook's cells are
            read from it.
        programming_language: "python" (the only one).
        last_stop_index: where `run_all_cells` starts.
        backend: the sandbox backend (`lllm.sandbox.backends`): "docker" (default), "local" (NOT isolated),
            "fake".
        sandbox_options: options for the backend (`image`, `limits`, `env`, ...).
        cell_timeout: seconds a cell may run before it is interrupted.
        sandbox: a sandbox of your own to run the cells in (started by `init_session`, left open by `shutdown`)
            instead of one made from `backend`.

    Nothing starts in the constructor; `init_session()` (or the first cell run) starts the sandbox.
    """

    def __init__(self, name: str, dir: str | os.PathLike[str], metadata: dict[str, Any] | None = None,  # noqa: A002
                 notebook_file: str | os.PathLike[str] | None = None,
                 programming_language: str = ProgrammingLanguage.PYTHON, last_stop_index: int = 0, *,
                 backend: str = "docker", sandbox_options: dict[str, Any] | None = None,
                 cell_timeout: float = 60, sandbox: Any = None) -> None:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise UsageError(f"JupyterSession: name must be a file name (no '/'), got {name!r}")
        if str(programming_language) != ProgrammingLanguage.PYTHON:
            raise UsageError(f"JupyterSession: only python kernels are supported, got {programming_language!r}")
        self.name = name
        self.dir = str(dir)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.notebook_file = str(notebook_file) if notebook_file is not None else str(Path(dir) / f"{name}.ipynb")
        self.programming_language = ProgrammingLanguage.PYTHON
        self.last_stop_index = last_stop_index
        self.backend = backend
        self.sandbox_options = dict(sandbox_options or {})
        self.cell_timeout = cell_timeout
        self.sandbox: Any = None
        """The sandbox, once started."""
        self._given = sandbox
        self.last_result: CellResult | None = None
        """The result of the last cell run."""
        self._services: list[Any] = []
        self._notebook = self._read()

    def __repr__(self) -> str:
        state = "running" if self.sandbox is not None else "not started"
        return f"JupyterSession({self.name!r}, {self.notebook_file!r}, {len(self._notebook.cells)} cells, {state})"

    # -- the notebook ------------------------------------------------------------------------------------

    @property
    def notebook_path(self) -> Path:
        """The notebook file."""
        return Path(self.notebook_file)

    def _read(self) -> Any:
        import nbformat
        from nbformat import v4

        path = self.notebook_path
        if path.is_file():
            try:
                return nbformat.read(str(path), as_version=4)
            except Exception as exc:  # noqa: BLE001 - a broken file must not be overwritten silently
                raise UsageError(f"JupyterSession: {str(path)!r} is not a notebook nbformat can read ({exc}); "
                                 "move it away or pass another notebook_file") from None
        nb = v4.new_notebook()
        nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                            "language_info": {"name": "python"}})
        return nb

    def _write(self) -> None:
        import nbformat

        path = self.notebook_path
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = getattr(self._given, "kind", None) or self.backend
        self._notebook.metadata["lllm"] = {"sandbox": kind, "session": self.name}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nb-", suffix=".ipynb")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(self._notebook, fh)
        os.replace(tmp, path)

    @property
    def cells(self) -> list[Any]:
        """The notebook's cells (nbformat nodes: `.cell_type`, `.source`, `.outputs`)."""
        return list(self._notebook.cells)

    @property
    def n_cells(self) -> int:
        return len(self._notebook.cells)

    def get_cells(self, index: int | list[int]) -> list[Any]:
        """The cells at these indices."""
        return [self._cell(i) for i in ([index] if isinstance(index, int) else index)]

    def _cell(self, index: int) -> Any:
        if not isinstance(index, int) or not 0 <= index < len(self._notebook.cells):
            raise UsageError(f"JupyterSession {self.name!r}: no cell {index!r}; it has {len(self._notebook.cells)}")
        return self._notebook.cells[index]

    def _new_cell(self, content: str, cell_type: str) -> Any:
        from nbformat import v4

        from lllm.sandbox._output import clean_text

        if cell_type == JupyterCellType.CODE:
            return v4.new_code_cell(source=clean_text(content))
        if cell_type == JupyterCellType.MARKDOWN:
            return v4.new_markdown_cell(source=clean_text(content))
        raise UsageError(f"cell_type must be 'code' or 'markdown', got {cell_type!r}")

    def append_code_cell(self, content: str) -> int:
        """Add a code cell (not run); returns its index."""
        self._notebook.cells.append(self._new_cell(content, JupyterCellType.CODE))
        self._write()
        return len(self._notebook.cells) - 1

    def append_markdown_cell(self, content: str) -> int:
        """Add a markdown cell; returns its index."""
        self._notebook.cells.append(self._new_cell(content, JupyterCellType.MARKDOWN))
        self._write()
        return len(self._notebook.cells) - 1

    def add_markdown_cell(self, content: str) -> int:
        """`append_markdown_cell` (the name lllm-core's Lesson 4 uses)."""
        return self.append_markdown_cell(content)

    def insert_cell(self, index: int, content: str, cell_type: str = JupyterCellType.CODE) -> None:
        """Put a new cell at `index` (0..n_cells)."""
        if not isinstance(index, int) or not 0 <= index <= len(self._notebook.cells):
            raise UsageError(f"insert_cell: index must be between 0 and {len(self._notebook.cells)}, got {index!r}")
        self._notebook.cells.insert(index, self._new_cell(content, cell_type))
        self._write()

    def overwrite_cell(self, index: int, content: str, cell_type: str = JupyterCellType.CODE) -> None:
        """Replace the cell at `index` (its outputs go with it)."""
        self._cell(index)
        self._notebook.cells[index] = self._new_cell(content, cell_type)
        self._write()

    def delete_cells(self, index: int | list[int]) -> None:
        """Remove the cells at these indices."""
        doomed = {id(c) for c in self.get_cells(index)}
        self._notebook.cells = [c for c in self._notebook.cells if id(c) not in doomed]
        self._write()

    # -- the sandbox ---------------------------------------------------------------------------------------

    def init_session(self) -> None:
        """Start the sandbox and the services `metadata` asks for (`proxy`: CALL_API); write the notebook; with
        `metadata["autorun"]`, run the stored cells. Calling it again does nothing."""
        if self.sandbox is not None:
            return
        from lllm.sandbox.backends import create_sandbox

        sandbox = self._given if self._given is not None else create_sandbox(self.backend, **self.sandbox_options)
        try:
            sandbox.start()
            for key, block in self.metadata.items():
                if isinstance(block, dict) and key in SESSION_SERVICES:
                    serve = SESSION_SERVICES.lookup(key, where=f"JupyterSession metadata[{key!r}]")
                    self._services.append(serve(sandbox, block, session_id=f"notebook-{self.name}"))
        except BaseException:
            self._close_services()
            if self._given is None:
                sandbox.close()
            raise
        self.sandbox = sandbox
        self._write()
        if self.metadata.get("autorun"):
            self.run_all_cells()

    def run_cell(self, cell: int | str, timeout: float | None = None) -> Any:
        """Run a cell in the sandbox (starting it first if needed).

        Args:
            cell: the index of a stored code cell (lllm-core's code: returns True when it ran without error), or
                code (lllm-core's docs: it is added as a new cell and its output text is returned).
            timeout: seconds (default `cell_timeout`).

        Returns:
            bool for an index; the output text (what a model would be shown) for code.
        """
        if isinstance(cell, str):
            index = self.append_code_cell(cell)
            self._run(index, timeout)
            assert self.last_result is not None
            return self.last_result.text
        return self._run(cell, timeout)

    def _run(self, index: int, timeout: float | None) -> bool:
        from lllm.sandbox.notebook import _checked_cell

        target = self._cell(index)
        if target.cell_type != JupyterCellType.CODE:
            raise UsageError(f"JupyterSession {self.name!r}: cell {index} is a {target.cell_type} cell, not code")
        self.init_session()
        result = self.sandbox.run_cell(target.source, timeout=timeout if timeout is not None else self.cell_timeout)
        self.last_result = result
        self._notebook.cells[index] = _checked_cell(target.source, result)
        self._write()
        return bool(result.status == "ok")

    @property
    def last_cell_failed(self) -> bool:
        """Whether the last cell run did not end well (an error, a timeout, the kernel dying)."""
        return self.last_result is not None and self.last_result.status != "ok"

    def run_all_cells(self, stop_on_error: bool = True, restart: bool = False) -> int:
        """Run the code cells from `last_stop_index` on (from 0 with `restart`); returns the index to go on from
        (where it stopped on an error with `stop_on_error`, else the end)."""
        if restart:
            self.last_stop_index = 0
            if self.sandbox is not None:
                self.sandbox.restart()
        i = self.last_stop_index
        while i < len(self._notebook.cells):
            if self._notebook.cells[i].cell_type == JupyterCellType.CODE and not self._run(i, None) and stop_on_error:
                self.last_stop_index = i
                return i
            i += 1
        self.last_stop_index = i
        return i

    def _close_services(self) -> None:
        services, self._services = self._services, []
        for service in reversed(services):
            close = getattr(service, "close", None)
            if callable(close):
                close()

    def shutdown(self) -> None:
        """Stop the services and remove the sandbox; the notebook file stays. Safe to call twice."""
        sandbox, self.sandbox = self.sandbox, None
        try:
            self._close_services()
        finally:
            if sandbox is not None and self._given is None:
                sandbox.close()

    close = shutdown

    def __enter__(self) -> JupyterSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def to_dict(self) -> dict[str, Any]:
        """What `from_dict` rebuilds the session from (not the sandbox: a rebuilt session starts a new one)."""
        return {"name": self.name, "dir": self.dir, "metadata": dict(self.metadata),
                "notebook_file": self.notebook_file, "programming_language": self.programming_language,
                "last_stop_index": self.last_stop_index, "backend": self.backend}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JupyterSession:
        return cls(data["name"], data["dir"], data.get("metadata"), data.get("notebook_file"),
                   data.get("programming_language", ProgrammingLanguage.PYTHON), data.get("last_stop_index", 0),
                   backend=data.get("backend", "docker"))
