"""Tools: `Function` (a JSON-schema tool with its Python implementation), `FunctionCall` (one call the model
made, with its result), `ToolResult` (text plus images a tool hands back) and the `@tool` decorator.

`Function.from_callable` reads a typed Python function: the schema of its parameters comes from pydantic
(so `list[str]`, `Literal[...]`, nested models and defaults all work), the description from the docstring's
first paragraph and each parameter's description from its Google-style `Args:` section. The arguments the
model sends are validated against the same model before the function runs; a bad argument goes back to the
model as an error text, never as a crash.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, create_model

from lllm.errors import ConfigError

__all__ = ["Function", "FunctionCall", "ToolResult", "tool"]


@dataclass(slots=True)
class ToolResult:
    """What a tool may return when it has images to show the model (a plot, a screenshot).

    The text becomes the tool message; the images reach the model as image parts of a user message placed
    right after the round's tool messages.
    """

    content: str
    """The text the model reads as the tool's result."""
    images: list[Any] = field(default_factory=list)
    """Images: paths, PIL images, bytes, base64 strings or `ImageData` (loaded by `lllm.core._images`)."""


@dataclass(slots=True)
class FunctionCall:
    """One tool call the model made, and what came of it."""

    id: str
    """The provider's call id (a tool message answers it)."""
    name: str
    """The tool the model named (possibly one that does not exist)."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The parsed arguments ({} when they were not a JSON object)."""
    raw_arguments: str | None = None
    """The raw JSON text the model produced."""
    result_str: str | None = None
    """The text sent back to the model (the result, or the error)."""
    error_message: str | None = None
    """Why the call failed (unknown tool, malformed arguments, the tool raised), else None."""

    @property
    def success(self) -> bool:
        """True when the tool ran and returned."""
        return self.error_message is None and self.result_str is not None

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-format entry of an assistant message's `tool_calls`."""
        args = self.raw_arguments if self.raw_arguments is not None else json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": args}}

    def __str__(self) -> str:
        text = f"Calling function: {self.name} with arguments: {self.arguments}\n"
        if self.result_str is not None:
            text += f"Return:\n---\n{self.result_str}\n---\n"
        return text


class Function:
    """A tool the model may call: a name, a description, a JSON schema of its parameters, and its callable.

    Build one with `Function.from_callable(fn)` or the `@tool` decorator; or declare the schema by hand
    (`Function(name=..., description=..., properties=..., required=...)`) and attach the callable with
    `link_function`.
    """

    __slots__ = ("name", "description", "properties", "required", "additional_properties", "strict", "defs",
                 "function", "processor", "_args_model", "_tool")

    def __init__(
        self,
        *,
        name: str,
        description: str = "",
        properties: dict[str, Any] | None = None,
        required: list[str] | None = None,
        additional_properties: bool = False,
        strict: bool = False,
        defs: dict[str, Any] | None = None,
        function: Callable[..., Any] | None = None,
        processor: Callable[[Any, FunctionCall], str] | None = None,
    ) -> None:
        """Declare a tool.

        Args:
            name: The name the model calls it by (letters, digits, `_` and `-`, at most 64).
            description: What it does, for the model.
            properties: JSON schema of each parameter.
            required: The parameters the model must give.
            additional_properties: Whether the model may send parameters not in `properties`.
            strict: OpenAI strict mode (every parameter must then be required).
            defs: JSON-schema `$defs` referenced by the properties.
            function: The Python callable; it receives the arguments as keywords.
            processor: `processor(result, function_call) -> str` makes the text the model reads from what the
                function returned (default: the result itself: a string as it is, anything else as JSON).

        Raises:
            ConfigError: The name is not a valid tool name, or `processor` is not callable.
        """
        if processor is not None and not callable(processor):
            raise ConfigError(f"tool {name!r}: processor must be a callable (result, function_call) -> str, got "
                              f"{type(processor).__name__!r}", key="processor")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigError(
                f"tool name {name!r} is not valid: use 1-64 letters, digits, '_' or '-' (model APIs reject others)",
                key="name",
            )
        self.name = name
        self.description = description
        self.properties = dict(properties or {})
        self.required = list(required or [])
        self.additional_properties = additional_properties
        self.strict = strict
        self.defs = dict(defs or {})
        self.function = function
        self.processor = processor
        self._args_model: type[BaseModel] | None = None
        self._tool: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Function(name={self.name!r}, params={list(self.properties)!r}, linked={self.linked})"

    @property
    def linked(self) -> bool:
        """True when a Python callable backs this tool."""
        return self.function is not None

    def link_function(self, fn: Callable[..., Any]) -> None:
        """Attach the Python callable that backs this tool."""
        self.function = fn

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the parameters object."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": self.properties,
            "required": self.required,
            "additionalProperties": self.additional_properties,
        }
        if self.defs:
            schema["$defs"] = self.defs
        return schema

    def to_tool(self) -> dict[str, Any]:
        """The OpenAI tool schema (`{"type": "function", "function": {...}}`), built once and cached."""
        if self._tool is None:
            fn: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
            if self.strict:
                fn["strict"] = True
            self._tool = {"type": "function", "function": fn}
        return self._tool

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments checked and coerced against the parameter types (as given, for a hand-declared tool).

        Raises:
            ValidationError: An argument has the wrong type, a required one is missing or an unknown one given.
        """
        if self._args_model is None:
            return arguments
        validated = self._args_model.model_validate(arguments)
        return {k: getattr(validated, k) for k in type(validated).model_fields}

    def run(self, arguments: dict[str, Any]) -> Any:
        """Validate `arguments` (when built from a typed callable) and call the function with them.

        Raises:
            ConfigError: No callable is linked.
            ValidationError: The arguments do not fit the parameters.
            Exception: Whatever the function raises.
        """
        if self.function is None:
            raise ConfigError(
                f"tool {self.name!r} has no implementation linked; call link_function(fn) on it", key=self.name
            )
        return self.function(**self.validate_arguments(arguments))

    @classmethod
    def from_callable(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        prop_desc: dict[str, str] | None = None,
        strict: bool = False,
        processor: Callable[[Any, FunctionCall], str] | None = None,
    ) -> Function:
        """Build a tool from a typed Python function.

        Args:
            fn: The function. Its parameters become the tool's parameters (their type hints the JSON schema;
                parameters without a default are required). `*args`/`**kwargs` are not allowed.
            name: The tool name (default: the function's name).
            description: What the tool does (default: the docstring's first paragraph).
            prop_desc: Descriptions of the parameters (default: the docstring's `Args:` section).
            strict: OpenAI strict mode.
            processor: Formats the result for the model (see `Function`).

        Returns:
            The tool, with `fn` linked and its arguments validated before each call.

        Raises:
            ConfigError: `fn` is not callable, takes `*args`/`**kwargs`, or has a type pydantic cannot describe.
        """
        if not callable(fn):
            raise ConfigError(f"tool must be a callable, got {type(fn).__name__!r}", key="function")
        tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
        doc = inspect.getdoc(fn) or ""
        summary, arg_docs = _parse_docstring(doc)
        arg_docs.update(prop_desc or {})
        try:
            sig = inspect.signature(fn)
            hints = _type_hints(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot read the signature of tool {tool_name!r}: {exc}", key=tool_name) from exc
        fields: dict[str, Any] = {}
        for pname, param in sig.parameters.items():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise ConfigError(
                    f"tool {tool_name!r} takes *{pname}/**{pname}: give every parameter a name and a type so the "
                    "model knows what to send",
                    key=tool_name,
                )
            annotation = hints.get(pname, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
        try:
            model = create_model(
                f"{tool_name}_args", __config__=ConfigDict(arbitrary_types_allowed=False, extra="forbid"), **fields
            )
            schema = model.model_json_schema()
        except Exception as exc:  # noqa: BLE001 - pydantic raises several kinds for types it cannot describe
            raise ConfigError(
                f"tool {tool_name!r} has a parameter type pydantic cannot turn into JSON schema: {exc}", key=tool_name
            ) from exc
        props = schema.get("properties", {})
        for prop in props.values():
            prop.pop("title", None)
        out = cls(
            name=tool_name,
            description=description or summary or tool_name,
            properties=props,
            required=list(schema.get("required", [])),
            strict=strict,
            defs=schema.get("$defs"),
            function=fn,
            processor=processor,
        )
        out._args_model = model
        return out


def tool(
    description: str | Callable[..., Any] | None = None,
    prop_desc: dict[str, str] | None = None,
    *,
    name: str | None = None,
    strict: bool = False,
    processor: Callable[[Any, FunctionCall], str] | None = None,
) -> Any:
    """Turn a typed Python function into a `Function` (usable bare, `@tool`, or with options, `@tool(...)`).

    Example:
        ```python
        @tool
        def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
            \"\"\"Current weather in a city.

            Args:
                city: The city, e.g. "Paris".
            \"\"\"
            return "sunny, 22 C"
        ```

    Args:
        description: What the tool does (default: the docstring's first paragraph).
        prop_desc: Descriptions of the parameters (default: the docstring's `Args:` section).
        name: The tool name (default: the function's name).
        strict: OpenAI strict mode.
        processor: `processor(result, function_call) -> str`: the text the model reads from the result
            (e.g. `lambda r, call: f"[{call.name}] -> {r}"`).

    Returns:
        A `Function` (bare use) or a decorator that makes one.
    """
    if callable(description) and prop_desc is None and name is None and processor is None:
        return Function.from_callable(description, strict=strict)

    def decorator(fn: Callable[..., Any]) -> Function:
        return Function.from_callable(
            fn, name=name, description=description if isinstance(description, str) else None,
            prop_desc=prop_desc, strict=strict, processor=processor,
        )

    return decorator


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to the raw annotations
        return dict(getattr(target, "__annotations__", {}))


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_SECTION_HEADER = re.compile(r"^\s*(Returns|Raises|Yields|Examples?|Notes?|Attributes)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and the Google-style `Args:` descriptions by parameter name."""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _ARGS_HEADER.match(line) or _SECTION_HEADER.match(line):
            break
        summary_lines.append(line.strip())
    args: dict[str, str] = {}
    in_args = False
    current: str | None = None
    base_indent: int | None = None
    for line in lines:
        if _ARGS_HEADER.match(line):
            in_args, current, base_indent = True, None, None
            continue
        if _SECTION_HEADER.match(line):
            in_args = False
            continue
        if not in_args or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (base_indent is None or indent <= base_indent):
            base_indent = indent
            current = match.group(1).lstrip("*")
            args[current] = match.group(3).strip()
        elif current is not None:
            args[current] = (args[current] + " " + line.strip()).strip()
    return " ".join(summary_lines), args
