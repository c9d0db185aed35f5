"""Dialog forks fork the kernel: one branch kernel per forked dialog of an agent (`proxy.sandbox.fork_with_dialog`).

The `proxy:` block registers `DialogKernels.on_dialog` as the agent's dialog hook (`Agent.add_dialog_hook`):
- `agent.fork(src, dst)` while the agent's sandbox is in use forks the kernel of `src` (`sb.fork()`), so `dst`
  starts with everything `src` had built and neither sees the other's later changes. A fork while no sandbox
  is in use forks nothing: `dst` then shares the kernel of the nearest dialog that has one (the main kernel).
  A fork that fails (more branches than the container's `max_branches`) stops the dialog fork as well.
- `run_python` runs in the kernel of the dialog whose `respond()` calls it (`Agent.active_alias`), so
  `agent.switch(alias)` (or `respond(alias=...)`) picks the kernel too. Each branch has its own notebook,
  `<agent>.<dialog>.ipynb`, and its own CALL_API gateway session with the same limits, spending the same
  budgets as the main kernel (the `ProxyManager` and its budgets are shared: a fork does not multiply them).
- `agent.close(alias)` closes the dialog's branch, unless dialogs forked from it still use its branches; then
  it is closed with the agent's sandbox.
- A branch whose kernel ended with its parent's (the main kernel was restarted after a timeout or an OOM) is
  replaced by a new fork of the main kernel on the dialog's next cell, and the cell's output says so.
"""

from __future__ import annotations

import threading
from typing import Any


class DialogKernels:
    """The branch kernels of one agent's dialogs (see the module docstring)."""

    def __init__(self, tools: Any) -> None:
        self.tools = tools
        self.kernels: dict[str, Any] = {}
        """Dialog alias -> its branch sandbox (dialogs without one use the main sandbox)."""
        self.notebooks: dict[str, Any] = {}
        self.parents: dict[str, str] = {}
        self._retired: list[Any] = []
        self._hooked: set[int] = set()
        self._lock = threading.RLock()

    # -- the agent's dialog hook -----------------------------------------------------------------------------------
    def on_dialog(self, event: str, alias: str, source: str | None) -> None:
        if event == "fork" and source is not None:
            self._fork(alias, source)
        elif event == "close":
            self._close(alias)

    def _fork(self, dst: str, src: str) -> None:
        tools = self.tools
        if not tools.config.sandbox.fork_with_dialog:
            return
        with self._lock:
            root = tools.sandbox
            if root is None or not callable(getattr(root, "fork", None)):
                return  # no kernel state yet (or a backend that cannot fork): dst shares the main kernel
            parent = self._live(self.kernels.get(src)) or root
            self._hook_gateway(root)
            branch = parent.fork()
            self.kernels[dst] = branch
            self.parents[dst] = src
            self.notebooks[dst] = self._notebook(branch, dst)

    def _close(self, alias: str) -> None:
        with self._lock:
            branch = self.kernels.pop(alias, None)
            self.notebooks.pop(alias, None)
            self.parents.pop(alias, None)
            if branch is None:
                return
            if any(b in self.kernels.values() for b in _descendants(branch)):
                self._retired.append(branch)  # a dialog forked from this one still runs in one of its branches
            else:
                branch.close()

    # -- cells -----------------------------------------------------------------------------------------------------
    def kernel_for(self, alias: str | None) -> tuple[Any, Any, str]:
        """(sandbox, notebook, note) for a cell of dialog `alias`: its branch, or the main sandbox."""
        tools = self.tools
        with self._lock:
            branch = self.kernels.get(alias) if alias is not None else None
            if branch is None or alias is None:
                return tools.sandbox, tools.notebook, ""
            if self._live(branch) is not None:
                return branch, self.notebooks[alias], ""
            why = getattr(branch, "_end_reason", "") or "it was closed"
            note = (f"[this dialog's sandbox kernel (a branch) had ended: {why}. The cell ran in a new branch of "
                    "the main kernel as it is now; what this dialog defined before is gone]")
            fresh = tools.sandbox.fork()
            self.kernels[alias] = fresh
            self.notebooks[alias] = self._notebook(fresh, alias)
            return fresh, self.notebooks[alias], note

    def close(self) -> None:
        """Close every branch (the agent's sandbox is going)."""
        with self._lock:
            branches = list(self.kernels.values()) + self._retired
            self.kernels.clear()
            self.notebooks.clear()
            self._retired = []
        for branch in branches:
            try:
                branch.close()
            except Exception:  # noqa: BLE001 - the container goes next anyway
                pass

    # -- helpers ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _live(branch: Any) -> Any:
        if branch is None or getattr(getattr(branch, "state", None), "value", "") != "running":
            return None
        return branch

    def _notebook(self, branch: Any, alias: str) -> Any:
        from lllm.sandbox.notebook import JupyterSession

        tools = self.tools
        stem = tools.notebook_path.with_suffix("").name
        path = tools.notebook_path.with_name(f"{stem}.{_safe(alias)}.ipynb")
        return JupyterSession(branch, path=path, autosave=True,
                              title=f"{tools.agent_name} (dialog {alias}): session {tools.session_id}")

    def _hook_gateway(self, root: Any) -> None:
        """Open a gateway session for every branch of `root` (forked here or by anyone else). A shared sandbox's
        holder does that itself (its gateway session is the holder's, not this agent's)."""
        tools = self.tools
        if id(root) in self._hooked or tools.shared is not None or tools.gateway_session is None:
            return
        self._hooked.add(id(root))
        root.add_fork_hook(self._open_gateway)

    def _open_gateway(self, parent: Any, branch: Any) -> None:
        from lllm.tools._shared_sandbox import open_branch_gateway

        main = self.tools.gateway_session
        if main is not None:
            open_branch_gateway(main, branch)


def _descendants(branch: Any) -> list[Any]:
    found: list[Any] = []
    for child in getattr(branch, "branches", []):
        found.append(child)
        found.extend(_descendants(child))
    return found


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "dialog"


__all__ = ["DialogKernels"]
