"""lllm-core 0.1 compatibility: the names that package had in `lllm.core.const`, re-exported from where they live
now (`Roles` in `lllm.core.dialog`, `FunctionCall` in `lllm.core.prompt`, `InvokeCost` in `lllm.records`, the errors
in `lllm.errors`). Nothing in lllm
imports this module; it is here so code written for lllm-core 0.1 runs unchanged.
"""

from __future__ import annotations

from lllm.core._functions import FunctionCall
from lllm.core.dialog import Roles
from lllm.errors import AgentException, ConfigError, ParseError, UsageError
from lllm.records import InvokeCost

__all__ = ["AgentException", "ConfigError", "FunctionCall", "InvokeCost", "ParseError", "Roles", "UsageError"]
