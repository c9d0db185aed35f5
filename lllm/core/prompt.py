"""Prompts: a template plus what a turn needs to go right (parser, structured format, tools, handler).

Every public name of the prompt layer imports from here: `Prompt`, `Function`, `FunctionCall`, `ToolResult`,
`tool`, `BaseParser`, `DefaultTagParser`, `BaseHandler`, `DefaultSimpleHandler`, `AgentCallSession`,
`AgentException` and `ParseError` (the helpers live in `_functions`, `_parsers` and `_handlers`).

Templates follow `str.format` rules, always: `{task}` is a variable, `{{x}}` is the literal text `{x}`, also in
a prompt without variables. Rendering with a variable missing raises `UsageError` naming it.
"""

from __future__ import annotations

import hashlib
import re
import string
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from lllm.core._functions import Function, FunctionCall, ToolResult, tool
from lllm.core._handlers import HANDLER_VARIABLES, AgentCallSession, BaseHandler, DefaultSimpleHandler, Retry
from lllm.core._parsers import BaseParser, DefaultTagParser, FunctionParser, as_parser
from lllm.errors import AgentException, ConfigError, ParseError, UsageError

__all__ = [
    "AgentCallSession",
    "AgentException",
    "BaseHandler",
    "BaseParser",
    "DefaultSimpleHandler",
    "DefaultTagParser",
    "Function",
    "FunctionCall",
    "FunctionParser",
    "MCP",
    "ParseError",
    "Prompt",
    "Retry",
    "ToolResult",
    "tool",
]

_FORMATTER = string.Formatter()
_FIELDS = ("path", "prompt", "parser", "format", "function_list", "handler", "metadata", "addon_args",
           "mcp_servers_list")
_HANDLER_VAR_RX = re.compile(r"\{\{(" + "|".join(HANDLER_VARIABLES) + r")\}\}")


class Prompt:
    """A template and the rules of the turn it starts.

    Example:
        ```python
        planner = Prompt(
            path="pipeline/planner",
            prompt="Create a plan for: {task}\\nFormat each step as <step>description</step>",
            parser=DefaultTagParser(xml_tags=["step", "risk"]),
        )
        planner(task="ship it")          # the rendered text
        ```
    """

    __slots__ = (*_FIELDS, "_variables", "_functions", "_mcp_servers")

    def __init__(
        self,
        *,
        path: str,
        prompt: str,
        parser: BaseParser | Callable[..., dict[str, Any]] | None = None,
        format: type[BaseModel] | None = None,
        function_list: list[Function | Callable[..., Any]] | None = None,
        handler: BaseHandler | None = None,
        metadata: dict[str, Any] | None = None,
        addon_args: dict[str, Any] | None = None,
        mcp_servers_list: list[MCP] | None = None,
    ) -> None:
        """Build a prompt; the template is checked now, so a broken one fails here and not mid-run.

        Args:
            path: Its name in the registry ("pipeline/planner").
            prompt: The template (`str.format` rules).
            parser: A `BaseParser` or any callable `(text, **prompt_args) -> dict`; raising `ParseError` makes
                the agent retry through the handler.
            format: A pydantic model: the model is asked for structured output, and the answer is validated
                (a bad one is retried like a `ParseError`).
            function_list: Tools for the turns this prompt starts: `Function`s or typed callables.
            handler: What to say after a bad answer or tool calls (default `DefaultSimpleHandler()`).
            metadata: Free-form information (version, author, ...).
            addon_args: Provider-specific extras, passed through to logs.
            mcp_servers_list: Remote MCP servers offered as tools on the turns this prompt starts (`MCP(...)`);
                the provider calls them itself, so this needs a provider that does (the OpenAI Responses API:
                the agent's `api_type="response"`).

        Raises:
            ConfigError: A field has the wrong type, or the template is not valid `str.format` syntax.
        """
        if not isinstance(path, str) or not path:
            raise ConfigError(f"Prompt path must be a non-empty string, got {path!r}", key="path")
        if not isinstance(prompt, str):
            raise ConfigError(f"Prompt {path!r}: prompt must be a string, got {type(prompt).__name__!r}", key="prompt")
        if format is not None and not (isinstance(format, type) and issubclass(format, BaseModel)):
            raise ConfigError(f"Prompt {path!r}: format must be a pydantic model class, got {format!r}", key="format")
        if handler is not None and not isinstance(handler, BaseHandler):
            raise ConfigError(
                f"Prompt {path!r}: handler must be a BaseHandler (e.g. a DefaultSimpleHandler subclass), got "
                f"{type(handler).__name__!r}",
                key="handler",
            )
        self.path = path
        self.prompt = prompt
        try:
            self.parser = as_parser(parser)
        except ConfigError as exc:
            raise ConfigError(f"Prompt {path!r}: {exc.message}", key="parser") from exc
        self.format = format
        self.function_list = [_as_function(f, path) for f in (function_list or [])]
        self.handler = handler if handler is not None else DefaultSimpleHandler()
        self.metadata = dict(metadata or {})
        self.addon_args = dict(addon_args or {})
        self._variables = _template_variables(prompt, path)
        self._functions = {f.name: f for f in self.function_list}
        self.mcp_servers_list = list(mcp_servers_list or [])
        for server in self.mcp_servers_list:
            if not isinstance(server, MCP):
                raise ConfigError(f"Prompt {path!r}: mcp_servers_list holds {server!r}; give MCP(server_label=..., "
                                  "server_url=...) objects", key="mcp_servers_list")
        self._mcp_servers = {m.server_label: m for m in self.mcp_servers_list}

    def __repr__(self) -> str:
        return f"Prompt(path={self.path!r}, variables={sorted(self._variables)!r}, tools={list(self._functions)!r})"

    # -- rendering -----------------------------------------------------------------------------------------

    @property
    def variables(self) -> frozenset[str]:
        """The names the template needs."""
        return self._variables

    @property
    def template_vars(self) -> set[str]:
        """The names the template needs, as a set (lllm-core's name for `variables`)."""
        return set(self._variables)

    def validate_args(self, prompt_args: dict[str, Any]) -> list[str]:
        """The variables of the template that `prompt_args` lacks (sorted; empty when it can render)."""
        return sorted(v for v in self._variables if v not in prompt_args)

    def __call__(self, **kwargs: Any) -> str:
        """Render the template (same as `render`)."""
        return self.render(**kwargs)

    def render(self, **kwargs: Any) -> str:
        """The template with `kwargs` filled in, by `str.format` rules (`{{`/`}}` become `{`/`}`).

        Raises:
            UsageError: A variable the template needs is not in `kwargs` (the message names it).
        """
        return _render(self.prompt, self.path, self._variables, kwargs)

    def render_handler(self, handler_vars: dict[str, Any], prompt_args: dict[str, Any] | None = None) -> str:
        """Render a handler-made prompt: handler variables may be written `{x}` or `{{x}}`.

        Args:
            handler_vars: The handler variables (`error_message`, `attempt`, ...; see `lllm.core._handlers`).
            prompt_args: The turn's prompt arguments, also available to the template.

        Raises:
            UsageError: A variable is missing.
        """
        template = _HANDLER_VAR_RX.sub(r"{\1}", self.prompt) if "{{" in self.prompt else self.prompt
        names = self._variables if template is self.prompt else _template_variables(template, self.path)
        return _render(template, self.path, names, {**(prompt_args or {}), **handler_vars})

    # -- parsing -------------------------------------------------------------------------------------------

    def parse(self, content: str, **runtime_args: Any) -> dict[str, Any]:
        """The parsed dict of an answer: the parser's dict (with "raw"), or `{"raw": content}` without a parser.

        Raises:
            ParseError: The parser rejected the answer.
        """
        if self.parser is None:
            return {"raw": content}
        parsed = self.parser.parse(content, **runtime_args)
        if not isinstance(parsed, dict):
            raise ConfigError(
                f"Prompt {self.path!r}: the parser returned {type(parsed).__name__!r}, not a dict", key="parser"
            )
        parsed.setdefault("raw", content)
        return parsed

    # -- tools and handlers ----------------------------------------------------------------------------------

    @property
    def functions(self) -> dict[str, Function]:
        """The tools by name."""
        return self._functions

    @property
    def mcp_servers(self) -> dict[str, MCP]:
        """The MCP servers by label."""
        return self._mcp_servers

    def get_function(self, name: str) -> Function:
        """A tool by name.

        Raises:
            UsageError: No such tool (the message lists the ones there are).
        """
        try:
            return self._functions[name]
        except KeyError:
            raise UsageError(
                f"Prompt {self.path!r} has no tool {name!r}; it has {sorted(self._functions)!r}", name=name
            ) from None

    def link_function(self, name: str, fn: Callable[..., Any]) -> None:
        """Attach a callable to a declared tool."""
        self.get_function(name).link_function(fn)

    def on_exception(self, session: AgentCallSession) -> Prompt:
        """The handler's retry prompt."""
        return self.handler.on_exception(self, session)

    def on_interrupt(self, session: AgentCallSession) -> Prompt:
        """The handler's prompt after tool calls."""
        return self.handler.on_interrupt(self, session)

    def on_interrupt_final(self, session: AgentCallSession) -> Prompt:
        """The handler's prompt when the tool budget is spent."""
        return self.handler.on_interrupt_final(self, session)

    # -- composition -----------------------------------------------------------------------------------------

    def extend(self, *, path: str | None = None, **overrides: Any) -> Prompt:
        """A new prompt with every field of this one except `overrides` (a new `path` is required).

        Raises:
            UsageError: No `path` was given.
            ConfigError: An override names a field `Prompt` does not have.
        """
        if path is None:
            raise UsageError(
                f"Prompt.extend() on {self.path!r} needs a new path=...: prompts that share a path collide in the "
                "registry",
            )
        unknown = [k for k in overrides if k not in _FIELDS]
        if unknown:
            raise ConfigError(f"Prompt.extend: unknown field(s) {unknown!r}; fields are {list(_FIELDS)!r}", key=unknown[0])
        fields = {name: getattr(self, name) for name in _FIELDS}
        fields.update(overrides, path=path)
        return Prompt(**fields)

    def info_dict(self) -> dict[str, Any]:
        """A JSON-able summary for logs."""
        return {
            "path": self.path,
            "prompt_hash": hashlib.sha256(self.prompt.encode()).hexdigest()[:12],
            "variables": sorted(self._variables),
            "metadata": self.metadata,
            "functions": list(self._functions),
            "parser": repr(self.parser) if self.parser is not None else None,
            "format": self.format.__name__ if self.format is not None else None,
        }


class MCP(BaseModel):
    """A remote MCP (Model Context Protocol) server the provider may call during a turn.

    Example:
        ```python
        tools = MCP(server_label="my_tools", server_url="http://localhost:8080", allowed_tools=["search"])
        Prompt(path="agent/system", prompt="You are an assistant.", mcp_servers_list=[tools])
        ```
    """

    model_config = ConfigDict(extra="forbid")

    server_label: str
    """The name the model sees for the server."""
    server_url: str
    """Where the provider reaches it."""
    require_approval: Literal["never", "manual", "auto"] = "never"
    allowed_tools: list[str] | None = None
    """Only these of the server's tools (None: all)."""

    def to_tool(self) -> dict[str, Any]:
        """The tool entry sent with the request (`{"type": "mcp", ...}`, the Responses API's form)."""
        tool: dict[str, Any] = {"type": "mcp", "server_label": self.server_label, "server_url": self.server_url,
                                "require_approval": self.require_approval}
        if self.allowed_tools:
            tool["allowed_tools"] = list(self.allowed_tools)
        return tool


def _as_function(item: Any, path: str) -> Function:
    if isinstance(item, Function):
        return item
    if callable(item):
        return Function.from_callable(item)
    raise ConfigError(
        f"Prompt {path!r}: function_list holds {item!r}; give Function objects or typed callables", key="function_list"
    )


def _template_variables(template: str, path: str) -> frozenset[str]:
    names: set[str] = set()
    try:
        for _literal, field_name, spec, _conv in _FORMATTER.parse(template):
            if field_name is None:
                continue
            root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
            if root == "" or root.isdigit():
                raise ConfigError(
                    f"Prompt {path!r}: positional field {{{field_name}}} in the template; name every variable "
                    f"({{task}}), and write a literal brace as {{{{ or }}}}",
                    key="prompt",
                )
            names.add(root)
            if spec and "{" in spec:
                names |= _template_variables(spec, path)
    except ValueError as exc:
        raise ConfigError(
            f"Prompt {path!r}: the template is not valid str.format syntax ({exc}); write a literal brace as "
            "{{ or }}",
            key="prompt",
        ) from exc
    return frozenset(names)


def _render(template: str, path: str, names: frozenset[str], kwargs: dict[str, Any]) -> str:
    missing = [n for n in names if n not in kwargs]
    if missing:
        raise UsageError(
            f"Prompt {path!r} needs the variable(s) {sorted(missing)!r} but got only {sorted(kwargs)!r}; pass them, "
            "e.g. agent.open(alias, prompt_args={...}) or agent.receive_prompt(prompt, prompt_args={...})",
            missing=sorted(missing),
            path=path,
        )
    try:
        return template.format_map(kwargs)
    except (KeyError, AttributeError, IndexError, ValueError, TypeError) as exc:
        raise UsageError(f"Prompt {path!r}: rendering failed: {type(exc).__name__}: {exc}", path=path) from exc
