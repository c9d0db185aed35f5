"""The scripted model both sides of compat-check answer with: a cooperative model that follows the format asked.

Stdlib only: it is imported inside lllm-core's venv as well as ours. One function, `answer(messages, tools,
schema)`, sees what a provider would see (OpenAI chat messages, OpenAI tool schemas, the JSON schema of a
`format=` model) and returns one step `{"content": str | None, "tool_calls": [{"id", "name", "arguments"}]}`.
It is deterministic: the same request gets the same answer, on either side.

Policy, chosen so that the snippets' own code paths run (tools, parsers, structured output) rather than so
that they pass:
- with tools offered and the user having spoken last, it calls the first tool once, with values made from the
  tool's JSON schema (required parameters only);
- with a JSON schema (or JSON mode), it answers a JSON object that validates against the schema;
- otherwise it answers a short text that contains every `<tag>...</tag>` pair and every fenced-code language
  that the system prompt or the last user message mentions, so tag and code-block parsers find what they ask
  for. A bare upper-case `<SIGNAL>` mentioned there is answered on the dialog's second reply onwards (a first
  reply does the work; a later one can say it is done).
"""

from __future__ import annotations

import json
import re
from typing import Any

TEXT = "Scripted answer."
CODE = "print(2 + 2)"

_PAIRED = re.compile(r"<([A-Za-z_][\w\-]*)>")
_SIGNAL = re.compile(r"<([A-Z][A-Z0-9_]{2,})>")
_FENCE = re.compile(r"```([A-Za-z]+)")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _value(name: str, schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A value that validates against `schema` (a JSON schema), named for what it is where that helps."""
    if depth > 6:
        return None
    if "$ref" in schema:
        return _value(name, defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _value(name, options[0], defs, depth + 1)
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _value(k, v, defs, depth + 1) for k, v in props.items()}
    if kind == "array":
        item = schema.get("items", {"type": "string"})
        return [_value(name, item, defs, depth + 1)]
    if kind == "integer":
        return 2
    if kind == "number":
        return 2.0
    if kind == "boolean":
        return False
    lowered = name.lower()
    if "code" in lowered or "python" in lowered:
        return CODE
    if "city" in lowered:
        return "Paris"
    return "example"


def _tool_arguments(tool: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    fn = tool.get("function", tool)
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    defs = params.get("$defs") or params.get("definitions") or {}
    required = params.get("required") or []
    return fn.get("name", "tool"), {k: _value(k, props[k], defs) for k in required if k in props}


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return -1


def _format_answer(prompt_text: str, replies_so_far: int) -> str:
    parts = [TEXT]
    seen: set[str] = set()
    for tag in _PAIRED.findall(prompt_text):
        if tag in seen or f"</{tag}>" not in prompt_text:
            continue
        seen.add(tag)
        body = CODE if ("code" in tag.lower() or "python" in tag.lower() or tag.endswith("_cell")) else "example"
        parts.append(f"<{tag}>{body}</{tag}>")
    for lang in dict.fromkeys(_FENCE.findall(prompt_text)):
        parts.append(f"```{lang}\n{CODE if lang in ('python', 'py') else 'example'}\n```")
    if replies_so_far >= 1:
        for signal in dict.fromkeys(_SIGNAL.findall(prompt_text)):
            if f"</{signal}>" not in prompt_text:
                parts.append(f"<{signal}>")
    return "\n".join(parts)


def answer(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The scripted model's answer to one request (see the module docstring for the policy).

    Args:
        messages: OpenAI chat messages, as the provider would get them.
        tools: OpenAI tool schemas offered on this request, or None.
        schema: the JSON schema of the requested output (`{}` for plain JSON mode), or None for text.

    Returns:
        `{"content": str | None, "tool_calls": [{"id": str, "name": str, "arguments": dict}]}`.
    """
    user_at = _last_user_index(messages)
    tool_since_user = any(m.get("role") == "tool" for m in messages[user_at + 1 :]) if user_at >= 0 else False
    if tools and user_at >= 0 and not tool_since_user and messages[-1].get("role") == "user":
        name, arguments = _tool_arguments(tools[0])
        return {"content": None, "tool_calls": [{"id": f"call_{len(messages)}", "name": name, "arguments": arguments}]}
    if schema is not None:
        defs = schema.get("$defs") or schema.get("definitions") or {}
        value = _value("output", schema, defs) if schema else {"answer": TEXT}
        return {"content": json.dumps(value), "tool_calls": []}
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    last_user = _text(messages[user_at].get("content")) if user_at >= 0 else ""
    replies = sum(1 for m in messages if m.get("role") == "assistant")
    return {"content": _format_answer(system + "\n" + last_user, replies), "tool_calls": []}
