"""Handlers and the call session: what an agent says to the model after a bad answer (`on_exception`),
after a round of tool calls (`on_interrupt`) and when the tool budget is spent (`on_interrupt_final`), and
`AgentCallSession`, the record of one `Agent.respond()` that handlers read to adapt.

A handler returns a `Prompt`; the agent renders it with the handler variables below (plus the turn's prompt
arguments) and sends it to the model. In a handler's template a handler variable may be written
`{error_message}` or `{{error_message}}` (the second is what one writes inside an f-string):

- on_exception: `error_message`, `attempt` (the number of the attempt about to be made), `max_retries`
- on_interrupt / on_interrupt_final: `call_results` (the round's results as text), `interrupt_step`,
  `max_interrupt_steps`

A prompt that renders to an empty string adds no message (the default `on_interrupt` does that: the tool
messages already carry the results).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from lllm.records import InvokeCost

if TYPE_CHECKING:
    from lllm.core._functions import FunctionCall
    from lllm.core.dialog import Message


class _Extendable(Protocol):
    """What a handler needs of a `lllm.core.prompt.Prompt` (that module sits above this one and uses it)."""

    @property
    def path(self) -> str: ...

    def extend(self, **changes: Any) -> Any: ...


Prompt = TypeVar("Prompt", bound=_Extendable)
"""The prompt a handler is given; it returns one of the same kind (`prompt.extend(...)`)."""

__all__ = ["HANDLER_VARIABLES", "AgentCallSession", "BaseHandler", "DefaultSimpleHandler", "ModelCallInfo", "Retry"]

HANDLER_VARIABLES = ("error_message", "attempt", "max_retries", "call_results", "interrupt_step", "max_interrupt_steps")
"""Names a handler's template may use, written `{x}` or `{{x}}`."""


@dataclass(slots=True)
class Retry:
    """One answer that was rejected and retried; it never entered the dialog."""

    attempt: int
    """1 for the first answer of the turn, 2 for the answer to the first retry prompt, ..."""
    error: str
    """Why it was rejected (the ParseError message)."""
    content: str | None
    """What the model said."""
    retry_prompt: str | None = None
    """The text sent back to ask for a new answer (None when the agent gave up)."""
    cost: InvokeCost = field(default_factory=InvokeCost)
    """What that answer cost."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, for logs."""
        return {"attempt": self.attempt, "error": self.error, "content": self.content,
                "retry_prompt": self.retry_prompt, "cost": self.cost.cost,
                "prompt_tokens": self.cost.prompt_tokens, "completion_tokens": self.cost.completion_tokens}


@dataclass(slots=True)
class ModelCallInfo:
    """One model call made during a respond()."""

    model: str
    usage: InvokeCost
    latency_s: float
    attempts: int
    errors: list[str]
    content: str | None
    tool_calls: int
    phase: Literal["answer", "retry", "interrupt", "interrupt_final"]
    """What the call was asking for: the turn's first answer, a retry, a follow-up after tool calls, the final one."""


@dataclass(slots=True, eq=False)
class AgentCallSession:
    """The state of one `Agent.respond()`: retries with their errors, tool rounds, model calls and cost.

    Handlers get it to adapt (e.g. `session.exception_retries_count` to number the attempts). The agent keeps
    the last one as `agent.last_session`, and an `AgentException` carries its `retries`.
    """

    agent_name: str
    """The agent."""
    dialog: str | None = None
    """The alias of the dialog."""
    max_exception_retry: int = 3
    """Retries allowed for bad answers."""
    max_interrupt_steps: int = 5
    """Tool rounds allowed before `on_interrupt_final`."""
    retries: list[Retry] = field(default_factory=list)
    """Every rejected answer, in order."""
    interrupts: list[list[FunctionCall]] = field(default_factory=list)
    """The tool calls of each tool round."""
    model_calls: list[ModelCallInfo] = field(default_factory=list)
    """Every model call, in order (also those whose answer was rejected)."""
    state: Literal["running", "success", "failure"] = "running"
    """How it ended."""
    delivery: Message | None = None
    """The message respond() returned."""
    error: str | None = None
    """Why it failed, when it did."""
    context: list[dict[str, int]] = field(default_factory=list)
    """Each model call whose dialog the agent's context manager cut: `{"messages": kept, "sent": sent}`."""

    @property
    def exception_retries_count(self) -> int:
        """How many answers were rejected so far in this respond()."""
        return len(self.retries)

    @property
    def invoke_traces(self) -> list[ModelCallInfo]:
        """`model_calls` (lllm-core 0.1's name; its entries were raw invoker results, these are summaries)."""
        return self.model_calls

    @property
    def interrupts_count(self) -> int:
        """How many tool rounds ran so far."""
        return len(self.interrupts)

    @property
    def reach_max_exception_retry(self) -> bool:
        """True when no retry is left."""
        return self.exception_retries_count > self.max_exception_retry

    @property
    def reach_max_interrupt_steps(self) -> bool:
        """True when the tool budget is spent."""
        return self.interrupts_count >= self.max_interrupt_steps

    @property
    def cost(self) -> InvokeCost:
        """Tokens and USD of every model call in this respond(), retries included."""
        return InvokeCost.total(c.usage for c in self.model_calls)

    @property
    def errors(self) -> list[str]:
        """The errors of the rejected answers, in order."""
        return [r.error for r in self.retries]

    def detail(self) -> dict[str, Any]:
        """A JSON-able summary for `AgentCallRecord.detail`."""
        extra = {"context": list(self.context)} if self.context else {}
        return {
            **extra,
            "retries": [r.to_dict() for r in self.retries],
            "interrupts": [
                [{"id": c.id, "name": c.name, "arguments": c.raw_arguments, "result": _clip(c.result_str),
                  "error": c.error_message} for c in calls]
                for calls in self.interrupts
            ],
            "model_calls": [
                {"model": m.model, "phase": m.phase, "latency_s": round(m.latency_s, 6), "attempts": m.attempts,
                 "errors": m.errors, "tool_calls": m.tool_calls, "cost": m.usage.cost,
                 "prompt_tokens": m.usage.prompt_tokens, "completion_tokens": m.usage.completion_tokens}
                for m in self.model_calls
            ],
        }


class BaseHandler(ABC):
    """Decides what the agent sends after a bad answer, after tool calls and when the tool budget is spent."""

    @abstractmethod
    def on_exception(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """The prompt that asks the model to fix a rejected answer (its parser checks the next answer)."""

    @abstractmethod
    def on_interrupt(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """The prompt in force after a round of tool calls (its tools stay callable)."""

    @abstractmethod
    def on_interrupt_final(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """The prompt sent when `max_interrupt_steps` tool rounds are spent (its tools, if any, stay callable;
        the default has none, so the model must answer)."""


DEFAULT_EXCEPTION_MSG = (
    "Your previous answer could not be used: {error_message}\n"
    "Answer again, in full, and follow the required format exactly."
)
DEFAULT_INTERRUPT_MSG = ""
DEFAULT_INTERRUPT_FINAL_MSG = (
    "You have used all {max_interrupt_steps} rounds of tool calls. Do not call tools any more: "
    "give your final answer now, from what you have."
)


class DefaultSimpleHandler(BaseHandler):
    """The default handler: a fixed retry text, no extra text after tool calls, a "final answer now" text.

    Each hook returns `prompt.extend(...)` with its text, so the parser (and, except for the final one, the
    tools) of the prompt in force stay. Subclass and override a hook to change one behaviour (the seed's
    Pattern 6), or pass other texts.
    """

    def __init__(
        self,
        *,
        exception_msg: str = DEFAULT_EXCEPTION_MSG,
        interrupt_msg: str = DEFAULT_INTERRUPT_MSG,
        interrupt_final_msg: str = DEFAULT_INTERRUPT_FINAL_MSG,
    ) -> None:
        """Set the texts (templates with the handler variables).

        Args:
            exception_msg: Sent after a rejected answer.
            interrupt_msg: Sent after each tool round ("" sends nothing).
            interrupt_final_msg: Sent when the tool budget is spent.
        """
        self.exception_msg = exception_msg
        self.interrupt_msg = interrupt_msg
        self.interrupt_final_msg = interrupt_final_msg

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def on_exception(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """`prompt` with the retry text; same parser, format and tools."""
        return prompt.extend(path=f"__{prompt.path}_exception", prompt=self.exception_msg)

    def on_interrupt(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """`prompt` with the interrupt text (empty by default); same parser and tools."""
        return prompt.extend(path=f"__{prompt.path}_interrupt", prompt=self.interrupt_msg)

    def on_interrupt_final(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        """`prompt` with the final text and no tools."""
        return prompt.extend(path=f"__{prompt.path}_interrupt_final", prompt=self.interrupt_final_msg,
                             function_list=[])


def _clip(text: str | None, limit: int = 2000) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more chars]"
