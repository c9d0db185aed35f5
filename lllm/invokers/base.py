"""The invoker seam: `BaseInvoker` (call/acall), its request and result types, the stream handler, the guard
against real provider calls, and the bounded retry-with-backoff loop every invoker shares.

An invoker turns OpenAI chat-format messages into one `InvokeResult`. Subclasses implement one attempt
(`_call_once`); `BaseInvoker.call` wraps it in the retry loop, measures latency and fires `on_done`, so a
scripted rate limit and a real one are retried by the same code. See docs/internals.md, "Invokers".

The guard: `ALLOW_MODEL_REQUESTS` is read once from the environment variable `LLLM_ALLOW_MODEL_REQUESTS`
(default on; "0", "false", "no" or "off" turn it off). Invokers that reach a real provider call
`check_model_requests_allowed()` before each request; with the flag off it raises `ModelRequestsDisabled`.
Under pytest, lllm's plugin (`lllm.testing.plugin`) sets it to 0 for every session; a test may flip the module flag.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from lllm.errors import ConfigError, InvokerError, ModelAPIError, ModelRequestsDisabled, ModelTimeoutError, RateLimitError
from lllm.records import InvokeCost

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "BaseInvoker",
    "BaseStreamHandler",
    "CallScope",
    "InvokeContext",
    "InvokeRequest",
    "InvokeResult",
    "RetryPolicy",
    "ToolCallRequest",
    "call_scope",
    "check_api_type",
    "check_model_requests_allowed",
    "current_call_scope",
    "is_retryable",
    "resolve_dotted",
    "run_with_retries",
]

_OFF_VALUES = {"0", "false", "no", "off"}


def _env_allows_requests() -> bool:
    return os.environ.get("LLLM_ALLOW_MODEL_REQUESTS", "1").strip().lower() not in _OFF_VALUES


ALLOW_MODEL_REQUESTS: bool = _env_allows_requests()
"""False when `LLLM_ALLOW_MODEL_REQUESTS` is 0/false/no/off at import; then no invoker reaches a provider."""


def check_model_requests_allowed(model: str, *, agent: str | None = None) -> None:
    """Raise `ModelRequestsDisabled` when real provider calls are turned off.

    Args:
        model: The model the call was for (named in the error).
        agent: The agent that made it, if known.

    Raises:
        ModelRequestsDisabled: `ALLOW_MODEL_REQUESTS` is false.
    """
    if ALLOW_MODEL_REQUESTS:
        return
    who = f" by agent {agent!r}" if agent else ""
    raise ModelRequestsDisabled(
        f"a real model request to {model!r}{who} was blocked: LLLM_ALLOW_MODEL_REQUESTS=0 (tests and offline "
        "runs). Use the scripted model instead: build_invoker({'invoker': 'scripted', 'steps': [...]}) or, in a "
        "test, `with lllm.invokers.override(ScriptedInvoker([...])):`; or set LLLM_ALLOW_MODEL_REQUESTS=1 "
        "to allow real calls.",
        model=model,
        agent=agent,
    )


class BaseStreamHandler:
    """Receives a streamed answer: `on_token` once per text delta, `on_done` once when the call succeeded.

    Both are no-ops here; subclass and override what you need (the seed's Pattern 5 prints tokens).
    A retried attempt may already have delivered some tokens before it failed.
    """

    def on_token(self, token: str) -> None:
        """Called with each piece of text as it arrives."""

    def on_done(self) -> None:
        """Called once after the last token of a successful call."""


class RecordingStreamHandler(BaseStreamHandler):
    """Keeps what was streamed: `tokens` in order and `done`, how many calls finished (for tests and demos)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.done = 0

    @property
    def text(self) -> str:
        """Every token so far, joined."""
        return "".join(self.tokens)

    def on_token(self, token: str) -> None:
        self.tokens.append(token)

    def on_done(self) -> None:
        self.done += 1


@dataclass(frozen=True, slots=True)
class InvokeContext:
    """Who is calling: used in error messages (the scripted model names them when it runs out of steps)."""

    agent: str = "?"
    """The agent's name."""
    dialog: str | None = None
    """The alias of the dialog the call belongs to."""


@dataclass(frozen=True, slots=True)
class CallScope:
    """The unit of work a model request belongs to: one tactic call (set by the core for the call's length)."""

    call_id: str
    """Unique per call (the tactic call session's id)."""
    task: str | None = None
    """The call's task as text (`lllm.records.task_text`), e.g. for a scripted model keyed by task."""


_CALL_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("lllm_call_scope", default=None)


def current_call_scope() -> CallScope | None:
    """The call scope model requests made here belong to (None outside a tactic call)."""
    return _CALL_SCOPE.get()


@contextmanager
def call_scope(call_id: str, task: str | None = None) -> Iterator[CallScope]:
    """Make the model requests of this block (and of threads that copy its context) belong to one call."""
    scope = CallScope(call_id, task)
    token = _CALL_SCOPE.set(scope)
    try:
        yield scope
    finally:
        _CALL_SCOPE.reset(token)


@dataclass(slots=True)
class ToolCallRequest:
    """One tool call the model asked for."""

    id: str
    """The provider's call id; a tool message answers it with `tool_call_id`."""
    name: str
    """The function name."""
    arguments: str
    """The raw JSON string the model produced (possibly malformed: the Agent parses and reports it)."""

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-format dict that goes into an assistant message's `tool_calls`."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class InvokeResult:
    """What one `BaseInvoker.call` returns: the assistant's answer, usage and cost, and how it went."""

    content: str | None
    """The assistant's text (None when it only called tools)."""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    """Tools the model asked to call, in order."""
    model: str = ""
    """The model that answered."""
    usage: InvokeCost = field(default_factory=InvokeCost)
    """Tokens and USD cost of the successful attempt."""
    latency_s: float = 0.0
    """Wall time of the whole call, retries and backoff included."""
    attempts: int = 1
    """1 plus the number of retried failures."""
    errors: list[str] = field(default_factory=list)
    """The retried failures, as `Type: message` strings."""
    raw: Any = None
    """The provider's response object (a litellm ModelResponse, or the scripted step)."""
    cost_note: str | None = None
    """Why `usage.cost` may be wrong (e.g. litellm has no price for the model), else None."""
    finish_reason: str | None = None
    """The provider's finish reason ("stop", "tool_calls", "length", ...) when known."""
    parsed: Any = None
    """With `response_format=SomeModel`: the validated instance (None if the content did not validate)."""

    def to_message(self) -> dict[str, Any]:
        """The OpenAI chat-format assistant message for this answer (what the next request sends back)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        return msg


@dataclass(slots=True)
class InvokeRequest:
    """Everything one call was asked to do (what `_call_once` receives on each attempt)."""

    messages: list[dict[str, Any]]
    model: str
    tools: list[dict[str, Any]] | None = None
    response_format: type[BaseModel] | None = None
    stream_handler: BaseStreamHandler | None = None
    model_args: dict[str, Any] | None = None
    context: InvokeContext | None = None
    api_type: str | None = None
    """None or "completion": chat completions; "response": the OpenAI Responses API (invokers that can)."""
    deadline_at: float | None = None
    """`time.monotonic()` by which the whole call (every attempt and wait) must be over, or None: no deadline.
    An attempt sizes its own timeouts to the time left (`remaining()`)."""

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline (never below 0), or None without a deadline."""
        return None if self.deadline_at is None else max(0.0, self.deadline_at - time.monotonic())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, within an optional deadline for the whole call.

    Attempt n (n >= 1) that fails with a retryable error waits `min(backoff_max, backoff * 2**(n-1))`,
    scaled by a random factor in [0.5, 1.0], then tries again, at most `max_retries` times. A provider's
    `Retry-After` (the error's `retry_after`, seconds) is honoured in full when it is longer: retrying sooner
    would only be refused again. When the wait would pass the `deadline`, or a `Retry-After` is longer than
    `backoff_max` and there is no deadline, the call gives up at once and says how long the provider asked
    to wait.
    """

    max_retries: int = 3
    """Retries after the first attempt (0: never retry)."""
    backoff: float = 1.0
    """The first wait, in seconds."""
    backoff_max: float = 30.0
    """No wait is longer than this."""
    jitter: bool = True
    """Scale each wait by a random factor in [0.5, 1.0], so that parallel workers do not retry in step."""
    deadline: float | None = None
    """Seconds the whole call may take, attempts and waits included (None: no limit but the attempts')."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {self.max_retries!r}", key="max_retries")
        for key in ("backoff", "backoff_max"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{key} must be a number of seconds >= 0, got {value!r}", key=key)
        if self.deadline is not None and (not isinstance(self.deadline, (int, float)) or self.deadline <= 0):
            raise ConfigError(f"deadline must be a number of seconds > 0 (or null), got {self.deadline!r}",
                              key="deadline")

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): the backoff, or the provider's
        Retry-After when that is longer."""
        wait = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        if self.jitter:
            wait *= random.uniform(0.5, 1.0)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > wait:
            wait = float(retry_after)
        return wait


def is_retryable(exc: BaseException) -> bool:
    """True for transient provider failures: rate limits, timeouts, 5xx and lost connections.

    An error may decide for itself with a `retryable` fact; otherwise a `ModelAPIError` is retried when its
    `status_code` is None (no answer) or >= 500.
    """
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, (RateLimitError, ModelTimeoutError)):
        return True
    if isinstance(exc, ModelAPIError):
        status = getattr(exc, "status_code", None)
        return status is None or status >= 500
    return False


def run_with_retries(
    attempt_fn: Callable[[], InvokeResult],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    deadline_at: float | None = None,
) -> InvokeResult:
    """Run `attempt_fn` until it succeeds, retrying retryable `InvokerError`s at most `policy.max_retries` times.

    Args:
        attempt_fn: Makes one attempt and returns its result.
        policy: How often and how long to wait.
        sleep: The waiting function (tests pass a recorder).
        deadline_at: `time.monotonic()` after which no attempt starts (default: `policy.deadline` from now).

    Returns:
        The successful result, with `attempts` and `errors` filled in.

    Raises:
        InvokerError: The first non-retryable error at once, or the last retryable one when retries ran out
            (its message then says how many attempts were made; `attempts` and `errors` are facts on it).
    """
    errors: list[str] = []
    attempt = 1
    if deadline_at is None and policy.deadline is not None:
        deadline_at = time.monotonic() + policy.deadline
    while True:
        try:
            result = attempt_fn()
        except InvokerError as exc:
            if not is_retryable(exc):
                raise
            errors.append(f"{type(exc).__name__}: {exc}")
            if attempt > policy.max_retries:
                if policy.max_retries == 0:
                    raise
                facts = {**exc.facts, "attempts": attempt, "errors": errors}
                raise type(exc)(
                    f"{exc.message} (gave up after {attempt} attempts, {policy.max_retries} retries with backoff; "
                    "raise max_retries in the invoker config, or lower the load, e.g. bcall(max_workers=...))",
                    **facts,
                ) from exc
            wait = policy.delay(attempt, exc)
            why = _cannot_wait(wait, exc, policy, deadline_at)
            if why:
                facts = {**exc.facts, "attempts": attempt, "errors": errors}
                raise type(exc)(f"{exc.message} (gave up after {attempt} attempt(s): {why})", **facts) from exc
            sleep(wait)
            attempt += 1
            continue
        result.attempts = attempt
        result.errors = errors
        return result


def _cannot_wait(wait: float, exc: BaseException, policy: RetryPolicy, deadline_at: float | None) -> str | None:
    """Why waiting `wait` seconds before the next attempt makes no sense, or None when it does."""
    retry_after = getattr(exc, "retry_after", None)
    asked = isinstance(retry_after, (int, float)) and wait == float(retry_after)
    if deadline_at is not None:
        left = deadline_at - time.monotonic()
        if wait >= left:
            what = f"the provider asked to wait {wait:g}s (Retry-After)" if asked else f"the next wait is {wait:.1f}s"
            of = f" of {policy.deadline:g}s" if policy.deadline is not None else ""
            return (f"{what}, and the call's deadline{of} leaves {max(0.0, left):.1f}s; raise `deadline` in the "
                    "invoker config, or retry later")
    elif asked and wait > policy.backoff_max:
        return (f"the provider asked to wait {wait:g}s (Retry-After), longer than backoff_max={policy.backoff_max:g}s; "
                "raise backoff_max or set a `deadline` in the invoker config, or retry later")
    return None


# The keys every invoker config may carry besides its own constructor options.
_RETRY_KEYS = ("max_retries", "backoff", "backoff_max", "jitter", "deadline")


class BaseInvoker(ABC):
    """Sends one request to a model and returns an `InvokeResult`; subclasses implement `_call_once`.

    `call` runs `_call_once` under the invoker's `RetryPolicy`, measures latency and calls the stream
    handler's `on_done` once at the end of a successful call. `acall` runs `call` in a worker thread.
    Build one from a config dict with `lllm.invokers.build_invoker`.
    """

    name: str = "base"
    """The registry name (set by subclasses)."""

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.retry = retry if retry is not None else self.default_retry()
        self._sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BaseInvoker:
        """Build from a config dict (without its `invoker` key); unknown keys are a `ConfigError`.

        The keys are the constructor's keyword options plus `max_retries`, `backoff`, `backoff_max` and
        `jitter` (the retry policy).
        """
        options = dict(config)
        retry_args = {k: options.pop(k) for k in _RETRY_KEYS if k in options}
        params = inspect.signature(cls.__init__).parameters
        accepted = [p for p in params if p not in ("self", "retry") and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in options if k not in accepted]
        if unknown and not takes_any:
            raise ConfigError(
                f"unknown key(s) {unknown!r} in the {cls.name!r} invoker config; accepted: "
                f"{sorted([*accepted, *_RETRY_KEYS])!r}",
                key=unknown[0],
            )
        retry = cls.default_retry(**retry_args)
        try:
            return cls(**options, retry=retry)
        except TypeError as exc:
            raise ConfigError(f"bad {cls.name!r} invoker config {config!r}: {exc}", key="invoker") from exc

    @classmethod
    def default_retry(cls, **overrides: Any) -> RetryPolicy:
        """The retry policy this invoker uses unless the config says otherwise."""
        return RetryPolicy(**overrides)

    def call(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        tools: list[dict[str, Any]] | None = None,
        response_format: type[BaseModel] | None = None,
        stream_handler: BaseStreamHandler | None = None,
        model_args: dict[str, Any] | None = None,
        context: InvokeContext | None = None,
        api_type: str | None = None,
    ) -> InvokeResult:
        """Ask the model for the next assistant message.

        Args:
            messages: OpenAI chat-format messages (image parts as `image_url` data URLs).
            model: The model name, as litellm spells it ("gpt-4o", "anthropic/claude-...").
            tools: OpenAI tool schemas the model may call.
            response_format: A pydantic model for structured output; the result's `parsed` holds the instance.
            stream_handler: Receives text deltas as they arrive; None: no streaming.
            model_args: Extra provider arguments (temperature, max_tokens, ...).
            context: The calling agent and dialog, for error messages.
            api_type: "response" asks for the OpenAI Responses API (the litellm invoker then calls
                `litellm.responses`); None or "completion": chat completions. Invokers without a Responses
                path (the scripted model) answer the same way either way and record it in the request.

        Returns:
            The answer with usage, cost, latency and the retried failures.

        Raises:
            RateLimitError, ModelTimeoutError, ModelAPIError: The provider failed (after bounded retries).
            ModelRequestsDisabled: A real call while LLLM_ALLOW_MODEL_REQUESTS=0.
            ScriptError: The scripted model has no step for this request.
        """
        if api_type is not None and api_type not in API_TYPES:
            check_api_type(api_type, agent=context.agent if context else None)  # raises, naming the choices
        request = InvokeRequest(messages, model, tools, response_format, stream_handler, model_args, context, api_type)
        if self.retry.deadline is not None:
            request.deadline_at = time.monotonic() + self.retry.deadline
        start = time.perf_counter()
        result = run_with_retries(lambda: self._call_once(request), policy=self.retry, sleep=self._sleep,
                                  deadline_at=request.deadline_at)
        result.latency_s = time.perf_counter() - start
        if response_format is not None and result.parsed is None and result.content:
            result.parsed = _validate_structured(response_format, result.content)
        if stream_handler is not None:
            stream_handler.on_done()
        return result

    async def acall(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        tools: list[dict[str, Any]] | None = None,
        response_format: type[BaseModel] | None = None,
        stream_handler: BaseStreamHandler | None = None,
        model_args: dict[str, Any] | None = None,
        context: InvokeContext | None = None,
        api_type: str | None = None,
    ) -> InvokeResult:
        """`call` in a worker thread, so the event loop stays free (same arguments, same result)."""
        return await asyncio.to_thread(
            self.call,
            messages,
            model=model,
            tools=tools,
            response_format=response_format,
            stream_handler=stream_handler,
            model_args=model_args,
            context=context,
            api_type=api_type,
        )

    @abstractmethod
    def _call_once(self, request: InvokeRequest) -> InvokeResult:
        """Make one attempt; raise an `InvokerError` subclass on failure (retryable ones are retried)."""


API_TYPES = ("completion", "response")
"""The accepted values of `api_type` (None means "completion")."""


def check_api_type(api_type: Any, *, agent: str | None = None) -> str | None:
    """Return `api_type` when it is None, "completion" or "response"; otherwise raise `ConfigError`."""
    if api_type is None or api_type in API_TYPES:
        return api_type
    who = f"agent {agent!r}: " if agent else ""
    raise ConfigError(
        f"{who}unknown api_type {api_type!r}; use 'completion' (chat completions, the default) or 'response' "
        "(the OpenAI Responses API, e.g. for native web search with model_args={'tools': [{'type': "
        "'web_search_preview'}]})",
        key="api_type",
    )


def resolve_dotted(path: str, *, what: str) -> Any:
    """Import `package.module:attr` (or `package.module.attr`) and return the attribute.

    Raises:
        ConfigError: The module or the attribute does not exist.
    """
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{what} {path!r} is not a dotted path; write it as 'package.module:name'", key=what)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {path!r}: cannot import module {module_name!r} ({exc})", key=what) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}", key=what) from exc


def _validate_structured(response_format: type[BaseModel], content: str) -> Any:
    """The content validated against the pydantic model, or None when it does not validate.

    The Agent turns a None `parsed` with a `format=` prompt into a ParseError (and a retry), so an
    invalid answer is reported where the retry logic lives.
    """
    try:
        return response_format.model_validate_json(content)
    except Exception:  # noqa: BLE001 - pydantic ValidationError or a bad JSON string: both mean "did not validate"
        return None
