"""The agent core's enum `Roles`, with `InvokeCost` (from `lllm.records`) and the errors re-exported.

This module follows the public names of the `lllm-core` 0.1 package (`lllm.core.const.ParseError`,
`Roles`, `InvokeCost`) so its users can switch without code changes. The errors themselves live in
`lllm.errors`, the one error tree; they are re-exported here.
"""

from __future__ import annotations

from enum import Enum

from lllm.errors import AgentException, ConfigError, ParseError, UsageError
from lllm.records import InvokeCost

__all__ = ["AgentException", "ConfigError", "InvokeCost", "ParseError", "Roles", "UsageError"]


class Roles(str, Enum):
    """Who wrote a message, in the OpenAI chat vocabulary (the values are what the model API takes)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value
