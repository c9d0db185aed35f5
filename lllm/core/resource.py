"""lllm-core 0.1 compatibility: `lllm.core.resource`'s names (`ResourceNode`, `PackageInfo` and the loaders),
re-exported from `lllm.core.runtime`, where they live. Nothing in lllm imports this module."""

from __future__ import annotations

from lllm.core.runtime import (
    PackageInfo,
    ResourceNode,
    load_config,
    load_prompt,
    load_proxy,
    load_resource,
    load_tactic,
)

__all__ = ["PackageInfo", "ResourceNode", "load_config", "load_prompt", "load_proxy", "load_resource", "load_tactic"]
