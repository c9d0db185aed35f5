"""OpenAI-format response normalisation shared by the invokers: whole responses and streamed chunks.

Both litellm's objects (`ModelResponse`, `ModelResponseStream`) and plain OpenAI-format dicts (what the
scripted model produces in-process) go through the same functions, so the scripted model exercises the
code that turns a real provider's answer, or its stream of deltas, into an `InvokeResult`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lllm.invokers.base import BaseStreamHandler, ToolCallRequest

__all__ = [
    "StreamAssembler",
    "Usage",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "normalize_response",
]

# An image costs about this many tokens at low detail (OpenAI's figure); the estimate only needs to be plausible.
_IMAGE_TOKENS = 85


def _get(obj: Any, key: str) -> Any:
    """`obj[key]` for dicts, `obj.key` for litellm objects; None when missing."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass(slots=True)
class Usage:
    """Token counts as a provider reports them (None: not reported)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _usage(obj: Any) -> Usage | None:
    usage = _get(obj, "usage")
    if usage is None:
        return None
    prompt = _get(usage, "prompt_tokens")
    completion = _get(usage, "completion_tokens")
    if prompt is None and completion is None:
        return None
    return Usage(int(prompt or 0), int(completion or 0))


def _tool_calls(raw: Any) -> list[ToolCallRequest]:
    calls = []
    for i, tc in enumerate(raw or ()):
        fn = _get(tc, "function")
        args = _get(fn, "arguments")
        if args is None:
            args = ""
        elif not isinstance(args, str):  # some providers hand back a dict; keep the seam's "raw JSON string"
            args = json.dumps(args)
        calls.append(ToolCallRequest(id=_get(tc, "id") or f"call_{i}", name=_get(fn, "name") or "", arguments=args))
    return calls


def normalize_response(resp: Any) -> tuple[str | None, list[ToolCallRequest], str | None, Usage | None]:
    """Content, tool calls, finish reason and usage of a non-streamed chat completion.

    Args:
        resp: A litellm `ModelResponse` or an OpenAI-format dict.

    Returns:
        (content, tool_calls, finish_reason, usage or None when the response has none).
    """
    choices = _get(resp, "choices") or []
    if not choices:
        return None, [], None, _usage(resp)
    choice = choices[0]
    message = _get(choice, "message")
    content = _get(message, "content")
    return content, _tool_calls(_get(message, "tool_calls")), _get(choice, "finish_reason"), _usage(resp)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Folds streamed chunks into one answer: text deltas go to the handler, tool-call deltas are joined.

    Tool-call deltas arrive keyed by `index`: the first carries `id` and `function.name`, later ones append
    to `function.arguments`. Usage arrives in a final chunk when the request asked for it
    (`stream_options={"include_usage": True}`).
    """

    def __init__(self, handler: BaseStreamHandler | None) -> None:
        self.handler = handler
        self.text: list[str] = []
        self.calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0

    def feed(self, chunk: Any) -> None:
        """Take one chunk (a litellm `ModelResponseStream` or an OpenAI-format dict)."""
        self.chunks += 1
        usage = _usage(chunk)
        if usage is not None:
            self.usage = usage
        for choice in _get(chunk, "choices") or ():
            if (_get(choice, "index") or 0) != 0:
                continue
            reason = _get(choice, "finish_reason")
            if reason:
                self.finish_reason = reason
            delta = _get(choice, "delta")
            if delta is None:
                continue
            token = _get(delta, "content")
            if token:
                self.text.append(token)
                if self.handler is not None:
                    self.handler.on_token(token)
            for tc in _get(delta, "tool_calls") or ():
                index = _get(tc, "index")
                if index is None:
                    index = len(self.calls)
                part = self.calls.setdefault(index, _PartialCall())
                if _get(tc, "id"):
                    part.id = _get(tc, "id")
                fn = _get(tc, "function")
                if _get(fn, "name"):
                    part.name = _get(fn, "name")
                args = _get(fn, "arguments")
                if args:
                    part.arguments.append(args)

    @property
    def content(self) -> str | None:
        """The text so far (None when no text arrived)."""
        return "".join(self.text) if self.text else None

    def tool_calls(self) -> list[ToolCallRequest]:
        """The assembled tool calls, in index order."""
        return [
            ToolCallRequest(id=part.id or f"call_{i}", name=part.name, arguments="".join(part.arguments))
            for i, part in sorted(self.calls.items())
        ]


def estimate_text_tokens(text: str) -> int:
    """About one token per four characters (at least 1 for non-empty text)."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """A rough prompt size: chars/4 of every text part, 85 per image, 4 per message, and the tool schemas."""
    total = 0
    for msg in messages:
        total += 4
        content = msg.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    total += estimate_text_tokens(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    total += _IMAGE_TOKENS
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") or {}
            total += estimate_text_tokens(str(fn.get("name", "")) + str(fn.get("arguments", "")))
    if tools:
        total += sum(estimate_text_tokens(repr(t)) for t in tools)
    return total
