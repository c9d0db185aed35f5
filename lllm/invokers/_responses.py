"""The OpenAI Responses API mapping (`api_type="response"`): chat messages and tools in, one `InvokeResult` out.

An agent configured with `api_type: response` (the seed: "set api_type = "response" per agent to enable
native OpenAI web search") is called through `litellm.responses` instead of `litellm.completion`. The dialog
stays in chat format; this module translates it at the boundary, in pure functions with no litellm import:

- `to_responses_input(messages)`: system/user/assistant messages become input messages (text parts become
  `input_text`/`output_text`, `image_url` parts become `input_image`), an assistant's `tool_calls` become
  `function_call` items and tool messages become `function_call_output` items with the same `call_id`;
- `to_responses_tools(tools)`: chat-format function schemas are flattened (`{"type": "function", "name", ...}`);
  built-in tools such as `{"type": "web_search_preview"}` pass through unchanged;
- `normalize_responses_output(raw)`: the response's `message` items give the text, its `function_call` items
  the tool calls, its usage the tokens (`input_tokens`/`output_tokens`); built-in tool items (web search) are
  the provider's business and are left in `raw`;
- `ResponsesStream`: feeds `response.output_text.delta` events to the stream handler and keeps the final
  response of `response.completed`.
"""

from __future__ import annotations

import json
from typing import Any

from lllm.errors import ConfigError, UsageError
from lllm.invokers._normalize import Usage, _get
from lllm.invokers.base import API_TYPES, BaseStreamHandler, ToolCallRequest, check_api_type

__all__ = [
    "API_TYPES",
    "ResponsesStream",
    "check_api_type",
    "normalize_responses_output",
    "to_responses_input",
    "to_responses_tools",
]



def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


def _parts(content: Any, *, role: str) -> str | list[dict[str, Any]]:
    """Chat content (a string or parts) as Responses content; images become `input_image` parts."""
    if content is None or isinstance(content, str):
        return content or ""
    text_type = "output_text" if role == "assistant" else "input_text"
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": text_type, "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            item: dict[str, Any] = {"type": "input_image", "image_url": url}
            if isinstance(image, dict) and image.get("detail"):
                item["detail"] = image["detail"]
            out.append(item)
        else:  # already a Responses part (input_text, input_file, ...): the caller knows what it sends
            out.append(part)
    return out


def to_responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat-format messages as the `input` list of a Responses API request.

    Raises:
        UsageError: A message has a role the Responses API has no equivalent for.
    """
    items: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        content = msg.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": msg.get("tool_call_id") or "",
                          "output": content if isinstance(content, str) else _text_of(content)})
            continue
        if role not in ("system", "developer", "user", "assistant"):
            raise UsageError(f"message {i} has role {role!r}, which the Responses API (api_type='response') cannot "
                             "take; use system, user, assistant or tool messages", role=role)
        if role != "assistant" or content not in (None, "", []):
            items.append({"role": role, "content": _parts(content, role=role)})
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id") or "", "name": fn.get("name") or "",
                          "arguments": fn.get("arguments") or "{}"})
    return items


def to_responses_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat-format tool schemas as Responses API tools (function schemas flattened, built-in tools unchanged)."""
    out: list[dict[str, Any]] = []
    for tool in tools or []:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict):
            flat = {"type": "function", "name": fn.get("name")}
            for key in ("description", "parameters", "strict"):
                if key in fn:
                    flat[key] = fn[key]
            out.append(flat)
        else:
            out.append(tool)
    return out


def _responses_usage(raw: Any) -> Usage | None:
    usage = _get(raw, "usage")
    if usage is None:
        return None
    prompt, completion = _get(usage, "input_tokens"), _get(usage, "output_tokens")
    if prompt is None and completion is None:
        return None
    return Usage(int(prompt or 0), int(completion or 0))


def normalize_responses_output(raw: Any) -> tuple[str | None, list[ToolCallRequest], str | None, Usage | None]:
    """(content, tool_calls, finish_reason, usage) of a Responses API response (object or dict)."""
    texts: list[str] = []
    calls: list[ToolCallRequest] = []
    for item in _get(raw, "output") or []:
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content") or []:
                if _get(part, "type") == "output_text":
                    texts.append(_get(part, "text") or "")
        elif kind == "function_call":
            args = _get(item, "arguments")
            if not isinstance(args, str):
                args = json.dumps(args if args is not None else {})
            calls.append(ToolCallRequest(id=_get(item, "call_id") or _get(item, "id") or f"call_{len(calls)}",
                                         name=_get(item, "name") or "", arguments=args))
    status = _get(raw, "status")
    if calls:
        finish = "tool_calls"
    elif status == "incomplete":
        finish = "length"
    else:
        finish = "stop" if status in (None, "completed") else str(status)
    return ("".join(texts) if texts else None), calls, finish, _responses_usage(raw)


class ResponsesStream:
    """Consumes a Responses API event stream: text deltas go to the handler, the final response is kept."""

    def __init__(self, handler: BaseStreamHandler | None) -> None:
        self.handler = handler
        self.response: Any = None
        self._text: list[str] = []

    def feed(self, event: Any) -> None:
        """Take one streamed event (or a whole response, which is what litellm's mock gives back)."""
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            delta = _get(event, "delta") or ""
            if delta:
                self._text.append(delta)
                if self.handler is not None:
                    self.handler.on_token(delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.response = _get(event, "response")
        elif _get(event, "output") is not None:  # not a stream: a complete response
            self.response = event
            content = normalize_responses_output(event)[0]
            if content and self.handler is not None:
                self.handler.on_token(content)

    def result(self) -> tuple[str | None, list[ToolCallRequest], str | None, Usage | None]:
        """What the stream said, from the final response when one arrived, else from the deltas."""
        if self.response is not None:
            return normalize_responses_output(self.response)
        text = "".join(self._text)
        return (text or None), [], "stop", None
