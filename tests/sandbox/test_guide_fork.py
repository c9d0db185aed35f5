"""docs/guide/sandbox.md, section "Fork and save": its examples run as written, against real containers, and
print what the page says they print (`print(...)  # text`), through the shared runner (tests/guide_runner.py)."""

from __future__ import annotations

import pytest

import guide_runner


@pytest.mark.docker
def test_the_fork_and_save_section_runs_as_written(sandbox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLLM_SANDBOX_IMAGE", sandbox_image)
    guide_runner.run_blocks("sandbox.md", test=__file__)
