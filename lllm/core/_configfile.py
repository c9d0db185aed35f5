"""Tactic config files: YAML loading with `base:` inheritance, the schema and its validation, and the registry of
agent config blocks that extensions handle. (`lllm.core.config` builds agents from a loaded config.)

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
import os
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.errors import ConfigError
from lllm.registry import Registry, suggest

__all__ = [
    "AGENT_EXTENSIONS",
    "AgentConfig",
    "TacticConfig",
    "agent_entry",
    "deep_merge",
    "load_config",
    "register_agent_extension",
    "suggest",
    "validate_tactic_config",
]


def _check_attach(name: str, obj: Any) -> None:
    if not callable(obj):
        raise ConfigError(f"agent config block {name!r}: {obj!r} is not callable; an extension is a function "
                          "attach(agent, block, ctx)", key=name)


AGENT_EXTENSIONS: Registry[Callable[..., Any]] = Registry(
    "agent config block", group="lllm.agent_extensions", check=_check_attach,
    hint="Register one with lllm.core.config.register_agent_extension(name, attach_or_dotted_path).")
"""Agent config blocks handled outside the core: block key -> `attach(agent, block, ctx)` (or its dotted path,
imported only when an agent config has that block). The rooms that handle blocks declare themselves as entry
points of the group `lllm.agent_extensions` (lllm's own: `proxy`, `computer_use`); the core names none of them."""


def register_agent_extension(name: str, attach_or_path: Callable[..., Any] | str, *, replace: bool = True) -> None:
    """Handle the agent config block `name` with `attach(agent, block: dict, ctx: AgentBuildContext)`.

    Args:
        name: the block's key in an agent config (`proxy`, `computer_use`, ...).
        attach_or_path: the function, or its dotted path `"package.module:attach"` (imported on first use).
        replace: allow replacing a block that is already registered.
    """
    AGENT_EXTENSIONS.register(name, attach_or_path, replace=replace)


SOURCE_KEY = "_config_path"
"""The key `load_config` adds to a config dict: the file it came from (used in error messages)."""


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
    context_manager: dict[str, Any] | None = None
    """`{type: default | <registered name> | null, ...options}`: what trims the dialog before each model call
    (`type: null` turns it off; the options go to the class with the model name: `max_tokens` for default)."""


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


def validate_tactic_config(config: dict[str, Any], *, complete: bool = True) -> TacticConfig:
    """Check a config's top level and every agent entry (with `global` merged under it).

    Args:
        complete: also require what an agent cannot be built without (`model_name`, a system prompt); False
            checks only what is there (a registered config that code completes before building the tactic).
    """
    where = _where(config)
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: a tactic config is a mapping, got {type(config).__name__}", path=where)
    body = {k: v for k, v in config.items() if k != SOURCE_KEY}
    try:
        parsed = TacticConfig.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc, where=where, prefix="", model=TacticConfig, given=body) from None
    for i, entry in enumerate(parsed.agent_configs):
        if complete:
            agent_entry(config, i, parsed=parsed)
        else:
            _check_present_keys(config, i, parsed)
    return parsed


def _check_present_keys(config: dict[str, Any], index: int, parsed: TacticConfig) -> None:
    """`agent_entry` without the checks of missing keys: unknown keys and wrong types still fail."""
    try:
        agent_entry(config, index, parsed=parsed)
    except ConfigError as exc:
        entry = parsed.agent_configs[index]
        if not isinstance(entry, dict):
            raise
        merged = deep_merge(parsed.global_, entry)
        known = AgentConfig.model_fields
        try:  # only missing keys were wrong: fine for now
            _partial_agent_config().model_validate({k: v for k, v in merged.items()
                                                    if k in known or k not in AGENT_EXTENSIONS})
        except ValidationError:
            raise exc from None


_PARTIAL: type[BaseModel] | None = None


def _partial_agent_config() -> type[BaseModel]:
    """`AgentConfig` with every field optional (the check of a config that is not complete yet)."""
    global _PARTIAL
    if _PARTIAL is None:
        from pydantic import create_model

        fields: dict[str, Any] = {}
        for name, f in AgentConfig.model_fields.items():
            optional = copy.copy(f)  # keeps the field's constraints (ge=0 ...)
            optional.default, optional.default_factory = None, None
            fields[name] = (Optional[f.annotation], optional)
        _PARTIAL = create_model("PartialAgentConfig", __config__=ConfigDict(extra="forbid"), **fields)
    return _PARTIAL


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
        if key not in AgentConfig.model_fields and key in AGENT_EXTENSIONS:
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
        if key not in AgentConfig.model_fields and suggest(key, AGENT_EXTENSIONS.names()):
            return f" (config blocks handled by extensions: {AGENT_EXTENSIONS.names()!r})"
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


def _find_base(ref: str, *, here: Path, runtime: Any, where: str) -> Path:
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
                if isinstance(own, str):
                    return Path(own).resolve()
        for key in _qualified_forms(ref):
            if isinstance(runtime.configs.get(key), str):  # a config registered as data has no file to merge
                return Path(runtime.configs[key]).resolve()
    names = list(runtime.configs) if runtime is not None else []
    names += [p.stem for p in here.glob("*.y*ml")]
    raise ConfigError(f"{where}: base config {ref!r} not found (not a registered config, nor a file next to this "
                      f"one).{suggest(ref, names)}", path=where, key="base")


def _qualified_forms(ref: str) -> list[str]:
    """`ref`, and for lllm-core's "pkg:name" / "pkg.configs:name" also "pkg::name" (the runtime's key)."""
    if "::" in ref or ":" not in ref:
        return [ref]
    head, rest = ref.split(":", 1)
    return [ref, f"{head.split('.', 1)[0]}::{rest}"]


def load_config(path: str | os.PathLike[str], *, runtime: Any = None, complete: bool = True,
                _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML tactic config, resolve its `base:` chain and validate it.

    Args:
        path: the YAML file.
        runtime: the `Runtime` where `base: name` looks up registered configs (default: only files next to
            this one).
        complete: require every agent's `model_name` and system prompt now; False (what `resolve_config` does)
            lets code fill them in before the tactic is built, which checks them then.

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
        validate_tactic_config(merged, complete=complete)
    return merged
