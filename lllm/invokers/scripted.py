"""The scripted model: `ScriptedInvoker` replays ordered steps, `FunctionInvoker` answers from a function.

It is the model of tests and of the offline demo, so it lives in the package (like pydantic-ai's
`TestModel`/`FunctionModel`). A step is one of:

- a string: the assistant's text;
- a dict `{"content": str | None, "tool_calls": [{"name": ..., "arguments": {...} or a raw JSON string}],
  "usage": {"prompt_tokens": int, "completion_tokens": int, "cost": float (optional)}}`; a raw string
  `arguments` reaches the agent unchanged, so malformed JSON can be tested;
- a dict `{"error": "rate_limit" | "timeout" | "api_error", "message": ..., "status_code": int (optional)}`:
  raised as the same lllm error the litellm path raises (`RateLimitError` 429, `ModelTimeoutError` 408,
  `ModelAPIError` 500 unless `status_code` says otherwise) and retried by the same bounded retry loop.

Each request takes the next step. A request past the last step raises `ScriptError` naming the step count,
the agent and dialog, and the request's last message; `assert_complete()` raises when steps are left.

`steps` is one queue in the order requests arrive, so in a concurrent batch which task gets which step is up to
the scheduler. `scripts={task: [steps]}` gives tasks scripts of their own: a request made inside a tactic call
(`lllm.invokers.base.call_scope`) whose task has a script takes the next step of that call's own copy of it,
so every call on that task replays it from the first step and concurrent calls never take each other's steps.
Other requests take from `steps`. A responder gets the call's task as `call.task`.
`.calls` records every request (messages, tools, model, context). The invoker is thread-safe.

Usage is the step's own, or estimated at about 4 characters a token. The scripted model bills nobody, so its
cost is $0 and every answer reports the model `scripted` (whatever model name the agent asked for), in the
result, the log and `lllm logs cost`. A config may ask to simulate a price: `input_price`/`output_price` in
USD per million tokens (e.g. `GPT_4O_INPUT_PRICE`/`GPT_4O_OUTPUT_PRICE`, gpt-4o's list prices 2.50 / 10.00),
or a step's own `usage.cost`; the result's `cost_note` then says the figure is simulated.

By default a step is answered in-process through the same normalisation code litellm's answers go
through (about 20 µs a call). With `through_litellm=True` every step is sent through `litellm.completion`
with `mock_response` by the real `LiteLLMInvoker` code (litellm's response objects, streaming wrapper,
cost table and exception classes, and our translation of them), at about 1.5 ms of CPU a call.
"""

from __future__ import annotations

import dataclasses

import inspect
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.errors import ConfigError, ModelAPIError, ModelTimeoutError, RateLimitError, ScriptError
from lllm.invokers._normalize import StreamAssembler, Usage, estimate_prompt_tokens, estimate_text_tokens, normalize_response
from lllm.invokers.base import (
    BaseInvoker,
    InvokeContext,
    InvokeRequest,
    InvokeResult,
    RetryPolicy,
    current_call_scope,
    resolve_dotted,
)
from lllm.records import InvokeCost

__all__ = ["GPT_4O_INPUT_PRICE", "GPT_4O_OUTPUT_PRICE", "SCRIPTED_MODEL", "FunctionInvoker", "ScriptedCall", "ScriptedInvoker"]

GPT_4O_INPUT_PRICE = 2.50
"""USD per million prompt tokens: gpt-4o's list price (pass it as `input_price` to simulate that price)."""
GPT_4O_OUTPUT_PRICE = 10.00
"""USD per million completion tokens: gpt-4o's list price (pass it as `output_price` to simulate that price)."""
SCRIPTED_MODEL = "scripted"
"""The model name every scripted answer reports (in `InvokeResult.model`, the log and `lllm logs cost`)."""


# ---- step specs (validated once, when the script is built) ----------------------------------------------


class _ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: Union[dict[str, Any], str] = Field(default_factory=dict)
    id: str | None = None


class _UsageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost: float | None = Field(default=None, ge=0)


class _ReplySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str | None = None
    tool_calls: list[_ToolCallSpec] = Field(default_factory=list)
    usage: _UsageSpec | None = None


class _ErrorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: Literal["rate_limit", "timeout", "api_error"]
    message: str = "scripted provider error"
    status_code: int | None = Field(default=None, ge=100, le=599)


@dataclass(frozen=True, slots=True)
class _Reply:
    content: str | None
    tool_calls: tuple[tuple[str, str, str], ...]  # (id, name, raw arguments)
    usage: _UsageSpec | None


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str
    message: str
    status_code: int


_DEFAULT_STATUS = {"rate_limit": 429, "timeout": 408, "api_error": 500}


def _parse_step(step: Any, index: int | str) -> _Reply | _Failure:
    """Validate one step; a bad step is a ConfigError naming its index and what is wrong."""
    if isinstance(step, str):
        return _Reply(step, (), None)
    if not isinstance(step, dict):
        raise ConfigError(
            f"scripted step {index} is {step!r} ({type(step).__name__}); a step is a string, "
            "{'content': ..., 'tool_calls': [...]} or {'error': 'rate_limit'|'timeout'|'api_error', 'message': ...}",
            key=f"steps[{index}]",
        )
    try:
        if "error" in step:
            err = _ErrorSpec.model_validate(step)
            return _Failure(err.error, err.message, err.status_code or _DEFAULT_STATUS[err.error])
        spec = _ReplySpec.model_validate(step)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'step'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"scripted step {index} {step!r} is invalid: {problems}", key=f"steps[{index}]") from exc
    calls = tuple(
        (
            tc.id or f"call_{index}_{j}",
            tc.name,
            tc.arguments if isinstance(tc.arguments, str) else json.dumps(tc.arguments),
        )
        for j, tc in enumerate(spec.tool_calls)
    )
    return _Reply(spec.content, calls, spec.usage)


@dataclass(slots=True)
class ScriptedCall:
    """One request the scripted model saw (also readable as a dict: `call["messages"]`)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    model: str
    context: InvokeContext | None
    model_args: dict[str, Any] | None = None
    response_format: Any = None
    api_type: str | None = None
    """The agent's `api_type` ("response": it asked for the Responses API; the script answers the same way)."""
    task: str | None = None
    """The task of the tactic call the request was made in, as text (None outside a tactic call)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _describe_last(messages: list[dict[str, Any]]) -> str:
    if not messages:
        return "no messages"
    last = messages[-1]
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", f"<{p.get('type')}>")) for p in content if isinstance(p, dict))
    text = str(content) if content is not None else ""
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{last.get('role', '?')}: {text!r}"


class ScriptedInvoker(BaseInvoker):
    """A model that replays a script of steps (see the module docstring), or answers from a `responder`.

    Args:
        steps: The ordered steps, one queue for every request (see the module docstring); mutually exclusive
            with `responder`.
        scripts: Task text -> that task's own steps: each tactic call on the task replays them from the first.
        responder: `f(messages) -> step` or `f(messages, call: ScriptedCall) -> step`, called once per request
            (possibly from many threads at once); a dotted path 'pkg.mod:func' works in YAML.
        through_litellm: Send every step through `litellm.completion(mock_response=...)` and the real
            `LiteLLMInvoker` code instead of answering in-process.
        stream_chunk_chars: With a stream handler, text arrives in pieces of this many characters.
        input_price: USD per million prompt tokens to simulate (default 0: the scripted model bills nobody).
        output_price: USD per million completion tokens to simulate (default 0).
        retry: The retry policy; the default waits 1 ms then 2 ms ... so scripted rate limits stay fast.
    """

    __test__ = False  # not a pytest test class, whatever its name
    name = "scripted"

    def __init__(
        self,
        steps: list[Any] | None = None,
        *,
        scripts: dict[str, list[Any]] | None = None,
        responder: Callable[..., Any] | str | None = None,
        through_litellm: bool = False,
        stream_chunk_chars: int = 4,
        input_price: float = 0.0,
        output_price: float = 0.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        if steps is not None and responder is not None:
            raise ConfigError("give the scripted invoker either `steps` or `responder`, not both", key="responder")
        if steps is None and responder is None:
            steps = []
        if steps is not None and not isinstance(steps, (list, tuple)):
            raise ConfigError(f"scripted `steps` must be a list, got {type(steps).__name__}: {steps!r}", key="steps")
        if isinstance(responder, str):
            responder = resolve_dotted(responder, what="responder")
        if responder is not None and not callable(responder):
            raise ConfigError(f"scripted `responder` must be callable, got {responder!r}", key="responder")
        if not isinstance(stream_chunk_chars, int) or stream_chunk_chars < 1:
            raise ConfigError(f"stream_chunk_chars must be an int >= 1, got {stream_chunk_chars!r}", key="stream_chunk_chars")
        for key, price in (("input_price", input_price), ("output_price", output_price)):
            if not isinstance(price, (int, float)) or price < 0:
                raise ConfigError(f"{key} must be USD per million tokens >= 0, got {price!r}", key=key)
        self._steps: list[_Reply | _Failure] = [_parse_step(s, i) for i, s in enumerate(steps or ())]
        if scripts is not None and (responder is not None or not isinstance(scripts, dict) or not all(
                isinstance(k, str) and isinstance(v, (list, tuple)) for k, v in scripts.items())):
            raise ConfigError("scripted `scripts` maps each task's text to its list of steps (and does not go with "
                              f"a responder); got {scripts!r:.200}", key="scripts")
        self._scripts: dict[str, list[_Reply | _Failure]] = {
            task: [_parse_step(s, f"{task!r}[{i}]") for i, s in enumerate(task_steps)]
            for task, task_steps in (scripts or {}).items()}
        self._cursors: dict[str, tuple[str, int]] = {}
        """Call id -> (its task, the next step of its copy of that task's script)."""
        self._responder = responder
        self._responder_takes_call = responder is not None and _takes_two_args(responder)
        self.through_litellm = bool(through_litellm)
        self.stream_chunk_chars = stream_chunk_chars
        self.input_price = float(input_price)
        self.output_price = float(output_price)
        self.calls: list[ScriptedCall] = []
        """Every request seen, in arrival order."""
        self._next = 0
        self._lock = threading.Lock()
        self._litellm: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # a copy of the model for another process (a Ray batch's hub): its script and position, not its lock
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_litellm"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        mode = f"responder={self._responder!r}" if self._responder is not None else f"steps {self._next}/{len(self._steps)} used"
        via = ", through_litellm=True" if self.through_litellm else ""
        return f"{type(self).__name__}({mode}, {len(self.calls)} calls{via})"

    @classmethod
    def default_retry(cls, **overrides: Any) -> RetryPolicy:
        """Fast backoff (1 ms, doubling, at most 50 ms) unless the config says otherwise."""
        return RetryPolicy(**{"backoff": 0.001, "backoff_max": 0.05, **overrides})

    # ---- the script ------------------------------------------------------------------------------------

    @property
    def steps_total(self) -> int:
        """How many steps the script has."""
        return len(self._steps)

    @property
    def steps_remaining(self) -> int:
        """Steps not yet requested (0 for a responder)."""
        with self._lock:
            return len(self._steps) - self._next

    def add_steps(self, *steps: Any) -> None:
        """Append steps to the script (validated like the constructor's)."""
        with self._lock:
            start = len(self._steps)
            self._steps.extend(_parse_step(s, start + i) for i, s in enumerate(steps))

    def assert_complete(self) -> None:
        """Raise `ScriptError` when scripted steps were never requested: in `steps`, or in the copy of its task's
        script that a call began (a task script no call ran is not checked: scripts are a table by task)."""
        with self._lock:
            short = [(task, n) for task, n in self._cursors.values() if n < len(self._scripts[task])]
            left = len(self._steps) - self._next
            nxt = self._steps[self._next] if left > 0 else None
        if short:
            task, n = short[0]
            raise ScriptError(
                f"a call on task {task!r} used {n} of the {len(self._scripts[task])} steps of its script (the next "
                f"one: {_show(self._scripts[task][n])}); {len(short)} call(s) stopped early. Remove the extra steps, "
                "or find out why the agent stopped early.", task=task, steps_left=len(self._scripts[task]) - n)
        if nxt is None:
            return
        raise ScriptError(
            f"{left} of {len(self._steps)} scripted steps were never requested (the next one: {_show(nxt)}); "
            f"the run made {len(self.calls)} request(s). Remove the extra steps, or find out why the agent "
            "stopped early.",
            steps_total=len(self._steps),
            steps_left=left,
        )

    def __enter__(self) -> ScriptedInvoker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.assert_complete()

    # ---- one attempt -----------------------------------------------------------------------------------

    def _call_once(self, request: InvokeRequest) -> InvokeResult:
        scope = current_call_scope()
        call = ScriptedCall(
            list(request.messages), request.tools, request.model, request.context, request.model_args, request.response_format,
            request.api_type, scope.task if scope is not None else None,
        )
        with self._lock:
            self.calls.append(call)
            if self._responder is not None:
                step = None
            elif scope is not None and scope.task in self._scripts:
                task, n = self._cursors.get(scope.call_id, (scope.task, 0))
                if n >= len(self._scripts[task]):
                    raise self._exhausted(request, task=task)
                step = self._scripts[task][n]
                self._cursors[scope.call_id] = (task, n + 1)
            else:
                if self._next >= len(self._steps):
                    raise self._exhausted(request)
                step = self._steps[self._next]
                self._next += 1
        if step is None:
            responder: Callable[..., Any] = self._responder  # type: ignore[assignment]  # step is None only with one
            answer = responder(call.messages, call) if self._responder_takes_call else responder(call.messages)
            step = _parse_step(answer, f"(responder answer to request {len(self.calls)})")
        if self.through_litellm:
            return self._via_litellm(step, request)
        if isinstance(step, _Failure):
            raise _failure_error(step, request.model)
        return self._answer(step, request)

    def _exhausted(self, request: InvokeRequest, *, task: str | None = None) -> ScriptError:
        ctx = request.context or InvokeContext()
        n = len(self._steps) if task is None else len(self._scripts[task])
        whose = "" if task is None else f" of task {task!r}'s script (this call's copy)"
        return ScriptError(
            f"the scripted model has no step {n + 1}{whose}: all {n} steps were used. Request {len(self.calls)} came from "
            f"agent {ctx.agent!r}, dialog {ctx.dialog!r}; its last message was {_describe_last(request.messages)}. "
            "Add a step to the script, or find out why the agent asked again.",
            steps_total=n,
            agent=ctx.agent,
            dialog=ctx.dialog,
        )

    def _answer(self, step: _Reply, request: InvokeRequest) -> InvokeResult:
        """Answer in-process as an OpenAI-format response (or chunk stream), through the shared normaliser."""
        tool_calls = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in step.tool_calls
        ]
        usage = self._usage(step, request)
        finish = "tool_calls" if tool_calls else "stop"
        if request.stream_handler is None:
            response = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": step.content, "tool_calls": tool_calls or None}, "finish_reason": finish}],
                "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
            }
            content, calls, finish_reason, got = normalize_response(response)
        else:
            assembler = StreamAssembler(request.stream_handler)
            for chunk in self._chunks(step, tool_calls, finish, usage):
                assembler.feed(chunk)
            content, calls, finish_reason, got = assembler.content, assembler.tool_calls(), assembler.finish_reason, assembler.usage
            if step.content == "" and content is None:
                content = ""
        got = got or usage
        cost, note = self._price(step, got.prompt_tokens, got.completion_tokens)
        cost_model = InvokeCost.model_construct(
            prompt_tokens=got.prompt_tokens, completion_tokens=got.completion_tokens, total_tokens=got.total_tokens, cost=cost
        )
        return InvokeResult(content=content, tool_calls=calls, model=SCRIPTED_MODEL, usage=cost_model, raw=step,
                            finish_reason=finish_reason, cost_note=note)

    def _price(self, step: _Reply, prompt_tokens: int, completion_tokens: int) -> tuple[float, str | None]:
        """The cost of one answer: $0 unless the config or the step asks to simulate one (then a note says so)."""
        if step.usage is not None and step.usage.cost is not None:
            return step.usage.cost, "simulated: the scripted step set this cost; no provider was billed"
        if not (self.input_price or self.output_price):
            return 0.0, None
        cost = (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1_000_000
        return cost, (f"simulated: the scripted model priced at {self.input_price:g}/{self.output_price:g} USD per "
                      "million prompt/completion tokens; no provider was billed")

    @staticmethod
    def _usage(step: _Reply, request: InvokeRequest) -> Usage:
        """The step's own usage, or an estimate at about 4 characters a token."""
        if step.usage is not None:
            return Usage(step.usage.prompt_tokens, step.usage.completion_tokens)
        completion = estimate_text_tokens(step.content or "")
        completion += sum(estimate_text_tokens(n + a) for _, n, a in step.tool_calls)
        return Usage(estimate_prompt_tokens(request.messages, request.tools), max(completion, 1))

    def _chunks(self, step: _Reply, tool_calls: list[dict[str, Any]], finish: str, usage: Usage) -> list[dict[str, Any]]:
        """The OpenAI-format chunk stream a provider would send for this step."""
        size = self.stream_chunk_chars
        text = step.content or ""
        chunks: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text[i : i + size]}}]}
            for i in range(0, len(text), size)
        ]
        for j, tc in enumerate(tool_calls):
            fn = tc["function"]
            head = {"index": j, "id": tc["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
            chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
            args = fn["arguments"]
            for i in range(0, len(args), 2 * size):
                piece = {"index": j, "function": {"arguments": args[i : i + 2 * size]}}
                chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}})
        return chunks

    # ---- through litellm -------------------------------------------------------------------------------

    def _via_litellm(self, step: _Reply | _Failure, request: InvokeRequest) -> InvokeResult:
        """Answer through `litellm.completion(mock_response=...)` and the real LiteLLMInvoker attempt."""
        from lllm.invokers.litellm import LiteLLMInvoker, mock_kwargs_for

        if self._litellm is None:
            self._litellm = LiteLLMInvoker(retry=RetryPolicy(max_retries=0))
        if isinstance(step, _Failure):
            extra = mock_kwargs_for(step, content=None, usage=(0, 0), model=request.model)
        else:
            usage = self._usage(step, request)
            extra = mock_kwargs_for(
                None,
                content=step.content,
                tool_calls=step.tool_calls,
                usage=(usage.prompt_tokens, usage.completion_tokens),
                usage_given=step.usage is not None,
                model=request.model,
                stream=request.stream_handler is not None,
            )
        if request.api_type == "response":  # a step is a chat-completion mock: answer through litellm.completion
            request = dataclasses.replace(request, api_type=None)
        result = self._litellm.attempt(request, extra)
        # litellm priced it as the requested model (its list price, or "no price"): the scripted model's own rule wins
        if isinstance(step, _Reply):  # (a failure step has raised inside attempt())
            cost, result.cost_note = self._price(step, result.usage.prompt_tokens, result.usage.completion_tokens)
            result.usage = result.usage.model_copy(update={"cost": cost})
        result.model = SCRIPTED_MODEL
        return result


class FunctionInvoker(ScriptedInvoker):
    """A scripted model that answers every request from `responder(messages[, call]) -> step`.

    Use it where the order of requests is not fixed (batches) or the answer depends on what was sent.
    Config: `{"invoker": "scripted", "responder": callable}` or `{"invoker": "function", "responder": "pkg.mod:f"}`.
    """

    __test__ = False
    name = "function"

    def __init__(
        self,
        responder: Callable[..., Any] | str,
        *,
        through_litellm: bool = False,
        stream_chunk_chars: int = 4,
        input_price: float = 0.0,
        output_price: float = 0.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            responder=responder,
            through_litellm=through_litellm,
            stream_chunk_chars=stream_chunk_chars,
            input_price=input_price,
            output_price=output_price,
            retry=retry,
        )


def _failure_error(step: _Failure, model: str) -> ModelAPIError:
    """The lllm error a provider failure of this kind becomes (the same classes the litellm path raises)."""
    text = f"scripted {step.kind} from model {model!r} (status {step.status_code}): {step.message}"
    if step.kind == "rate_limit":
        return RateLimitError(text, status_code=step.status_code, model=model)
    if step.kind == "timeout":
        return ModelTimeoutError(text, status_code=step.status_code, model=model)
    return ModelAPIError(text, status_code=step.status_code, model=model)


def _show(step: _Reply | _Failure) -> str:
    if isinstance(step, _Failure):
        return f"error {step.kind!r}: {step.message!r}"
    parts = []
    if step.content is not None:
        parts.append(repr(step.content[:80]))
    if step.tool_calls:
        parts.append("tool calls " + ", ".join(name for _, name, _ in step.tool_calls))
    return " + ".join(parts) or "an empty answer"


def _takes_two_args(fn: Callable[..., Any]) -> bool:
    """True when `fn` accepts (messages, call); False when it takes (messages) only."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 2
