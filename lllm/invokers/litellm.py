"""The litellm invoker: one code path to every provider (tools, images, structured output, streaming, cost).

This is the only module in lllm that imports litellm, and it does so lazily, on the first call (the import
costs about 3.5 s of CPU). Before importing it sets `LITELLM_LOCAL_MODEL_COST_MAP=True` unless the
environment says otherwise, so litellm uses its bundled price table instead of downloading one.

litellm's exceptions are translated at one boundary (`_provider_errors`) into `RateLimitError`,
`ModelTimeoutError` and `ModelAPIError` (with `status_code` and `model`), `raise ... from exc`. Rate limits,
timeouts, 5xx answers, malformed bodies and lost connections are retried by `BaseInvoker.call` with bounded
exponential backoff (a 429's `Retry-After` is honoured); litellm's own retries are turned off so that there is
exactly one retry loop. What a failure is called follows what happened on the wire, not litellm's label: a
stream that stops mid-way is a `ModelTimeoutError` (litellm calls it a connection error), and a body that is
not a chat completion is "malformed", not "status 500".

Time limits (see docs/guide/models.md): `connect_timeout` (10 s) to open the connection, `timeout` (120 s)
of silence from the provider (the wait for a whole non-streamed answer, or between two chunks of a stream),
and the retry policy's `deadline` (300 s) for the whole call, retries and waits included: each attempt's
timeouts are cut to the time left.

Every call that would reach a provider first checks the guard (`LLLM_ALLOW_MODEL_REQUESTS`); a call with
litellm's `mock_response` does not reach one and is allowed, which is how the tests and
`ScriptedInvoker(through_litellm=True)` run this code offline.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from lllm.records import InvokeCost
from lllm.errors import ConfigError, ModelAPIError, ModelTimeoutError, RateLimitError
from lllm.invokers._normalize import StreamAssembler, Usage, _get, normalize_response
from lllm.invokers._responses import ResponsesStream, to_responses_input, to_responses_tools
from lllm.invokers.base import BaseInvoker, InvokeRequest, InvokeResult, RetryPolicy, check_model_requests_allowed

__all__ = ["LiteLLMInvoker", "load_litellm", "mock_kwargs_for", "responses_kwargs"]

_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)+")
_import_lock = threading.Lock()
_litellm: Any = None


def load_litellm() -> Any:
    """Import litellm once (offline price table, no debug banners) and return the module."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            with warnings.catch_warnings():
                # litellm's types warn once (pydantic: "... is using the `ReadOnly` qualifier") when they are
                # first built; build them here, quietly, so that `-W error` runs (our tests) do not trip on it.
                warnings.simplefilter("ignore")
                import litellm
                from litellm.types.utils import ModelResponse, ModelResponseStream

                ModelResponse()
                ModelResponseStream()
            litellm.suppress_debug_info = True  # no "Provider List: ..." banners on stdout
            _litellm = litellm
    return _litellm


def _short(text: object, limit: int = 400) -> str:
    s = _LITELLM_PREFIX.sub("", " ".join(str(text).split()))
    return s if len(s) <= limit else s[:limit] + "..."


def _headers_of(exc: BaseException) -> Any:
    """The provider's response headers: litellm keeps the real ones on `litellm_response_headers`; its
    `response` is often a stand-in without them."""
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(getattr(exc, "response", None), "headers", None)):
        if headers:
            return headers
    return None


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait (`retry-after-ms`, or `retry-after` in seconds or as an HTTP date)."""
    headers = _headers_of(exc)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(str(value))
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _in_chain(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of these kinds in `exc`'s cause/context chain (litellm wraps the real one)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, kinds):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _is_connection_failure(exc: BaseException) -> bool:
    """True when the request never got an answer (litellm reports some of these as a 500)."""
    import httpx

    if _in_chain(exc, (httpx.TransportError,)) is not None:
        return True
    seen, current = 0, exc
    while current is not None and seen < 10:
        if type(current).__name__ == "APIConnectionError":
            return True
        current = current.__cause__ or current.__context__  # type: ignore[assignment]
        seen += 1
    return "Connection error" in str(exc)


_REAL_STATUS = re.compile(r"<APIResponse \[(\d{3})")


def translate_error(exc: BaseException, model: str, *, progress: str | None = None,
                    read_timeout: float | None = None) -> ModelAPIError:
    """The lllm error for an exception raised inside litellm (the single translation boundary).

    Args:
        exc: What litellm (or the SDK under it) raised.
        model: The model of the call.
        progress: For a stream, what had arrived when it failed ("3 chunks, 10 characters").
        read_timeout: The seconds of silence the attempt allowed (named in a timeout's message).
    """
    import httpx

    litellm = load_litellm()
    provider = getattr(exc, "llm_provider", None) or "the provider"
    detail = _short(getattr(exc, "message", None) or exc)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(exc, litellm.RateLimitError):
        return RateLimitError(
            f"rate limit from {provider} for model {model!r}: {detail}",
            status_code=status or 429,
            model=model,
            retry_after=_retry_after(exc),
        )
    silence = _in_chain(exc, (httpx.TimeoutException,))
    if isinstance(silence, httpx.ConnectTimeout):
        return ModelAPIError(
            f"could not reach {provider} for model {model!r}: the connection was not accepted in time ({detail}). "
            "Check api_base and that the server is up.",
            status_code=None, model=model, retryable=True,
        )
    if silence is not None or isinstance(exc, litellm.Timeout):
        within = f" within {round(read_timeout, 1):g}s" if read_timeout is not None else " in time"
        if progress is not None:
            what = (f"model {model!r} stopped sending mid-stream ({provider}): nothing more arrived{within} after "
                    f"{progress}")
        else:
            what = f"model {model!r} did not answer{within} ({provider})"
        return ModelTimeoutError(
            f"{what}. Raise the invoker's `timeout` (seconds of silence allowed) if long pauses are expected.",
            status_code=408,
            model=model,
        )
    bad_json = _in_chain(exc, (json.JSONDecodeError,))
    text = str(exc)
    if bad_json is not None or "Received response - <APIResponse" in text or "LiteLLM: provider returned" in text:
        found = _REAL_STATUS.search(text)
        real = int(found.group(1)) if found else None
        on_wire = f"HTTP {real}" if real else "its HTTP status was not an error"
        if isinstance(bad_json, json.JSONDecodeError):
            why = f"not JSON ({bad_json.msg} at character {bad_json.pos}); it begins {_short(bad_json.doc, 80)!r}"
        else:
            why = _short(re.sub(r"^.*?LiteLLM: ", "", detail), 240)
        return ModelAPIError(
            f"{provider} sent an answer for model {model!r} that is not a readable chat completion "
            f"(a malformed body; {on_wire}): {why}. Check that api_base points at an OpenAI-compatible "
            "endpoint (usually ending in /v1).",
            status_code=None,
            http_status=real,
            model=model,
            retryable=True,
            malformed=True,
        )
    if isinstance(exc, litellm.APIConnectionError) or _is_connection_failure(exc):
        return ModelAPIError(
            f"could not reach {provider} for model {model!r}: {detail}",
            status_code=status,
            model=model,
            retryable=True,
        )
    hint = ""
    if isinstance(exc, litellm.AuthenticationError):
        hint = " Check the provider's API key in the environment (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)."
    elif isinstance(exc, litellm.ContextWindowExceededError):
        hint = " The dialog is longer than the model's context window: fork a shorter dialog or use a larger model."
    elif "LLM Provider NOT provided" in detail:
        hint = f" litellm does not know model {model!r}: write it as 'provider/model', e.g. 'openai/gpt-4o'."
    elif isinstance(exc, litellm.NotFoundError):
        hint = f" Check the model name {model!r} and that your account can use it."
    return ModelAPIError(
        f"{provider} answered model {model!r} with an error (status {status}): {detail}.{hint}",
        status_code=status,
        model=model,
        retryable=status is not None and status >= 500,
    )


DEFAULT_DEADLINE = 300.0
"""Seconds a whole litellm call may take by default, retries and waits included."""


class _Progress:
    """One attempt's facts for its error message: the silence it allowed and, for a stream, what arrived so far
    (named when it stops mid-way). A stream also checks the call's deadline at every piece."""

    def __init__(self, read_timeout: float | None = None) -> None:
        self.read_timeout = read_timeout
        self.chunks = 0
        self.chars = 0

    def step(self, content: str | None, request: InvokeRequest) -> None:
        self.chunks += 1
        if content is not None:
            self.chars = len(content)
        left = request.remaining()
        if left is not None and left <= 0:  # a provider that trickles bytes never trips the read timeout
            raise ModelTimeoutError(
                f"model {request.model!r} was still streaming ({self.describe()}) when the call's deadline passed; "
                "raise `deadline` in the invoker config for answers this long",
                status_code=408, model=request.model, retryable=False)

    def describe(self) -> str:
        return f"{self.chunks} chunk(s), {self.chars} characters of text"


def _read_timeout(kwargs: dict[str, Any]) -> float | None:
    """The seconds of silence a request's `timeout` allows (an httpx.Timeout, or a number from model_args)."""
    timeout = kwargs.get("timeout")
    read = getattr(timeout, "read", timeout)
    return float(read) if isinstance(read, (int, float)) and not isinstance(read, bool) else None


@contextmanager
def _provider_errors(model: str, progress: _Progress | None = None) -> Iterator[None]:
    """Translate whatever litellm (or the provider SDK under it) raises into the lllm error tree."""
    try:
        yield
    except ModelAPIError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: anything litellm raises becomes an lllm error
        started = progress.describe() if progress is not None and progress.chunks > 0 else None
        raise translate_error(exc, model, progress=started,
                              read_timeout=progress.read_timeout if progress is not None else None) from exc


class LiteLLMInvoker(BaseInvoker):
    """Calls any provider through `litellm.completion` (or `litellm.responses` for a call with
    `api_type="response"`: see `lllm.invokers._responses`).

    Args:
        timeout: Seconds of silence allowed from the provider: the wait for a whole non-streamed answer, or
            between two pieces of a stream (default 120).
        connect_timeout: Seconds to open the connection (default 10).
        api_key: Passed to litellm (otherwise it reads the provider's usual environment variable).
        api_base: A custom endpoint: any OpenAI-compatible server (`http://127.0.0.1:8000/v1`), a proxy.
        extra_args: Default keyword arguments for every `litellm.completion` call (a call's `model_args`
            override them), e.g. `{"temperature": 0, "drop_params": True}`.
        retry: The retry policy (default: 3 retries, 1 s doubling, at most 30 s, with jitter, and a deadline
            of 300 s for the whole call).
    """

    name = "litellm"

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        api_key: str | None = None,
        api_base: str | None = None,
        extra_args: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        for key, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a number of seconds > 0, got {value!r}", key=key)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.api_key = api_key
        self.api_base = api_base
        self.extra_args = dict(extra_args or {})

    def __repr__(self) -> str:
        return (f"LiteLLMInvoker(timeout={self.timeout!r}, connect_timeout={self.connect_timeout!r}, "
                f"api_base={self.api_base!r}, retry={self.retry!r})")

    @classmethod
    def default_retry(cls, **overrides: Any) -> RetryPolicy:
        """3 retries with backoff, within a deadline of 300 s for the whole call, unless the config says otherwise."""
        return RetryPolicy(**{"deadline": DEFAULT_DEADLINE, **overrides})

    def _timeouts(self, request: InvokeRequest) -> Any:
        """The httpx timeouts of one attempt: the configured ones, cut to what is left of the call's deadline."""
        import httpx

        left = request.remaining()
        if left is not None and left <= 0:
            raise ModelTimeoutError(
                f"model {request.model!r}: the call's deadline passed before this attempt could start; raise "
                "`deadline` in the invoker config",
                status_code=408, model=request.model, retryable=False)
        read = self.timeout if left is None else min(self.timeout, left)
        connect = self.connect_timeout if left is None else min(self.connect_timeout, left)
        return httpx.Timeout(read, connect=connect)

    def _call_once(self, request: InvokeRequest) -> InvokeResult:
        return self.attempt(request, {})

    def attempt(self, request: InvokeRequest, extra: dict[str, Any]) -> InvokeResult:
        """One request through litellm; `extra` adds keyword arguments (the scripted model's mock_response).

        Raises:
            ModelRequestsDisabled: The call would reach a provider while LLLM_ALLOW_MODEL_REQUESTS=0.
            RateLimitError, ModelTimeoutError, ModelAPIError: Translated litellm errors.
        """
        kwargs: dict[str, Any] = {"timeout": self._timeouts(request), "max_retries": 0, **self.extra_args,
                                  **(request.model_args or {}), **extra}
        if self.api_key is not None:
            kwargs.setdefault("api_key", self.api_key)
        if self.api_base is not None:
            kwargs.setdefault("api_base", self.api_base)
        if request.api_type == "response":
            return self._attempt_responses(request, kwargs)
        if request.tools:
            kwargs["tools"] = request.tools
            # litellm 1.106 imports its MCP gateway (and the optional `mcp` package, which we do not install)
            # for any call with tools; we never route tools through litellm's MCP gateway, so skip it.
            kwargs.setdefault("_skip_mcp_handler", True)
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        # litellm answers from mock_response only when one of these is truthy; otherwise it calls the provider
        if not (kwargs.get("mock_response") or kwargs.get("mock_tool_calls") or kwargs.get("mock_timeout")):
            check_model_requests_allowed(request.model, agent=request.context.agent if request.context else None)
        litellm = load_litellm()
        model = request.model
        if request.stream_handler is not None or kwargs.get("stream"):  # model_args={"stream": True} alone streams too
            kwargs["stream"] = True
            kwargs["stream_options"] = {**kwargs.get("stream_options", {}), "include_usage": True}
            assembler = StreamAssembler(request.stream_handler)
            progress = _Progress(_read_timeout(kwargs))
            with _provider_errors(model, progress):
                for chunk in litellm.completion(model=model, messages=request.messages, **kwargs):
                    assembler.feed(chunk)
                    progress.step(assembler.content, request)
            if not assembler.content and not assembler.tool_calls() and assembler.usage is None:
                # litellm makes up a final "stop" chunk even for an HTML page: nothing real arrived
                raise ModelAPIError(
                    f"the stream for model {model!r} ended without an answer (no text, no tool call, no usage "
                    f"after {progress.describe()}): the server did not send OpenAI-style SSE events. Check that "
                    "api_base points at an OpenAI-compatible endpoint (usually ending in /v1).",
                    status_code=None, model=model, retryable=True, malformed=True)
            content, calls, finish = assembler.content, assembler.tool_calls(), assembler.finish_reason
            usage, raw = assembler.usage, None
            if usage is None:  # the provider ignored include_usage: count ourselves
                usage = self._count(request, content, calls)
            cost, note = self._price(model, usage, None)
        else:
            with _provider_errors(model, _Progress(_read_timeout(kwargs))):
                raw = litellm.completion(model=model, messages=request.messages, **kwargs)
            content, calls, finish, usage = normalize_response(raw)
            if usage is None:
                usage = self._count(request, content, calls)
            cost, note = self._price(model, usage, raw)
        return _result(content, calls, getattr(raw, "model", None) or model, usage, cost, note, finish, raw)

    def _attempt_responses(self, request: InvokeRequest, kwargs: dict[str, Any]) -> InvokeResult:
        """One request through `litellm.responses` (api_type="response"), normalised like a completion."""
        kwargs = responses_kwargs(request, kwargs)
        if not kwargs.get("mock_response"):
            check_model_requests_allowed(request.model, agent=request.context.agent if request.context else None)
            _require_mcp(request)
        litellm = load_litellm()
        model = request.model
        stream = ResponsesStream(request.stream_handler)
        progress = _Progress(_read_timeout(kwargs))
        with _provider_errors(model, progress):
            answer = litellm.responses(model=model, **kwargs)
            if _get(answer, "output") is not None:  # a whole response (not streamed, or litellm's mock)
                stream.feed(answer)
            else:
                for event in answer:
                    stream.feed(event)
                    progress.step(None, request)
        raw = stream.response
        content, calls, finish, usage = stream.result()
        if usage is None:
            usage = self._count(request, content, calls)
        cost, note = self._price(model, usage, None)
        return _result(content, calls, _get(raw, "model") or model, usage, cost, note, finish, raw)

    @staticmethod
    def _count(request: InvokeRequest, content: str | None, calls: list[Any]) -> Usage:
        litellm = load_litellm()
        try:
            prompt = litellm.token_counter(model=request.model, messages=request.messages)
            text = (content or "") + "".join(c.name + c.arguments for c in calls)
            completion = litellm.token_counter(model=request.model, text=text) if text else 0
        except Exception:  # noqa: BLE001 - counting is best effort; zero is honest when litellm cannot count
            return Usage(0, 0)
        return Usage(int(prompt), int(completion))

    @staticmethod
    def _price(model: str, usage: Usage, raw: Any) -> tuple[float, str | None]:
        """USD for this usage; (0.0, why) when litellm has no price for the model."""
        litellm = load_litellm()
        try:
            if raw is not None:
                return float(litellm.completion_cost(completion_response=raw, model=model)), None
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
            return float(prompt_cost + completion_cost), None
        except Exception as exc:  # noqa: BLE001 - an unknown price must never fail a call
            return 0.0, f"litellm has no price for model {model!r}; cost reported as 0 ({_short(exc, 160)})"


def _require_mcp(request: InvokeRequest) -> None:
    """litellm 1.106's `responses()` imports its MCP gateway (and the `mcp` package) on every real call."""
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        who = f"agent {request.context.agent!r}: " if request.context else ""
        raise ConfigError(
            f"{who}api_type='response' calls litellm.responses, which (litellm 1.106) imports the optional `mcp` "
            "package on every request, and it is not installed. Install it (`pip install 'mcp>=2.2,<3'`), or use "
            "api_type='completion' (the default) for this agent.",
            key="api_type",
        )


def responses_kwargs(request: InvokeRequest, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments (besides `model`) of the `litellm.responses` call for a chat-format request.

    `kwargs` are the invoker's defaults and the call's `model_args`. The messages become `input`, the
    prompt's tools are flattened and come before any built-in tools given in `model_args["tools"]` (e.g.
    `[{"type": "web_search_preview"}]`), `response_format` becomes `text_format`, `max_tokens` becomes
    `max_output_tokens`, and a stream handler (or `stream=True`) asks for a stream of events.
    """
    out = {k: v for k, v in kwargs.items() if k not in ("stream_options", "messages", "_skip_mcp_handler")}
    out["input"] = to_responses_input(request.messages)
    tools = to_responses_tools(request.tools) + to_responses_tools(list(out.pop("tools", None) or []))
    if tools:
        out["tools"] = tools
        out["_skip_mcp_handler"] = True  # as for completions: never route tools through litellm's MCP gateway
    if request.response_format is not None:
        out["text_format"] = request.response_format
    if "max_tokens" in out:
        out.setdefault("max_output_tokens", out.pop("max_tokens"))
    if request.stream_handler is not None or out.get("stream"):
        out["stream"] = True
    return out


def mock_kwargs_for(
    failure: Any,
    *,
    content: str | None,
    tool_calls: tuple[tuple[str, str, str], ...] = (),
    usage: tuple[int, int],
    usage_given: bool = False,
    model: str,
    stream: bool = False,
) -> dict[str, Any]:
    """litellm keyword arguments that make `litellm.completion` answer one scripted step offline.

    A streamed plain-text answer without scripted usage is given to litellm as a string: litellm then
    chunks it and counts its tokens itself. Every other answer is a `ModelResponse` carrying `usage`
    (litellm streams that as one chunk).

    Args:
        failure: A scripted error step (`kind`, `message`, `status_code`), or None for an answer.
        content: The answer's text.
        tool_calls: (id, name, raw arguments) triples.
        usage: (prompt_tokens, completion_tokens) to report.
        usage_given: True when the script set the usage (it is then reported as is, also when streaming).
        model: The requested model (one litellm cannot place is sent as an OpenAI-compatible model).
        stream: Whether the call streams.

    Returns:
        `mock_response` (a string, a `ModelResponse` or a litellm exception), plus `custom_llm_provider`
        when litellm cannot tell the model's provider.
    """
    litellm = load_litellm()
    extra: dict[str, Any] = {}
    try:
        litellm.get_llm_provider(model=model)
        provider = "openai"
    except Exception:  # noqa: BLE001 - litellm does not know the model: treat it as an OpenAI-compatible one
        provider = "openai"
        extra["custom_llm_provider"] = provider
    if failure is not None:
        args = {"message": failure.message, "llm_provider": provider, "model": model}
        if failure.kind == "rate_limit":
            exc: Exception = litellm.RateLimitError(**args)
        elif failure.kind == "timeout":
            exc = litellm.Timeout(**args)
        elif failure.status_code == 500:
            exc = litellm.InternalServerError(**args)
        elif failure.status_code == 503:
            exc = litellm.ServiceUnavailableError(**args)
        else:
            exc = litellm.APIError(status_code=failure.status_code, **args)
        extra["mock_response"] = exc
        return extra
    if stream and content and not tool_calls and not usage_given:
        extra["mock_response"] = content
        return extra
    from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Message, ModelResponse
    from litellm.types.utils import Usage as LiteLLMUsage

    calls = [
        ChatCompletionMessageToolCall(id=cid, type="function", function={"name": name, "arguments": args})
        for cid, name, args in tool_calls
    ]
    prompt, completion = usage
    extra["mock_response"] = ModelResponse(
        model=model,
        choices=[
            Choices(
                index=0,
                message=Message(content=content, role="assistant", tool_calls=calls or None),
                finish_reason="tool_calls" if calls else "stop",
            )
        ],
        usage=LiteLLMUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
    )
    return extra


def _result(content: str | None, calls: list[Any], model: str, usage: Any, cost: float, note: str | None,
            finish: str | None, raw: Any) -> InvokeResult:
    """The normalised result of one answer, from a completion or a Responses call."""
    return InvokeResult(
        content=content,
        tool_calls=calls,
        model=model,
        usage=InvokeCost.model_construct(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                         total_tokens=usage.total_tokens, cost=cost),
        raw=raw,
        cost_note=note,
        finish_reason=finish,
    )
