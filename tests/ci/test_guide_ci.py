"""docs/guide/ci.md runs as written, against real containers (through tests/guide_runner.py)."""

from __future__ import annotations

import pytest

import guide_runner


@pytest.mark.docker
def test_the_ci_guide_runs_as_written(sandbox_image: str) -> None:
    guide_runner.run_blocks("ci.md", test=__file__)
