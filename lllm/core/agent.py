"""The Agent: one model identity with named dialogs (open/receive/respond/fork/switch/close) and the turn loop
of `respond()`: model call, tool calls, retries of bad answers through the prompt's handler, the tool budget.

One `respond()`:
1. sends the current dialog (plus, during a retry, the rejected answer and the retry prompt) to the invoker,
   with the tools of the prompt in force and `agent.tools`;
2. if the model calls tools, appends its message, runs each call (an unknown tool, malformed JSON arguments,
   bad argument types or a tool that raises become an error text the model reads, never a crash), appends
   one tool message per call and, when tools returned images, one user message carrying them; after
   `max_interrupt_steps` rounds the handler's `on_interrupt_final` prompt asks for the final answer.
   The exception: a tool that raises an `InfrastructureError` (no Docker engine, no sandbox image, a gateway
   or a browser that cannot start) ends the respond() with that error. The model is not asked to work around
   a broken machine; the failed call keeps `error_message` ("not run: ...") and gets no tool message. So does
   one of lllm's own tools failing inside lllm with an exception lllm did not mean (a `ToolBugError`);
3. otherwise parses the answer with the prompt's parser / `format`; a `ParseError` is retried through the
   handler's `on_exception` prompt at most `max_exception_retry` times, then `AgentException`. Rejected
   answers never enter the dialog; they stay in the `AgentCallSession` (`agent.last_session`) and in the
   `AgentCallRecord` sent to the tracer.
The prompt in force is the system prompt, or the prompt given to `receive_prompt` for the next respond().
An agent is not thread-safe: give each thread its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from lllm.core._functions import Function, FunctionCall, ToolResult
from lllm.core._handlers import AgentCallSession, ModelCallInfo, Retry
from lllm.core._images import ImageData, load_image
from lllm.core.dialog import ContextManager, Dialog, Message, Roles
from lllm.core.prompt import Prompt
from lllm.records import AgentCallRecord, InvokeCost, ModelCallRecord, ToolCallRecord, Tracer, cap, null_tracer
from lllm.errors import (AgentException, ConfigError, InfrastructureError, InvokerError, LLLMError, ParseError,
                         ToolBugError, UsageError)
from lllm.invokers.base import BaseStreamHandler, InvokeContext, InvokeResult, check_api_type

__all__ = ["Agent"]

_log = logging.getLogger("lllm.agent")

AnswerHook = Callable[["Message"], "str | ToolResult | None"]
"""`hook(answer)` -> None (the answer stands) or what to send the model next (see `Agent.add_answer_hook`)."""
DialogHook = Callable[[str, str, "str | None"], None]
"""`hook(event, alias, source)`: `"fork"` (before dialog `alias` is made from `source`: a hook that raises stops
the fork) or `"close"` (after dialog `alias` closed; source None). See `Agent.add_dialog_hook`."""
_ASSISTANT, _USER, _TOOL, _SYSTEM = Roles.ASSISTANT, Roles.USER, Roles.TOOL, Roles.SYSTEM


@dataclass(slots=True)
class _Thread:
    """The agent's state for one open dialog."""

    dialog: Dialog
    prompt_args: dict[str, Any]
    turn_prompt: Prompt | None = None
    turn_args: dict[str, Any] = field(default_factory=dict)


class Agent:
    """A model identity with named dialogs.

    Example (the seed's Pattern 2):
        ```python
        analyst.open("base")
        analyst.receive("Background context: ...")
        analyst.respond()
        analyst.fork("base", "branch_0")        # a child of base, now current
        analyst.receive("Now evaluate this hypothesis: ...")
        analyst.respond().content
        analyst.close("branch_0")
        analyst.switch("base")
        ```
    """

    def __init__(
        self,
        *,
        name: str,
        system_prompt: Prompt | str,
        model: str,
        llm_invoker: Any,
        stream_handler: BaseStreamHandler | None = None,
        model_args: dict[str, Any] | None = None,
        max_exception_retry: int = 3,
        max_interrupt_steps: int = 5,
        tracer: Tracer | None = None,
        tools: list[Function] | None = None,
        prompt_args: dict[str, Any] | None = None,
        api_type: str | None = None,
        context_manager: ContextManager | None = None,
    ) -> None:
        """Build an agent (cheap: nothing is called until `respond`).

        Args:
            name: Its name (in logs, traces and error messages).
            system_prompt: The prompt every dialog starts with; its parser, format and tools are in force on
                every turn that no `receive_prompt` overrides. A string is made into a `Prompt`.
            model: The model name, as the invoker spells it ("gpt-4o").
            llm_invoker: A `BaseInvoker` (`lllm.invokers.build_invoker(...)`).
            stream_handler: Receives text deltas of every model call.
            model_args: Extra provider arguments (temperature, max_tokens, ...).
            max_exception_retry: How many rejected answers a respond() retries before `AgentException`.
            max_interrupt_steps: How many rounds of tool calls a respond() runs before asking for the final
                answer.
            tracer: Receives a `ModelCallRecord` per model call and an `AgentCallRecord` per respond().
            tools: Tools in force on every turn, besides the prompt's (see `agent.tools`).
            prompt_args: Default template variables for every prompt this agent renders (the system prompt
                at `open`, `receive_prompt`, handler texts); arguments given to those calls win.
            api_type: "response" calls the OpenAI Responses API (the litellm invoker uses `litellm.responses`;
                native web search: `model_args={"tools": [{"type": "web_search_preview"}]}`); None or
                "completion": chat completions.
            context_manager: Trims (or rewrites) what is sent before each model call, e.g.
                `DefaultContextManager("gpt-4o")` to stay within the context window; the agent's dialogs keep
                every message.

        Raises:
            ConfigError: An argument has the wrong type or value.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Agent name must be a non-empty string, got {name!r}", key="name")
        if isinstance(system_prompt, str):
            system_prompt = Prompt(path=f"{name}/system", prompt=system_prompt)
        if not isinstance(system_prompt, Prompt):
            raise ConfigError(
                f"agent {name!r}: system_prompt must be a Prompt or a string, got {type(system_prompt).__name__!r}",
                key="system_prompt",
            )
        if not callable(getattr(llm_invoker, "call", None)):
            raise ConfigError(
                f"agent {name!r}: llm_invoker must be an invoker (lllm.invokers.build_invoker(...)), got "
                f"{type(llm_invoker).__name__!r}",
                key="llm_invoker",
            )
        for key, value, low in (("max_exception_retry", max_exception_retry, 0),
                                ("max_interrupt_steps", max_interrupt_steps, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"agent {name!r}: {key} must be an int >= {low}, got {value!r}", key=key)
        if context_manager is not None and not callable(context_manager):
            raise ConfigError(f"agent {name!r}: context_manager must be a ContextManager (a callable dialog -> "
                              f"dialog), got {type(context_manager).__name__!r}", key="context_manager")
        self.context_manager = context_manager
        """Applied to a working copy of the dialog before every model call (None: the whole dialog is sent)."""
        self.api_type: str | None = check_api_type(api_type, agent=name)
        """None/"completion" (chat completions) or "response" (the Responses API), passed to every model call."""
        self.name = name
        self.system_prompt = system_prompt
        self.model = model
        self.llm_invoker = llm_invoker
        self.stream_handler = stream_handler
        self.model_args: dict[str, Any] = dict(model_args or {})
        self.max_exception_retry = max_exception_retry
        self.max_interrupt_steps = max_interrupt_steps
        self.tracer: Tracer = tracer if tracer is not None else null_tracer
        self.prompt_args: dict[str, Any] = dict(prompt_args or {})
        """Default template variables (a tactic may set {"task": ...} here before `call` runs)."""
        self.tools: list[Function] = list(tools or [])
        """Tools in force on every turn, in addition to the prompt's (a prompt's tool of the same name wins)."""
        self.last_session: AgentCallSession | None = None
        """The session of the latest respond() (also when it failed)."""
        self._threads: dict[str, _Thread] = {}
        self._current: str | None = None
        self._cleanups: list[Callable[[], Any]] = []
        self._answer_hooks: list[AnswerHook] = []
        self._dialog_hooks: list[DialogHook] = []
        self._responding: str | None = None

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, model={self.model!r}, dialogs={list(self._threads)!r}, current={self._current!r})"

    # -- dialogs ---------------------------------------------------------------------------------------------

    @property
    def current_dialog(self) -> Dialog | None:
        """The dialog `receive`/`respond` act on, or None when none is open."""
        return self._threads[self._current].dialog if self._current is not None else None

    @property
    def current_alias(self) -> str | None:
        """The alias of the current dialog."""
        return self._current

    @property
    def active_alias(self) -> str | None:
        """The dialog whose `respond()` is running (its tools act for it), else the current one."""
        return self._responding if self._responding is not None else self._current

    def add_dialog_hook(self, hook: DialogHook) -> None:
        """Let `hook(event, alias, source)` follow the dialogs: `"fork"` before `fork(source, alias)` makes the
        dialog (raising stops the fork, which then does not happen), `"close"` after `close(alias)`. Extensions
        that keep per-dialog state use it (the `proxy:` block forks the sandbox kernel with the dialog).

        Raises:
            UsageError: `hook` is not callable.
        """
        if not callable(hook):
            raise UsageError(f"agent {self.name!r}: add_dialog_hook() takes a callable, got {hook!r}")
        self._dialog_hooks.append(hook)

    @property
    def dialogs(self) -> Mapping[str, Dialog]:
        """The open dialogs by alias (read-only)."""
        return MappingProxyType({alias: t.dialog for alias, t in self._threads.items()})

    def open(self, alias: str, prompt_args: dict[str, Any] | None = None) -> Dialog:
        """Start a dialog with the system prompt and make it current.

        Args:
            alias: Its name (not already open).
            prompt_args: Variables of the system prompt's template (kept for the handlers' templates too).

        Raises:
            UsageError: `alias` is already open, or a variable of the system prompt is missing.
        """
        self._check_new_alias(alias)
        args = {**self.prompt_args, **(prompt_args or {})}
        dialog = Dialog(name=alias, metadata={"agent": self.name})
        dialog.append(Message(role=_SYSTEM, content=self.system_prompt.render(**args),
                              metadata={"prompt": self.system_prompt.path}))
        self._threads[alias] = _Thread(dialog, args)
        self._current = alias
        return dialog

    def fork(self, src: str, dst: str, *, last_n: int = 0, first_k: int = 1, switch: bool = True) -> Dialog:
        """Fork dialog `src` into a new dialog `dst` (a child that shares its history) and make it current.

        Args:
            last_n: Keep only the first `first_k` and the last `last_n` messages of `src` (0: all of them).
            first_k: See `last_n` (1 keeps the system prompt).
            switch: Make `dst` current (lllm-core's keyword; False leaves the current dialog as it is).

        Raises:
            UsageError: `src` is not open, or `dst` already is.
        """
        self._check_new_alias(dst)
        parent = self._thread(src, "fork")
        for hook in list(self._dialog_hooks):
            hook("fork", dst, src)
        child = parent.dialog.fork(name=dst, last_n=last_n, first_k=first_k)
        self._threads[dst] = _Thread(child, dict(parent.prompt_args), parent.turn_prompt, dict(parent.turn_args))
        if switch:
            self._current = dst
        return child

    def switch(self, alias: str) -> Dialog:
        """Make dialog `alias` current.

        Raises:
            UsageError: `alias` is not open.
        """
        thread = self._thread(alias, "switch")
        self._current = alias
        return thread.dialog

    def close(self, alias: str) -> Dialog:
        """Close dialog `alias` (it stays in its parent's `children`); if it was current, none is current.

        Raises:
            UsageError: `alias` is not open.
        """
        thread = self._thread(alias, "close")
        del self._threads[alias]
        if self._current == alias:
            self._current = None
        for hook in list(self._dialog_hooks):
            hook("close", alias, None)
        return thread.dialog

    def receive(self, text: str, *, alias: str | None = None) -> Message:
        """Add a user message to the current dialog, or to dialog `alias` (the prompt in force does not change).

        Raises:
            UsageError: No dialog is open, or `text` is not a string.
        """
        if not isinstance(text, str):
            raise UsageError(f"agent {self.name!r}: receive() takes a string, got {type(text).__name__!r}; "
                             "use receive_prompt() for a Prompt and receive_image() for an image")
        return self._target(alias, "receive").dialog.append(Message(role=_USER, content=text))

    def receive_prompt(self, prompt: Prompt, prompt_args: dict[str, Any] | None = None, *,
                       alias: str | None = None) -> Message:
        """Add a rendered prompt as a user message; its parser, format, tools and handler rule the next respond().

        Raises:
            UsageError: No dialog is open, `prompt` is not a Prompt, or one of its variables is missing.
        """
        if not isinstance(prompt, Prompt):
            raise UsageError(f"agent {self.name!r}: receive_prompt() takes a Prompt, got {type(prompt).__name__!r}")
        thread = self._target(alias, "receive_prompt")
        args = {**self.prompt_args, **(prompt_args or {})}
        message = thread.dialog.append(Message(role=_USER, content=prompt.render(**args), metadata={"prompt": prompt.path}))
        thread.turn_prompt, thread.turn_args = prompt, args
        return message

    def receive_image(self, image: Any, caption: str | None = None, *, alias: str | None = None) -> Message:
        """Add a user message carrying an image (a path, a PIL image or base64 data) and an optional caption.

        Raises:
            UsageError: No dialog is open, or the image is missing or not an image.
        """
        thread = self._target(alias, "receive_image")
        data = load_image(image)
        return thread.dialog.append(Message(role=_USER, content=caption, images=[data]))

    # -- cleanups --------------------------------------------------------------------------------------------

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """Register a callable for `shutdown()` (sandboxes, browsers); they run in reverse order."""
        if not callable(fn):
            raise UsageError(f"agent {self.name!r}: add_cleanup() takes a callable, got {fn!r}")
        self._cleanups.append(fn)

    def shutdown(self, *, raise_errors: bool = False) -> list[Exception]:
        """Run every registered cleanup once, newest first, even when some fail.

        Args:
            raise_errors: Raise an `ExceptionGroup` of the failures instead of returning them.

        Returns:
            The exceptions the cleanups raised (empty when all went well); each is also logged.
        """
        errors: list[Exception] = []
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - every cleanup must run; failures are reported below
                _log.warning("agent %r: cleanup %r failed: %s: %s", self.name, fn, type(exc).__name__, exc)
                errors.append(exc)
        if errors and raise_errors:
            raise ExceptionGroup(f"{len(errors)} cleanup(s) of agent {self.name!r} failed", errors)
        return errors

    # -- answer hooks ----------------------------------------------------------------------------------------

    def add_answer_hook(self, hook: AnswerHook) -> None:
        """Let `hook(message)` look at every answer `respond()` is about to return, and answer it back.

        A hook returns None to let the answer stand, or what to send the model next: a string, or a
        `ToolResult` (text and images). `respond()` then adds it to the dialog as a user message and asks the
        model again, at most `max_interrupt_steps` times, and returns the answer no hook answered back. The
        first hook (in the order added) that answers back wins. Extensions use this instead of replacing
        `respond` (the `proxy:` block's jupyter mode runs the `<python_cell>`s of each answer this way).

        Raises:
            UsageError: `hook` is not callable.
        """
        if not callable(hook):
            raise UsageError(f"agent {self.name!r}: add_answer_hook() takes a callable, got {hook!r}")
        self._answer_hooks.append(hook)

    # -- the turn --------------------------------------------------------------------------------------------

    def respond(self, alias: str | None = None, *, return_session: bool = False) -> Any:
        """Get the model's answer in the current dialog (or dialog `alias`), running tool calls and retries.

        Args:
            alias: The dialog to answer in (default: the current one).
            return_session: Return this respond()'s `AgentCallSession` instead of the message (lllm-core's form:
                the message is its `.delivery`; the session is also `agent.last_session`).

        Returns:
            The assistant message appended to the dialog, with `.content`, `.parsed`, `.usage`, `.cost`
            (and `.output`, the validated instance, with a `format=` prompt); with `return_session=True`, the
            `AgentCallSession` (tool rounds, retries, model calls, cost).

        Raises:
            UsageError: No dialog is open.
            AgentException: The answer was rejected `max_exception_retry` + 1 times (`retries` has them all).
            InvokerError: The model call failed (after the invoker's own bounded retries).
        """
        thread = self._target(alias, "respond")
        outer, self._responding = self._responding, thread.dialog.name
        try:
            message = self._respond_once(thread)
            if self._answer_hooks:
                message = self._answer_back(thread, message)
        finally:
            self._responding = outer
        if return_session:
            session = self.last_session
            assert session is not None  # set by _respond_once
            session.delivery = message  # an answer hook's follow-up is the answer of this respond()
            return session
        return message

    def _answer_back(self, thread: _Thread, message: Message) -> Message:
        for _ in range(self.max_interrupt_steps):
            follow_up = next((f for f in (hook(message) for hook in list(self._answer_hooks)) if f is not None), None)
            if follow_up is None:
                break
            text, images = ((str(follow_up.content), follow_up.images) if isinstance(follow_up, ToolResult)
                            else (str(follow_up), []))
            thread.dialog.append(Message(
                role=_USER, content=text, images=[load_image(i, source="answer hook") for i in images or ()],
                metadata={"answer_hook": True}))
            message = self._respond_once(thread)
        return message

    def _respond_once(self, thread: _Thread) -> Message:
        alias = thread.dialog.name
        prompt = thread.turn_prompt if thread.turn_prompt is not None else self.system_prompt
        args = thread.turn_args if thread.turn_prompt is not None else thread.prompt_args
        thread.turn_prompt, thread.turn_args = None, {}
        session = AgentCallSession(self.name, alias, self.max_exception_retry, self.max_interrupt_steps)
        self.last_session = session
        started, t0 = time.time(), time.perf_counter()
        try:
            message = self._turn(thread.dialog, prompt, args, session)
        except BaseException as exc:
            session.state, session.error = "failure", f"{type(exc).__name__}: {exc}"
            self._record_agent_call(session, started, time.perf_counter() - t0)
            raise
        session.state, session.delivery = "success", message
        self._record_agent_call(session, started, time.perf_counter() - t0)
        return message

    def _turn(self, dialog: Dialog, prompt: Prompt, args: dict[str, Any], session: AgentCallSession) -> Message:
        scratch: list[dict[str, Any]] = []  # rejected answers and retry prompts: sent, never stored
        pending: InvokeCost | None = None  # what rejected answers cost; charged to the next stored message
        phase = "answer"
        final = False
        while True:
            functions = self._functions(prompt, final)
            schemas = [f.to_tool() for f in functions.values()] or None
            if prompt.mcp_servers_list and not final:  # the provider runs these itself
                schemas = [*(schemas or []), *(m.to_tool() for m in prompt.mcp_servers_list)]
            messages = dialog.to_openai() if self.context_manager is None else self._managed(dialog, session)
            if scratch:
                messages.extend(scratch)
            result = self._call_model(messages, schemas, prompt.format, session, phase, dialog.name)
            usage = result.usage if pending is None else pending + result.usage
            if result.tool_calls and not final:
                scratch.clear()
                pending = None
                calls = [FunctionCall(id=tc.id, name=tc.name, raw_arguments=tc.arguments) for tc in result.tool_calls]
                dialog.append(Message(role=_ASSISTANT, content=result.content, name=self.name, tool_calls=calls,
                                      usage=usage, metadata=_answer_metadata(result, prompt)))
                self._run_tools(calls, functions, dialog)
                session.interrupts.append(calls)
                if session.interrupts_count >= self.max_interrupt_steps:
                    prompt, phase, final = prompt.on_interrupt_final(session), "interrupt_final", True
                else:
                    prompt, phase = prompt.on_interrupt(session), "interrupt"
                text = prompt.render_handler({
                    "call_results": "\n".join(f"{c.name}: {c.result_str}" for c in calls),
                    "interrupt_step": session.interrupts_count,
                    "max_interrupt_steps": self.max_interrupt_steps,
                }, args)
                if text:
                    dialog.append(Message(role=_USER, content=text, metadata={"prompt": prompt.path, "handler": phase}))
                continue
            try:
                if result.tool_calls:
                    raise ParseError(
                        f"you called {[tc.name for tc in result.tool_calls]!r} after the tool budget "
                        f"({self.max_interrupt_steps} rounds) was spent; answer without calling tools"
                    )
                parsed, output = _parse_answer(prompt, result, args)
            except ParseError as exc:
                error = exc.message or str(exc)
                retry = Retry(attempt=session.exception_retries_count + 1, error=error, content=result.content,
                              cost=result.usage)
                session.retries.append(retry)
                if session.exception_retries_count > self.max_exception_retry:
                    raise AgentException(
                        f"agent {self.name!r} gave up in dialog {dialog.name!r}: {len(session.retries)} answers were "
                        f"rejected (max_exception_retry={self.max_exception_retry}); the last error: {error}. Make the "
                        "format easier to follow, relax the parser, or raise max_exception_retry.",
                        agent=self.name, dialog=dialog.name, retries=[r.to_dict() for r in session.retries],
                    ) from exc
                prompt = prompt.on_exception(session)
                text = prompt.render_handler({"error_message": error, "attempt": session.exception_retries_count + 1,
                                              "max_retries": self.max_exception_retry}, args)
                retry.retry_prompt = text
                scratch.append({"role": "assistant", "content": result.content or ""})
                scratch.append({"role": "user", "content": text})
                pending, phase = usage, "retry"
                continue
            message = Message(role=_ASSISTANT, content=result.content, name=self.name, parsed=parsed, usage=usage,
                              metadata=_answer_metadata(result, prompt))
            message.output = output
            return dialog.append(message)

    def _managed(self, dialog: Dialog, session: AgentCallSession) -> list[dict[str, Any]]:
        """What the context manager lets through of `dialog` (a working copy: the dialog itself never changes)."""
        sent = self.context_manager(dialog.working_copy())  # type: ignore[misc]
        if not isinstance(sent, Dialog):
            raise UsageError(f"agent {self.name!r}: the context manager {self.context_manager!r} returned "
                             f"{type(sent).__name__!r}; it must return a Dialog")
        if len(sent) != len(dialog):
            session.context.append({"messages": len(dialog), "sent": len(sent)})
            _log.debug("agent %r: context manager sent %d of %d messages", self.name, len(sent), len(dialog))
        return sent.to_openai()

    def _functions(self, prompt: Prompt, final: bool) -> dict[str, Function]:
        if final:
            return dict(prompt.functions)
        if not self.tools:
            return prompt.functions
        for i, f in enumerate(self.tools):
            if not isinstance(f, Function):
                self.tools[i] = Function.from_callable(f) if callable(f) else _bad_tool(self.name, f)
        out = {f.name: f for f in self.tools}
        out.update(prompt.functions)
        return out

    def _call_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                    response_format: type[BaseModel] | None, session: AgentCallSession, phase: Any,
                    alias: str | None) -> InvokeResult:
        tracing = self.tracer is not null_tracer
        started = time.time()
        try:
            extra = {"api_type": self.api_type} if self.api_type is not None else {}  # plain `call`s need not take it
            result = self.llm_invoker.call(
                messages, model=self.model, tools=tools, response_format=response_format,
                stream_handler=self.stream_handler, model_args=self.model_args or None,
                context=InvokeContext(agent=self.name, dialog=alias), **extra,
            )
        except InvokerError as exc:
            if tracing:
                for i, err in enumerate(getattr(exc, "errors", None) or [f"{type(exc).__name__}: {exc}"]):
                    self.tracer(ModelCallRecord(agent=self.name, dialog=alias, model=self.model, attempt=i + 1,
                                                status="error", error=err, started_at=started,
                                                stream=self.stream_handler is not None))
            raise
        usage = result.usage
        session.model_calls.append(ModelCallInfo(result.model or self.model, usage, result.latency_s, result.attempts,
                                                 result.errors, result.content, len(result.tool_calls), phase))
        if tracing:
            stream = self.stream_handler is not None
            for i, err in enumerate(result.errors):
                self.tracer(ModelCallRecord(agent=self.name, dialog=alias, model=self.model, attempt=i + 1,
                                            status="error", error=err, started_at=started, stream=stream))
            self.tracer(ModelCallRecord(
                agent=self.name, dialog=alias, model=result.model or self.model, prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens, cost=usage.cost, cost_note=result.cost_note,
                latency_s=result.latency_s, attempt=result.attempts, started_at=started, stream=stream,
            ))
        return result

    def _run_tools(self, calls: list[FunctionCall], functions: dict[str, Function], dialog: Dialog) -> None:
        images: list[ImageData] = []
        sources: list[str] = []
        for call in calls:
            started, t0 = time.time(), time.perf_counter()
            text, found = _run_one(call, functions)
            if self.tracer is not null_tracer:
                self.tracer(ToolCallRecord(
                    agent=self.name, dialog=dialog.name, call_id=call.id, name=call.name,
                    arguments=cap(call.raw_arguments), result=cap(text), images=len(found or ()),
                    status="error" if call.error_message else "ok", error=cap(call.error_message, 2000),
                    duration_s=time.perf_counter() - t0, started_at=started))
            if found:
                images.extend(found)
                sources.append(f"{call.name} ({call.id}): {len(found)}")
            dialog.append(Message(role=_TOOL, content=text, name=call.name, tool_call_id=call.id))
        if images:
            names = ", ".join(sources)
            dialog.append(Message(role=_USER, content=f"[images returned by the tool calls above: {names}]",
                                  images=images, metadata={"tool_images": True}))

    def _record_agent_call(self, session: AgentCallSession, started: float, duration: float) -> None:
        if self.tracer is null_tracer:
            return
        cost = session.cost
        self.tracer(AgentCallRecord(
            agent=self.name, dialog=session.dialog, status="ok" if session.state == "success" else "error",
            model_calls=len(session.model_calls), exception_retries=session.exception_retries_count,
            interrupts=session.interrupts_count, prompt_tokens=cost.prompt_tokens,
            completion_tokens=cost.completion_tokens, cost=cost.cost, duration_s=duration, error=session.error,
            detail=session.detail(), started_at=started,
        ))

    # -- helpers ---------------------------------------------------------------------------------------------

    def _check_new_alias(self, alias: Any) -> None:
        if not isinstance(alias, str) or not alias:
            raise UsageError(f"agent {self.name!r}: a dialog alias must be a non-empty string, got {alias!r}")
        if alias in self._threads:
            raise UsageError(
                f"agent {self.name!r}: dialog {alias!r} is already open; close({alias!r}) it first, or use "
                "another alias",
                alias=alias,
            )

    def _target(self, alias: str | None, action: str) -> _Thread:
        return self._current_thread(action) if alias is None else self._thread(alias, action)

    def _thread(self, alias: str, action: str) -> _Thread:
        thread = self._threads.get(alias)
        if thread is None:
            raise UsageError(
                f"agent {self.name!r}: {action}({alias!r}): no open dialog {alias!r}; open ones: "
                f"{sorted(self._threads)!r}. Open it with agent.open({alias!r}).",
                alias=alias,
            )
        return thread

    def _current_thread(self, action: str) -> _Thread:
        if self._current is None:
            raise UsageError(
                f"agent {self.name!r}: {action}() needs a current dialog, and none is "
                f"({'open ones: ' + repr(sorted(self._threads)) + '; switch to one' if self._threads else 'none is open'}). "
                "Call agent.open(alias) or agent.switch(alias) first.",
            )
        return self._threads[self._current]


def _answer_metadata(result: InvokeResult, prompt: Prompt) -> dict[str, Any]:
    """The facts an assistant message keeps about the call that produced it."""
    meta: dict[str, Any] = {"model": result.model, "prompt": prompt.path}
    if result.cost_note:
        meta["cost_note"] = result.cost_note  # why its cost is 0 (no price known) or simulated
    return meta


def _parse_answer(prompt: Prompt, result: InvokeResult, args: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    content = result.content or ""
    output = None
    if prompt.format is not None:
        output = result.parsed if isinstance(result.parsed, prompt.format) else None
        if output is None:
            try:
                output = prompt.format.model_validate_json(content)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:8])
                raise ParseError(
                    f"the answer is not a valid JSON object for {prompt.format.__name__}: {problems}", field="format"
                ) from exc
    parsed: dict[str, Any] = prompt.parse(content, **args) if prompt.parser is not None else {"raw": content}
    if output is not None:
        fields = output.model_dump(mode="json")
        # the fields at the top level too, so that `Model(**message.parsed)` works (lllm-core's parsed is the
        # JSON object itself); a field named like a key of ours ("raw", "output") wins over that key
        parsed = {**parsed, "output": fields, **fields}
    return parsed, output


class _CallFailed(Exception):
    """A tool call that cannot be answered with a result; its text goes back to the model."""


def _run_one(call: FunctionCall, functions: dict[str, Function]) -> tuple[str, list[ImageData] | None]:
    """Run one tool call; fill in `call` and return the text for the tool message and any images."""
    try:
        text, images = _execute(call, functions)
    except _CallFailed as exc:
        call.error_message = str(exc)
        call.result_str = f"Error: {exc}"
        return call.result_str, None
    except InfrastructureError as exc:
        call.error_message = f"not run: {type(exc).__name__}: {exc}"
        exc.add_note(f"(raised by tool {call.name!r}: lllm's machinery failed, so the agent call ended here "
                     "instead of handing the error to the model)")
        raise
    call.result_str = text
    return text, images


def _execute(call: FunctionCall, functions: dict[str, Function]) -> tuple[str, list[ImageData] | None]:
    name = call.name
    fn = functions.get(name)
    if fn is None:
        if functions:
            raise _CallFailed(f"there is no tool named {name!r}; the tools are {sorted(functions)!r}")
        raise _CallFailed(f"there is no tool named {name!r}, and no tools are available now; answer without tools")
    raw = call.raw_arguments if call.raw_arguments not in (None, "") else "{}"
    try:
        arguments = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _CallFailed(f"the arguments of {name!r} are not valid JSON ({exc.msg} at position {exc.pos}): "
                          f"{_clip(raw, 300)!r}. Call it again with a JSON object of arguments") from None
    if not isinstance(arguments, dict):
        raise _CallFailed(f"the arguments of {name!r} must be a JSON object, got {_clip(raw, 300)!r}")
    call.arguments = arguments
    try:
        kwargs = fn.validate_arguments(arguments)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:8])
        raise _CallFailed(f"bad arguments for {name!r}: {problems}") from None
    if fn.function is None:
        raise _CallFailed(f"tool {name!r} is declared but has no implementation; answer without it")
    try:
        out = fn.function(**kwargs)
    except InfrastructureError:
        raise  # not the model's doing: it ends the call (lllm.errors, "the rule of the tool loop")
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported to the model, not raised
        if _is_lllm_bug(fn.function, exc):
            raise ToolBugError(f"lllm's own tool {name!r} failed with {type(exc).__name__}: {exc}. This is a bug "
                               "in lllm, not something the model did, so the run ends here; please report it with "
                               "the traceback", tool=name) from exc
        raise _CallFailed(f"{name!r} raised {type(exc).__name__}: {exc}") from None
    try:
        text, images = _tool_output(out)
        if fn.processor is not None:
            text = fn.processor(out, call)
            if not isinstance(text, str):
                raise TypeError(f"its processor returned {type(text).__name__}, not a str")
        return text, images
    except Exception as exc:  # noqa: BLE001 - e.g. an image that cannot be loaded
        raise _CallFailed(f"{name!r} returned a result that cannot be sent: {type(exc).__name__}: {exc}") from None


def _is_lllm_bug(function: Callable[..., Any], exc: BaseException) -> bool:
    """An exception lllm did not mean, raised in lllm's own code by one of lllm's own tools. A user's tool, a
    proxy's code or a library (Playwright...) raising stays the model's to read; so does any LLLMError, which
    lllm raises on purpose with a message for the reader."""
    if isinstance(exc, LLLMError) or not _in_lllm(getattr(function, "__module__", None)):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _in_lllm(tb.tb_frame.f_globals.get("__name__"))


def _in_lllm(module: object) -> bool:
    return isinstance(module, str) and (module == "lllm" or module.startswith("lllm."))


def _tool_output(out: Any) -> tuple[str, list[ImageData] | None]:
    if isinstance(out, str):
        return out, None
    if isinstance(out, ToolResult):
        images = [load_image(i, source="tool") for i in out.images] if out.images else None
        return str(out.content), images
    if out is None:
        return "", None
    if isinstance(out, BaseModel):
        return out.model_dump_json(), None
    return json.dumps(out, ensure_ascii=False, default=str), None


def _bad_tool(agent: str, item: Any) -> Function:
    raise ConfigError(f"agent {agent!r}: agent.tools holds {item!r}; add Function objects (or typed callables)",
                      key="tools")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
