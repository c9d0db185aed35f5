"""lllm: language-model agents whose code runs in a real sandbox.

`import lllm` stays light: the public names below load their modules on first use, and litellm, docker
and playwright load only when something needs them.
"""

from __future__ import annotations

from lllm._lazy import lazy_getattr


__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # agent core
    "Agent": "lllm.core.agent",
    "Prompt": "lllm.core.prompt",
    "Function": "lllm.core.prompt",
    "FunctionCall": "lllm.core.prompt",
    "ToolResult": "lllm.core.prompt",
    "MCP": "lllm.core.prompt",
    "tool": "lllm.core.prompt",
    "DefaultTagParser": "lllm.core.prompt",
    "DefaultSimpleHandler": "lllm.core.prompt",
    "AgentCallSession": "lllm.core.prompt",
    "Dialog": "lllm.core.dialog",
    "Message": "lllm.core.dialog",
    "Roles": "lllm.core.dialog",
    "InvokeCost": "lllm.records",
    # orchestration
    "Tactic": "lllm.core.tactic",
    "TacticCallSession": "lllm.core.tactic",
    "Runtime": "lllm.core.runtime",
    "get_default_runtime": "lllm.core.runtime",
    "load_runtime": "lllm.core.runtime",
    "load_package": "lllm.core.runtime",
    "load_prompt": "lllm.core.runtime",
    "load_config": "lllm.core.runtime",
    "resolve_config": "lllm.core.runtime",
    "get_runtime": "lllm.core.runtime",
    "load_tactic": "lllm.core.runtime",
    "load_proxy": "lllm.core.runtime",
    "load_resource": "lllm.core.runtime",
    "ResourceNode": "lllm.core.runtime",
    "export_package": "lllm.core.packages",
    "install_package": "lllm.core.packages",
    "list_packages": "lllm.core.packages",
    "remove_package": "lllm.core.packages",
    "parse_agent_configs": "lllm.core.config",
    "vendor_config": "lllm.core.config",
    "build_tactic": "lllm.core.runtime",
    "register_tactic_class": "lllm.core.runtime",
    "LogStore": "lllm.logging",
    "sqlite_store": "lllm.logging",
    "RayExecutor": "lllm.executors",  # bcall(executor=RayExecutor(...)): batches on a Ray cluster
    "LocalFileBackend": "lllm.logging",
    "SQLiteBackend": "lllm.logging",
    "NoOpBackend": "lllm.logging",
    "setup_logging": "lllm.logging",
    # proxies
    "BaseProxy": "lllm.proxies",
    "ProxyManager": "lllm.proxies",
    "ProxyRegistrator": "lllm.proxies",
    # errors
    "LLLMError": "lllm.errors",
    "ConfigError": "lllm.errors",
    "UsageError": "lllm.errors",
    "BudgetExceeded": "lllm.errors",
    "ParseError": "lllm.errors",
    "AgentException": "lllm.errors",
    "InvokerError": "lllm.errors",
    "ModelAPIError": "lllm.errors",
    "ScriptError": "lllm.errors",
    "SandboxError": "lllm.errors",
    "ProxyError": "lllm.errors",
    "BrowserError": "lllm.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__ = lazy_getattr('lllm', _EXPORTS, globals())


def __dir__() -> list[str]:
    return __all__
