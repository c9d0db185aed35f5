"""`ray_probe`: one agent answers a task after running code (the scripted model says which code)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from lllm import Tactic


class ProbeResult(BaseModel):
    """A result of a class of this package: it unpickles on the driver only if the package's modules have the
    same names there as on the worker."""

    task: str
    answer: str
    worker_has_key: bool = False
    """Whether the process that ran the tactic's call (a Ray worker) had the proxy's key in its environment."""


class ProbeFailed(Exception):
    """An exception of this package's own, raised on a worker."""


class RayProbe(Tactic):
    name = "ray_probe"
    agent_group = ["analyst"]

    def call(self, task: str, **kwargs: Any) -> ProbeResult:
        if task.startswith("fail"):
            raise ProbeFailed(f"asked to fail: {task}")
        agent = self.agents["analyst"]
        agent.open("main")
        agent.receive(task)
        return ProbeResult(task=task, answer=agent.respond().content,
                           worker_has_key="LLLM_RAYTEST_API_KEY" in os.environ)
