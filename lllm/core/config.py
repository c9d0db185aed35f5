"""Agent configs: building fresh agents from a validated tactic config (`parse_agent_configs`, `AgentSpec`), and
what an agent config extension gets (`AgentBuildContext`).

Loading and validating the YAML (`load_config`, `base:` inheritance, `AgentConfig`, the registry of extension
blocks `AGENT_EXTENSIONS`) lives in `lllm.core._configfile`; its names are re-exported here, and so are the
runtime's `resolve_config` and `load_package` (lllm-core imports them from this module).

A tactic config (one YAML file, or a dict) looks like::

    tactic_type: classifier          # the registered Tactic that build_tactic() makes
    base: shared                     # optional: a config (name or relative file) this one extends
    invoker: scripted                # optional: the invoker (default litellm) ...
    invoker_config: {steps: [...]}   # ... and its options
    global:                          # deep-merged under every agent
      model_name: gpt-4o
      model_args: {temperature: 0}
    agent_configs:
      - name: classifier
        system_prompt_path: classify/system     # a Prompt registered by lllm.toml discovery
        # or: system_prompt: "You are ..."      # inline text
        max_exception_retry: 3
        max_interrupt_steps: 5
        proxy: {activate_proxies: [fmp]}        # an extension block (AGENT_EXTENSIONS)
"""

from __future__ import annotations

import copy
import inspect
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lllm.core._configfile import (
    AGENT_EXTENSIONS,
    SOURCE_KEY,
    AgentConfig,
    TacticConfig,
    _where,
    agent_entry,
    deep_merge,
    register_agent_extension,
    validate_tactic_config,
)
from lllm.core.agent import Agent
from lllm.core.prompt import Prompt
from lllm.core.runtime import Runtime, get_default_runtime, load_config, load_package, resolve_config
from lllm.errors import ConfigError, LLLMError
from lllm.registry import suggest

__all__ = [
    "AGENT_EXTENSIONS",
    "AgentBuildContext",
    "AgentConfig",
    "AgentSpec",
    "TacticConfig",
    "deep_merge",
    "invoker_config_of",
    "load_config",
    "load_extension",
    "load_package",
    "parse_agent_configs",
    "register_agent_extension",
    "resolve_config",
    "suggest",
    "vendor_config",
]


# -- building agents --------------------------------------------------------------------------------------


@dataclass
class AgentBuildContext:
    """What an agent config extension gets besides the agent and its block."""

    session_id: str
    """The tactic call session the agent lives in."""
    tracer: Callable[[Any], None]
    """Where to report trace records (it fills in `session_id` and writes to the LogStore)."""
    runtime: Any = None
    """The `Runtime` the tactic resolves prompts and proxies in."""
    workdir_base: Path | None = None
    agent_name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """The agent's merged config entry."""

    @property
    def workdir(self) -> Path:
        """A per-call folder for notebooks and downloads (created on first use)."""
        base = self.workdir_base or Path(os.environ.get("LLLM_WORKDIR") or Path(tempfile.gettempdir()) / "lllm-runs")
        path = Path(base) / self.session_id
        path.mkdir(parents=True, exist_ok=True)
        return path


def load_extension(key: str, *, where: str = "<config>") -> Callable[..., Any]:
    """The `attach` function registered for an agent config block (imported on first use)."""
    if key not in AGENT_EXTENSIONS:
        raise ConfigError(f"{where}: no extension handles the agent config block {key!r}."
                          f"{suggest(key, AGENT_EXTENSIONS.names())}{AGENT_EXTENSIONS.entry_point_hint()}",
                          path=where, key=key)
    try:
        return AGENT_EXTENSIONS[key]
    except ConfigError as exc:
        raise ConfigError(f"{where}: the {key!r} block needs {AGENT_EXTENSIONS.entry(key)!r}, which did not load: "
                          f"{exc}", path=where, key=key) from exc


_AGENT_PARAMS: set[str] | None = None


def _agent_params() -> set[str]:
    global _AGENT_PARAMS
    if _AGENT_PARAMS is None:
        _AGENT_PARAMS = set(inspect.signature(Agent).parameters)
    return _AGENT_PARAMS


@dataclass
class AgentSpec:
    """A validated agent config: everything needed to build a fresh `Agent` for each tactic call."""

    name: str
    model: str
    system_prompt: Any
    """The resolved `Prompt` object."""
    model_args: dict[str, Any] = field(default_factory=dict)
    max_exception_retry: int = 3
    max_interrupt_steps: int = 5
    api_type: str | None = None
    invoker_config: dict[str, Any] | None = None
    """This agent's own invoker config, when it has one (else the tactic's invoker is used)."""
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = "<config dict>"
    context_manager: tuple[type, dict[str, Any]] | None = None
    """The context manager class and its options (built fresh for each agent), or None."""

    def build(self, invoker: Any, *, tracer: Callable[[Any], None] | None = None,
              ctx: AgentBuildContext | None = None) -> Any:
        """A fresh Agent with this spec, `tracer` installed and every extension block attached."""
        kwargs: dict[str, Any] = dict(
            name=self.name, system_prompt=self.system_prompt, model=self.model, llm_invoker=invoker,
            model_args=copy.deepcopy(self.model_args) if self.model_args else {},
            max_exception_retry=self.max_exception_retry, max_interrupt_steps=self.max_interrupt_steps,
        )
        if self.api_type is not None and "api_type" in _agent_params():
            kwargs["api_type"] = self.api_type
        if tracer is not None:
            kwargs["tracer"] = tracer
        if self.context_manager is not None:
            cls, options = self.context_manager
            kwargs["context_manager"] = cls(self.model, **options)
        agent = Agent(**kwargs)
        for key, block in self.extensions.items():
            attach = load_extension(key, where=self.source)
            attach(agent, copy.deepcopy(block), ctx)
        return agent


def invoker_config_of(block: str | dict[str, Any] | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """`invoker` (a name or a whole dict) + `invoker_config` -> the dict `build_invoker` takes."""
    if isinstance(block, dict):
        out = dict(block)
    else:
        out = {"invoker": block or "litellm"}
    out.update(options or {})
    return out


def parse_agent_configs(config: dict[str, Any], agent_group: list[str], tactic_name: str, *,
                        runtime: Runtime | None = None) -> dict[str, AgentSpec]:
    """Parse `global` + `agent_configs` into `{agent_name: AgentSpec}` for each name in `agent_group`.

    Raises:
        ConfigError: a bad or missing key, an agent the group needs that the config lacks, or a
            `system_prompt_path` that no registered prompt has (each with the file, the key, near names).
    """
    runtime = runtime or get_default_runtime()
    where = _where(config)
    parsed = validate_tactic_config(config)
    entries: dict[str, tuple[int, AgentConfig, dict[str, dict[str, Any]]]] = {}
    for i in range(len(parsed.agent_configs)):
        agent, extensions = agent_entry(config, i, parsed=parsed)
        if agent.name in entries:
            raise ConfigError(f"{where}: agent_configs[{i}]: the name {agent.name!r} is used twice", path=where,
                              key=f"agent_configs[{i}].name")
        entries[agent.name] = (i, agent, extensions)
    specs: dict[str, AgentSpec] = {}
    for name in agent_group:
        if name not in entries:
            raise ConfigError(f"{where}: tactic {tactic_name!r} needs an agent {name!r} in agent_configs, which has "
                              f"{sorted(entries)!r}.{suggest(name, entries)}", path=where, key="agent_configs")
        i, agent, extensions = entries[name]
        if agent.system_prompt_path is not None:
            prompt = runtime.find_prompt(agent.system_prompt_path)
            if prompt is None:
                raise ConfigError(
                    f"{where}: agent_configs[{i}] ({name!r}).system_prompt_path: no prompt {agent.system_prompt_path!r}"
                    f" is registered.{suggest(agent.system_prompt_path, runtime.prompts)} Prompts are registered by "
                    "load_package() from the package's prompts/ folder.",
                    path=where, key=f"agent_configs[{i}].system_prompt_path")
        else:
            prompt = Prompt(path=f"{tactic_name}/{name}/system", prompt=agent.system_prompt or "")
        own_invoker = None
        if agent.invoker is not None or agent.invoker_config is not None:
            own_invoker = invoker_config_of(agent.invoker if agent.invoker is not None else parsed.invoker,
                                            agent.invoker_config)
        specs[name] = AgentSpec(
            name=name, model=agent.model_name, system_prompt=prompt, model_args=agent.model_args,
            max_exception_retry=agent.max_exception_retry, max_interrupt_steps=agent.max_interrupt_steps,
            api_type=agent.api_type, invoker_config=own_invoker, extensions=extensions,
            raw=agent.model_dump(exclude_none=True), source=where,
            context_manager=_context_manager(agent, runtime, where, f"agent_configs[{i}] ({name!r})"))
    return specs


def _context_manager(agent: AgentConfig, runtime: Runtime, where: str, label: str) -> tuple[type, dict[str, Any]] | None:
    """The agent's `context_manager:` block as (class, options), checked by building one now."""
    block = agent.context_manager
    if not block:
        return None
    options = dict(block)
    kind = options.pop("type", "default")
    if kind is None:
        return None
    key = f"{label}.context_manager"
    try:
        cls = runtime.get_context_manager(str(kind))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {key}.type: {exc.message}", path=where, key=f"{key}.type") from None
    try:
        cls(agent.model_name, **options)
    except (TypeError, ValueError, LLLMError) as exc:
        raise ConfigError(f"{where}: {key}: {cls.__name__}({agent.model_name!r}, **{options!r}) failed: {exc}",
                          path=where, key=key) from None
    return cls, options


def vendor_config(source: str, overrides: dict[str, Any] | None = None, *, runtime: Runtime | None = None
                  ) -> dict[str, Any]:
    """A registered config made your own: its `base:` chain resolved, `overrides` deep-merged on top, and no
    record of the file it came from (a standalone dict to register, or to save as YAML).

    Args:
        source: the config's name ("default", "dep:default", "dep::default").
        overrides: merged on top: dicts key by key (`{"global": {"model_args": {"temperature": 0}}}` keeps the
            other model_args), anything else replaced.
        runtime: where `source` is registered (default: the default runtime).

    Example:
        ```python
        cfg = vendor_config("A:default", {"global": {"model_name": "gpt-4o"}})
        get_default_runtime().register_config("vendor/A", cfg, namespace="my_pkg")
        ```

    Raises:
        ConfigError: no config `source`.
    """
    config = resolve_config(source, runtime=runtime)
    config.pop(SOURCE_KEY, None)
    return deep_merge(config, copy.deepcopy(overrides)) if overrides else config
