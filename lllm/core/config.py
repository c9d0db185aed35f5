"""Agent configs: YAML loading with `base:` inheritance, validation, and building agents from a config.

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

`base:` merges dicts key by key and replaces lists; a cycle is a `ConfigError`. Every error names the file
and the key and suggests the nearest valid name.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.errors import ConfigError

if TYPE_CHECKING:
    from lllm.core.runtime import Runtime

__all__ = [
    "AGENT_EXTENSIONS",
    "AgentBuildContext",
    "AgentConfig",
    "AgentSpec",
    "TacticConfig",
    "deep_merge",
    "load_config",
    "parse_agent_configs",
    "suggest",
]

AGENT_EXTENSIONS: dict[str, str] = {
    "proxy": "lllm.proxies.agent_tools:attach",
    "computer_use": "lllm.tools.cua:attach",
}
"""Agent config blocks handled outside the core: block key -> dotted path of `attach(agent, block, ctx)`.
The module is imported only when an agent config has that block."""

SOURCE_KEY = "_config_path"
"""The key `load_config` adds to a config dict: the file it came from (used in error messages)."""


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the nearest candidate names, or '' when none is near."""
    close = difflib.get_close_matches(str(name), list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `override` on top of `base`; dicts merge key by key, everything else (lists too) replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class AgentConfig(BaseModel):
    """One entry of `agent_configs`, after `global` was merged under it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """The agent's name: the key in the tactic's `agent_group` and `self.agents`."""
    model_name: str
    """The model, as the invoker names it (litellm: 'gpt-4o', 'anthropic/claude-...')."""
    system_prompt: str | None = None
    """Inline system prompt text (a template: `{var}` is filled from `open(alias, prompt_args=...)`)."""
    system_prompt_path: str | None = None
    """The path of a registered Prompt (`Prompt(path=...)` discovered from the package's prompts/)."""
    model_args: dict[str, Any] = Field(default_factory=dict)
    """Passed to the model on every call (temperature, max_tokens, ...)."""
    max_exception_retry: int = Field(default=3, ge=0)
    max_interrupt_steps: int = Field(default=5, ge=1)
    api_type: str | None = None
    """'completion' (default) or 'response' (OpenAI Responses API), where the agent supports it."""
    invoker: str | dict[str, Any] | None = None
    """This agent's own invoker, instead of the tactic's."""
    invoker_config: dict[str, Any] | None = None
    description: str | None = None


_TACTIC_KEYS = ("tactic_type", "base", "global", "agent_configs", "invoker", "invoker_config")


class TacticConfig(BaseModel):
    """The top level of a tactic config; keys of its own (a tactic's settings) are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    tactic_type: str | None = None
    base: str | list[str] | None = None
    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    agent_configs: list[dict[str, Any]] = Field(default_factory=list)
    invoker: str | dict[str, Any] | None = None
    invoker_config: dict[str, Any] | None = None


def _where(config: dict[str, Any]) -> str:
    return str(config.get(SOURCE_KEY) or "<config dict>")


def _validation_error(exc: ValidationError, *, where: str, prefix: str, model: type[BaseModel],
                      given: dict[str, Any]) -> ConfigError:
    """Turn a pydantic ValidationError into one ConfigError naming the file, the key and near names."""
    known = [f.alias or n for n, f in model.model_fields.items()]
    problems: list[str] = []
    first_key = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}{loc}" if prefix else loc
        first_key = first_key or key
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}.{suggest(str(err['loc'][-1]), known)}")
        elif err["type"] == "missing":
            unknown = [k for k in given if k not in known]
            hint = suggest(str(err["loc"][-1]), unknown)
            hint = hint.replace("Did you mean", "Is it misspelt as") if hint else ""
            if not hint and model is AgentConfig:
                hint = f" Add it to this agent's entry or under `global:` (e.g. {err['loc'][-1]}: ...)."
            problems.append(f"missing key {key!r}.{hint}")
        else:
            problems.append(f"{key!r}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(f"{where}: " + "; ".join(problems), path=where, key=first_key)


def validate_tactic_config(config: dict[str, Any]) -> TacticConfig:
    """Check a config's top level and every agent entry (with `global` merged under it)."""
    where = _where(config)
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: a tactic config is a mapping, got {type(config).__name__}", path=where)
    body = {k: v for k, v in config.items() if k != SOURCE_KEY}
    try:
        parsed = TacticConfig.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc, where=where, prefix="", model=TacticConfig, given=body) from None
    for i, entry in enumerate(parsed.agent_configs):
        agent_entry(config, i, parsed=parsed)
    return parsed


def agent_entry(config: dict[str, Any], index: int, *, parsed: TacticConfig | None = None
                ) -> tuple[AgentConfig, dict[str, dict[str, Any]]]:
    """Validate agent entry `index`: its `AgentConfig` and its extension blocks (`proxy:`, ...)."""
    parsed = parsed or TacticConfig.model_validate({k: v for k, v in config.items() if k != SOURCE_KEY})
    where = _where(config)
    entry = parsed.agent_configs[index]
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: agent_configs[{index}] must be a mapping, got {entry!r}", path=where,
                          key=f"agent_configs[{index}]")
    merged = deep_merge(parsed.global_, entry)
    label = f"agent_configs[{index}]" + (f" ({merged['name']!r})" if isinstance(merged.get("name"), str) else "")
    extensions: dict[str, dict[str, Any]] = {}
    for key in list(merged):
        if key in AGENT_EXTENSIONS:
            block = merged.pop(key)
            if block in (None, False):
                continue
            if block is True:
                block = {}
            if not isinstance(block, dict):
                raise ConfigError(f"{where}: {label}.{key} must be a mapping of options, got {block!r}",
                                  path=where, key=f"{label}.{key}")
            extensions[key] = block
    try:
        agent = AgentConfig.model_validate(merged)
    except ValidationError as exc:
        err = _validation_error(exc, where=where, prefix=f"{label}.", model=AgentConfig, given=merged)
        extra = suggest_extension(merged)
        from_global = [k for k in parsed.global_ if k not in entry and k not in AgentConfig.model_fields
                       and k not in AGENT_EXTENSIONS]
        if from_global:
            extra += f" ({', '.join(repr(k) for k in from_global)} comes from 'global', merged under every agent)"
        raise ConfigError(err.message + extra, **err.facts) from None
    if agent.system_prompt is None and agent.system_prompt_path is None:
        raise ConfigError(f"{where}: {label} has neither 'system_prompt' (inline text) nor 'system_prompt_path' "
                          "(a registered prompt); give one of them.", path=where, key=f"{label}.system_prompt_path")
    return agent, extensions


def suggest_extension(merged: dict[str, Any]) -> str:
    for key in merged:
        if key not in AgentConfig.model_fields and suggest(key, AGENT_EXTENSIONS):
            return f" (config blocks handled by extensions: {sorted(AGENT_EXTENSIONS)!r})"
    return ""


# -- loading YAML -----------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror or exc}", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}", path=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping at its top level, got {type(data).__name__}",
                          path=str(path))
    return data


def _find_base(ref: str, *, here: Path, runtime: Runtime | None, where: str) -> Path:
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where}: 'base' must be a config name or a relative file path, got {ref!r}",
                          path=where, key="base")
    # a relative file, then a file next to this one, then a config of this file's own package, then any
    # registered config of that name (so a dependency's `base: common` means its own common.yaml)
    candidate = (here / ref).resolve()
    if ref.endswith((".yaml", ".yml")) and candidate.is_file():
        return candidate
    for ext in (".yaml", ".yml"):
        candidate = (here / f"{ref}{ext}").resolve()
        if candidate.is_file():
            return candidate
    if runtime is not None:
        for info in list(runtime.packages.values()):
            if here.is_relative_to(info.root):
                own = runtime.configs.get(f"{info.name}::{ref}")
                if own is not None:
                    return Path(own).resolve()
        if ref in runtime.configs:
            return Path(runtime.configs[ref]).resolve()
    names = list(runtime.configs) if runtime is not None else []
    names += [p.stem for p in here.glob("*.y*ml")]
    raise ConfigError(f"{where}: base config {ref!r} not found (not a registered config, nor a file next to this "
                      f"one).{suggest(ref, names)}", path=where, key="base")


def load_config(path: str | os.PathLike[str], *, runtime: Runtime | None = None,
                _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML tactic config, resolve its `base:` chain and validate it.

    Args:
        path: the YAML file.
        runtime: where `base: name` looks up registered configs (default: only files next to this one).

    Returns:
        The merged config dict (with the source file under `"_config_path"`).

    Raises:
        ConfigError: unreadable or invalid YAML, a bad key (named, with near names), a missing or cyclic base.
    """
    file = Path(path).expanduser().resolve()
    if file in _stack:
        chain = " -> ".join(str(p.name) for p in (*_stack, file))
        raise ConfigError(f"{_stack[-1]}: 'base' makes a cycle: {chain}; remove one of these `base:` links",
                          path=str(_stack[-1]), key="base")
    data = _read_yaml(file)
    base_ref = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base_ref is not None:
        refs = base_ref if isinstance(base_ref, list) else [base_ref]
        for ref in refs:
            base_file = _find_base(ref, here=file.parent, runtime=runtime, where=str(file))
            parent = load_config(base_file, runtime=runtime, _stack=(*_stack, file))
            parent.pop(SOURCE_KEY, None)
            merged = deep_merge(merged, parent)
    merged = deep_merge(merged, data)
    merged[SOURCE_KEY] = str(file)
    if not _stack:
        validate_tactic_config(merged)
    return merged


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


_extension_cache: dict[str, Callable[..., Any]] = {}


def load_extension(key: str, *, where: str = "<config>") -> Callable[..., Any]:
    """The `attach` function registered for an agent config block (imported on first use)."""
    if key in _extension_cache:
        return _extension_cache[key]
    dotted = AGENT_EXTENSIONS.get(key)
    if dotted is None:
        raise ConfigError(f"{where}: no extension handles the agent config block {key!r}."
                          f"{suggest(key, AGENT_EXTENSIONS)}", path=where, key=key)
    module_name, _, attr = dotted.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr or "attach")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: the {key!r} block needs {dotted!r}, which did not load: {exc}",
                          path=where, key=key) from exc
    _extension_cache[key] = fn
    return fn


_AGENT_PARAMS: set[str] | None = None


def _agent_params() -> set[str]:
    global _AGENT_PARAMS
    if _AGENT_PARAMS is None:
        from lllm.core.agent import Agent

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

    def build(self, invoker: Any, *, tracer: Callable[[Any], None] | None = None,
              ctx: AgentBuildContext | None = None) -> Any:
        """A fresh Agent with this spec, `tracer` installed and every extension block attached."""
        from lllm.core.agent import Agent

        kwargs: dict[str, Any] = dict(
            name=self.name, system_prompt=self.system_prompt, model=self.model, llm_invoker=invoker,
            model_args=copy.deepcopy(self.model_args) if self.model_args else {},
            max_exception_retry=self.max_exception_retry, max_interrupt_steps=self.max_interrupt_steps,
        )
        if self.api_type is not None and "api_type" in _agent_params():
            kwargs["api_type"] = self.api_type
        if tracer is not None:
            kwargs["tracer"] = tracer
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
    from lllm.core.runtime import get_default_runtime

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
            from lllm.core.prompt import Prompt

            prompt = Prompt(path=f"{tactic_name}/{name}/system", prompt=agent.system_prompt)
        own_invoker = None
        if agent.invoker is not None or agent.invoker_config is not None:
            own_invoker = invoker_config_of(agent.invoker if agent.invoker is not None else parsed.invoker,
                                            agent.invoker_config)
        specs[name] = AgentSpec(
            name=name, model=agent.model_name, system_prompt=prompt, model_args=agent.model_args,
            max_exception_retry=agent.max_exception_retry, max_interrupt_steps=agent.max_interrupt_steps,
            api_type=agent.api_type, invoker_config=own_invoker, extensions=extensions,
            raw=agent.model_dump(exclude_none=True), source=where)
    return specs
