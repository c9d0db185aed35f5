"""A fake OpenAI-compatible chat completions server on 127.0.0.1, for testing the real-model path end to end.

lllm's litellm invoker talks HTTP to it exactly as it would to a provider (litellm -> the OpenAI SDK -> httpx),
so what the tests check is what a user pointing lllm at vLLM, llama.cpp, Ollama or a provider would see. No
provider is reached: the server binds 127.0.0.1 only.

It answers `POST /v1/chat/completions` (and `/chat/completions`) from a script of `Reply`s, one per request,
or from a function of the request. A reply can be an answer (text and/or tool calls, as JSON or as an SSE
stream when the request says `stream: true`), an error status with headers (a 429 with `Retry-After`), a
malformed body, a stream that stalls after some chunks, or no answer at all. Every request is recorded with
its arrival time, so tests can measure the waits between retries.

```python
with FakeOpenAI([error(429, retry_after=2), text("hello")]) as server:
    invoker = LiteLLMInvoker(api_base=server.url, api_key="sk-fake")
    invoker.call(messages, model="openai/fake-model")
```
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["FakeOpenAI", "Reply", "error", "hang", "malformed", "stall", "text", "tool_calls"]


@dataclass
class Reply:
    """What the server does with one request."""

    content: str | None = None
    """The assistant's text."""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    """Tool calls as (name, arguments dict or raw JSON string)."""
    usage: tuple[int, int] | None = (12, 7)
    """(prompt_tokens, completion_tokens) reported; None: no usage in the answer."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    """Sent as is instead of a generated answer (an error page, a malformed body)."""
    stall_after: int | None = None
    """Streaming: send this many chunks, then nothing more (the connection stays open)."""
    hang: bool = False
    """Send nothing at all (the connection stays open until the client gives up or the server closes)."""
    chunk_chars: int = 4
    """Streaming: characters of content per chunk."""


def text(content: str, **kw: Any) -> Reply:
    """An answer with this text."""
    return Reply(content=content, **kw)


def tool_calls(*calls: tuple[str, Any], content: str | None = None, **kw: Any) -> Reply:
    """An answer calling tools, e.g. `tool_calls(("run_python", {"code": "1+1"}), content="Let me check.")`."""
    return Reply(content=content, calls=list(calls), **kw)


def error(status: int, message: str = "fake provider error", *, retry_after: float | None = None,
          kind: str = "server_error") -> Reply:
    """An OpenAI-style error body with this status (and a Retry-After header when given)."""
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
    return Reply(status=status, headers=headers, body=body)


def malformed(body: str = '{"id": "chatcmpl-x", "choices": [', status: int = 200) -> Reply:
    """A body that is not the JSON of a chat completion (cut off, HTML, ...)."""
    return Reply(status=status, body=body.encode())


def stall(content: str, after: int = 2) -> Reply:
    """A streamed answer that sends `after` chunks and then goes silent."""
    return Reply(content=content, stall_after=after)


def hang() -> Reply:
    """No answer at all."""
    return Reply(hang=True)


Responder = Callable[[dict[str, Any]], Reply]


class FakeOpenAI:
    """The server (see the module docstring). Use as a context manager, or call `close()`.

    Args:
        replies: One `Reply` per request, in order (a request past the end gets a 500 saying so), or a
            function `request_json -> Reply`.
    """

    def __init__(self, replies: list[Reply] | Responder) -> None:
        self._replies = replies if callable(replies) else list(replies)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.requests: list[dict[str, Any]] = []
        """Every request: `path`, `json`, `headers` (lower-case), `at` (time.monotonic() on arrival)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                fake._serve(self, body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    fake._send(self, 200, json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode())
                else:
                    fake._send(self, 404, b'{"error": {"message": "not found"}}')

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-stream is what some tests do on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/v1"
        """The `api_base` to give lllm (OpenAI-style, ending in /v1)."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()

    # -- answering -------------------------------------------------------------------------------------

    def _next(self, body: dict[str, Any]) -> Reply:
        if callable(self._replies):
            return self._replies(body)
        with self._lock:
            if not self._replies:
                return error(500, f"the fake server has no reply for request {len(self.requests)}")
            return self._replies.pop(0)

    def _serve(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append({"path": handler.path, "json": body, "at": time.monotonic(),
                                  "headers": {k.lower(): v for k, v in handler.headers.items()}})
        if not handler.path.rstrip("/").endswith("/chat/completions"):
            self._send(handler, 404, json.dumps({"error": {"message": f"no route {handler.path}"}}).encode())
            return
        reply = self._next(body)
        if reply.hang:
            self._released.wait(120)
            return
        if reply.body is not None:
            self._send(handler, reply.status, reply.body, reply.headers)
            return
        model = str(body.get("model") or "fake-model")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(handler, reply, model, include_usage)
        else:
            self._send(handler, reply.status, json.dumps(self._completion(reply, model)).encode(), reply.headers)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, data: bytes,
              headers: dict[str, str] | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass

    @staticmethod
    def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
        return [{"id": f"call_{i}", "type": "function",
                 "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                for i, (name, args) in enumerate(reply.calls)]

    def _completion(self, reply: Reply, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        calls = self._tool_calls(reply)
        if calls:
            message["tool_calls"] = calls
        out: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        }
        if reply.usage is not None:
            p, c = reply.usage
            out["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        return out

    def _chunks(self, reply: Reply, model: str, include_usage: bool) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        text_ = reply.content or ""
        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": text_[i:i + reply.chunk_chars]}) for i in range(0, len(text_), reply.chunk_chars)]
        for j, call in enumerate(self._tool_calls(reply)):
            out.append(chunk({"tool_calls": [{"index": j, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            out.append(chunk({"tool_calls": [{"index": j, "function": {"arguments": call["function"]["arguments"]}}]}))
        out.append(chunk({}, "tool_calls" if reply.calls else "stop"))
        if include_usage and reply.usage is not None:
            p, c = reply.usage
            out.append({"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": model, "choices": [],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
        return out

    def _stream(self, handler: BaseHTTPRequestHandler, reply: Reply, model: str, include_usage: bool) -> None:
        chunks = self._chunks(reply, model, include_usage)
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-cache")
            handler.send_header("Connection", "close")
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            for i, c in enumerate(chunks):
                if reply.stall_after is not None and i >= reply.stall_after:
                    self._released.wait(120)  # silent, connection open: a stalled stream
                    return
                handler.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                handler.wfile.flush()
            handler.wfile.write(b"data: [DONE]\n\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client gave up
        handler.close_connection = True

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release stalled answers and stop the server."""
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
