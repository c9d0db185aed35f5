"""Shared enums and small value types of the agent core: `Roles`, `InvokeCost`, and the re-exported errors.

This module follows the public names of the `lllm-core` 0.1 package (`lllm.core.const.ParseError`,
`Roles`, `InvokeCost`) so its users can switch without code changes. The errors themselves live in
`lllm.errors`, the one error tree; they are re-exported here.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

from lllm.errors import AgentException, ConfigError, ParseError, UsageError

__all__ = ["AgentException", "ConfigError", "InvokeCost", "ParseError", "Roles", "UsageError"]


class Roles(str, Enum):
    """Who wrote a message, in the OpenAI chat vocabulary (the values are what the model API takes)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value


class InvokeCost(BaseModel):
    """Token usage and USD cost of one model call, or of several added together with `+`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    prompt_tokens: int = 0
    """Tokens sent to the model (the prompt, including the dialog so far)."""
    completion_tokens: int = 0
    """Tokens the model produced."""
    total_tokens: int = 0
    """prompt_tokens + completion_tokens (as the provider reports it)."""
    cost: float = 0.0
    """USD, as litellm prices it (0.0 when the price is unknown or the model is scripted)."""

    def __add__(self, other: Any) -> InvokeCost:
        if other == 0:  # lets sum() start from 0
            return self
        if not isinstance(other, InvokeCost):
            return NotImplemented
        return InvokeCost.model_construct(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost=self.cost + other.cost,
        )

    __radd__ = __add__

    @classmethod
    def total(cls, costs: Any) -> InvokeCost:
        """Add up an iterable of `InvokeCost` (an empty one gives zeros)."""
        out = cls.model_construct(prompt_tokens=0, completion_tokens=0, total_tokens=0, cost=0.0)
        for c in costs:
            out = out + c
        return out
