"""`ray_echo`: no agent, no model: the task comes back (for `lllm run --ray`)."""

from __future__ import annotations

from typing import Any

from lllm import Tactic


class RayEcho(Tactic):
    name = "ray_echo"
    agent_group: list[str] = []

    def call(self, task: str, **kwargs: Any) -> str:
        return f"echo {task}"
