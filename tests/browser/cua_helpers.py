"""Helpers of the browser tests: a scripted model that reads what it is shown, step builders, ref lookup."""

from __future__ import annotations

import json
import re
from typing import Any


def ref_of(observation: str, pattern: str) -> str:
    """The ref of the first snapshot line matching `pattern` (a regex on the line)."""
    for line in observation.splitlines():
        if re.search(pattern, line):
            found = re.search(r"\[ref=(\w+)\]", line)
            if found:
                return found.group(1)
    raise AssertionError(f"no snapshot line matches {pattern!r} in:\n{observation[:3000]}")


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """A scripted step: one tool call."""
    return {"content": None, "tool_calls": [{"name": name, "arguments": arguments}]}


class ModelPlan:
    """A scripted model whose steps are functions of the last thing it was shown (a tool result or the task).

    Each request takes the next step; a step is a ready step (string or dict) or `f(observation) -> step`.
    `seen` keeps every observation, `.invoker.calls` every request.
    """

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.seen: list[str] = []
        self.used = 0

    def __call__(self, messages: list[dict[str, Any]]) -> Any:
        last = messages[-1]
        for m in reversed(messages):
            if m["role"] in ("tool", "user") and not (m["role"] == "user" and isinstance(m["content"], list)):
                last = m
                break
        text = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
        self.seen.append(text)
        if self.used >= len(self.steps):
            raise AssertionError(f"the model plan has {len(self.steps)} steps; request {self.used + 1} asked for more")
        step = self.steps[self.used]
        self.used += 1
        return step(text) if callable(step) else step

    def assert_complete(self) -> None:
        assert self.used == len(self.steps), f"{len(self.steps) - self.used} plan steps unused"


def all_sent_text(tactic: Any) -> str:
    """Everything the model was sent, over all its requests, as one string."""
    return "\n".join(json.dumps(c.messages) for c in tactic.llm_invoker.calls)
