"""The sandbox a test shard runs in: a `DockerSandbox` whose container starts no Jupyter kernel.

A test run needs files and commands only (both are `docker exec`s beside the container's main process), so
waiting for a kernel would be most of a shard's start-up (measured: 3.6 of 4.1 s on this loaded machine), and
its start-up would take CPU from the tests. Everything else is the DockerSandbox's own: the container's options
(no network, no capabilities, read-only root, seccomp, limits, labels) come from `_create_options`, the files
and commands from its methods; only the main process differs (`sleep infinity` under tini). Cells are refused.
"""

from __future__ import annotations

from typing import Any

from lllm.errors import UsageError
from lllm.sandbox.docker import DockerSandbox


class TestSandbox(DockerSandbox):
    __test__ = False  # not a test class

    def _create_options(self) -> dict[str, Any]:
        options = super()._create_options()
        options["command"] = ["sleep", "infinity"]
        return options

    def _connect(self) -> None:
        """No kernel to wait for: the container runs once `start` returned."""

    def run_cell(self, code: str, **options: Any) -> Any:
        raise UsageError("a test shard's sandbox runs no kernel: use run_command")
