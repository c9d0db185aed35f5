"""Dialogs: `Message` (one turn of a conversation) and `Dialog` (an append-only list of them that forks into a
tree), with `to_dict()`/`from_dict()` through one pydantic adapter.

Messages are plain dataclasses: building one costs microseconds, and nothing is validated in the agent's hot
loop. Each message keeps its OpenAI chat-format dict (built once, when it is appended), so sending a dialog
to a model copies a list of references rather than rebuilding it. A message is not changed once appended;
a fork shares its parent's messages up to the split point.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import TypeAdapter

from lllm.core._functions import FunctionCall
from lllm.core._images import ImageData
from lllm.errors import UsageError
from lllm.records import InvokeCost

__all__ = ["ContextManager", "DefaultContextManager", "Dialog", "DialogData", "Message", "Roles", "dialog_adapter"]


class Roles(str, Enum):
    """Who wrote a message, in the OpenAI chat vocabulary (the values are what the model API takes)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)
class Message:
    """One message of a dialog.

    `usage` and `cost` of an assistant message count every model call that produced it: the call whose answer
    it is and the rejected answers retried before it (they never enter the dialog), so the sum over a
    dialog is what it really cost.
    """

    role: Roles
    """Who wrote it: system, user, assistant or tool."""
    content: str | None = None
    """The text (None for an assistant message that only calls tools)."""
    name: str | None = None
    """The agent that wrote an assistant message; the tool of a tool message."""
    tool_calls: list[FunctionCall] = field(default_factory=list)
    """The tools an assistant message calls."""
    tool_call_id: str | None = None
    """The call a tool message answers."""
    parsed: dict[str, Any] | None = None
    """The prompt's parser output for an assistant answer (`{"raw": ..., ...}`), else None."""
    usage: InvokeCost | None = None
    """Tokens and USD of producing this message (assistant messages only)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form facts (the model, the prompt path, ...)."""
    images: list[ImageData] = field(default_factory=list)
    """Images sent with a user message (as image parts after the text)."""
    created_at: float = field(default_factory=time.time)
    """Unix time."""
    kind: Literal["message"] = "message"

    def __post_init__(self) -> None:
        self._wire: dict[str, Any] | None = None
        self.output: Any = None  # with a `format=` prompt: the validated instance (not serialised)

    @property
    def cost(self) -> float:
        """USD spent to produce this message (0.0 for messages no model produced)."""
        return self.usage.cost if self.usage is not None else 0.0

    @property
    def is_function_call(self) -> bool:
        """True when this (assistant) message calls tools (lllm-core's name for `bool(message.tool_calls)`)."""
        return bool(self.tool_calls)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat-format dict (built once and reused: do not change the message after it is sent)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = _to_wire(self)
        return wire

    def __repr__(self) -> str:
        text = (self.content or "")[:60]
        extra = f", tool_calls={[c.name for c in self.tool_calls]}" if self.tool_calls else ""
        extra += f", images={len(self.images)}" if self.images else ""
        return f"Message(role={self.role.value!r}, content={text!r}{extra})"


def _to_wire(msg: Message) -> dict[str, Any]:
    role = msg.role.value
    if role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "name": msg.name, "content": msg.content or ""}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in msg.tool_calls]
        return out
    if msg.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": msg.content}] if msg.content else []
        parts.extend(img.to_part() for img in msg.images)
        return {"role": role, "content": parts}
    return {"role": role, "content": msg.content or ""}


@dataclass
class DialogData:
    """The serialised form of a dialog and its forks (what `to_dict` dumps and `from_dict` reads)."""

    id: str
    name: str | None
    messages: list[Message]
    parent_id: str | None = None
    split_point: int | None = None
    created_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    children: list[DialogData] = field(default_factory=list)
    kind: Literal["dialog"] = "dialog"


_adapter: TypeAdapter[DialogData] | None = None


def dialog_adapter() -> TypeAdapter[DialogData]:
    """The one adapter dialogs are (de)serialised through (built on first use: it costs ~80 ms at import)."""
    global _adapter
    if _adapter is None:
        _adapter = TypeAdapter(DialogData)
    return _adapter


def __getattr__(name: str) -> Any:
    if name == "DialogAdapter":
        return dialog_adapter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Dialog:
    """An append-only conversation; `fork()` makes a child that shares its history up to a split point.

    Example:
        ```python
        base = Dialog(name="base")
        base.append(Message(role=Roles.USER, content="context"))
        branch = base.fork(name="branch_0")     # branch.parent is base, branch.split_point == 1
        ```
    """

    def __init__(self, *, name: str | None = None, messages: list[Message] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        """Start a dialog.

        Args:
            name: Its alias (the agent sets it).
            messages: Initial messages (appended in order).
            metadata: Free-form facts.
        """
        self.id: str = uuid.uuid4().hex[:16]
        self.name = name
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.created_at = time.time()
        self.parent: Dialog | None = None
        self.parent_id: str | None = None
        self.split_point: int | None = None
        self.children: list[Dialog] = []
        self._messages: list[Message] = []
        self._wire: list[dict[str, Any]] = []
        for m in messages or []:
            self.append(m)

    def __repr__(self) -> str:
        fork = f", parent={self.parent_id!r}@{self.split_point}" if self.parent_id else ""
        return f"Dialog(name={self.name!r}, messages={len(self._messages)}{fork})"

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(tuple(self._messages))

    @property
    def messages(self) -> tuple[Message, ...]:
        """The messages, oldest first (a read-only view: append with `append`)."""
        return tuple(self._messages)

    @property
    def head(self) -> Message | None:
        """The first message (the system prompt in an agent's dialog), or None when empty."""
        return self._messages[0] if self._messages else None

    @property
    def tail(self) -> Message | None:
        """The last message, or None when empty."""
        return self._messages[-1] if self._messages else None

    def append(self, message: Message) -> Message:
        """Add a message at the end and return it.

        Raises:
            UsageError: `message` is not a `Message`.
        """
        if not isinstance(message, Message):
            raise UsageError(f"Dialog.append takes a Message, got {type(message).__name__!r}")
        self._messages.append(message)
        self._wire.append(message.to_openai())
        return message

    def replace(self, index: int, message: Message) -> Message:
        """Put `message` in place of the message at `index`, in this dialog only, and return it.

        The one exception to append-only, for context budgets: a toolset swaps a bulky message for a slimmer
        copy (the browser toolset drops screenshots older than the last N). Requests already sent keep what they
        sent, and a parent or sibling dialog that shares the old message keeps it.

        Raises:
            UsageError: `message` is not a `Message`, or `index` is out of range.
        """
        if not isinstance(message, Message):
            raise UsageError(f"Dialog.replace takes a Message, got {type(message).__name__!r}")
        if not -len(self._messages) <= index < len(self._messages):
            raise UsageError(f"index must be between {-len(self._messages)} and {len(self._messages) - 1}, "
                             f"got {index!r}")
        self._messages[index] = message
        self._wire[index] = message.to_openai()
        return message

    def to_openai(self) -> list[dict[str, Any]]:
        """The messages as OpenAI chat-format dicts (a new list; the dicts are shared, do not change them)."""
        return list(self._wire)

    def fork(self, *, name: str | None = None, split_point: int | None = None, last_n: int = 0,
             first_k: int = 1) -> Dialog:
        """A child dialog holding this one's first `split_point` messages (default: all of them).

        With `last_n` (lllm-core's form, used by context managers) the child holds the first `first_k` messages
        and the last `last_n` ones instead (all of them when `last_n` is 0 or covers the whole dialog); its
        `metadata["fork"]` says so.

        Args:
            name: The child's alias.
            split_point: How many messages the child keeps (0..len).
            last_n: Keep only the last `last_n` messages (after the first `first_k`).
            first_k: With `last_n`: how many leading messages to keep (the system prompt is the first).

        Raises:
            UsageError: `split_point`, `last_n` or `first_k` is out of range, or `split_point` is given with
                `last_n`.
        """
        total = len(self._messages)
        for arg, value in (("last_n", last_n), ("first_k", first_k)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"{arg} must be an int >= 0, got {value!r}")
        if last_n and split_point is not None:
            raise UsageError("give split_point or last_n, not both")
        if 0 < last_n < total:
            head = min(first_k, total - last_n)
            picked = [*range(head), *range(total - last_n, total)]
            child = Dialog(name=name, metadata={"fork": {"last_n": last_n, "first_k": head}})
            child._messages = [self._messages[i] for i in picked]
            child._wire = [self._wire[i] for i in picked]
            child.parent, child.parent_id, child.split_point = self, self.id, total
            self.children.append(child)
            return child
        n = total if split_point is None else split_point
        if not isinstance(n, int) or not 0 <= n <= total:
            raise UsageError(f"split_point must be between 0 and {total}, got {split_point!r}")
        child = Dialog(name=name)
        child._messages = self._messages[:n]
        child._wire = self._wire[:n]
        child.parent, child.parent_id, child.split_point = self, self.id, n
        self.children.append(child)
        return child

    def working_copy(self) -> Dialog:
        """A copy of this dialog that is not a fork of it (no parent, not among `children`): what an agent gives
        its context manager, so the pruning of one request never shows in the dialog tree or the log."""
        copy = Dialog(name=self.name, metadata=dict(self.metadata))
        copy._messages = list(self._messages)
        copy._wire = list(self._wire)
        return copy

    # -- reading ---------------------------------------------------------------------------------------

    def overview(self, remove_tail: bool = False, max_length: int = 100, stream: Any = None,
                 divider: bool = False) -> str:
        """The messages as text, one paragraph each: `[i. name (role)]: content` (content cut at `max_length`
        characters, then `...`).

        Args:
            remove_tail: Leave the last message out.
            max_length: Characters of each message shown.
            stream: Something with `write(text)` (a file, `sys.stdout`) that also gets the text.
            divider: With `stream`: write a line of dashes first.
        """
        lines = []
        messages = self._messages[:-1] if remove_tail else self._messages
        for i, m in enumerate(messages):
            text = "" if m.content is None else str(m.content)
            if len(text) > max_length:
                text = text[:max_length] + "..."
            if m.tool_calls:
                text += (" " if text else "") + f"[calls {', '.join(c.name for c in m.tool_calls)}]"
            if m.images:
                text += f" [{len(m.images)} image(s)]"
            lines.append(f"[{i}. {m.name or m.role.value} ({m.role.value})]: {text}")
        out = "\n\n".join(lines)
        if stream is not None:
            if divider:
                stream.write("-" * 40 + "\n")
            stream.write(out + "\n")
        return out

    def tree_overview(self, indent: int = 0) -> str:
        """This dialog and every fork below it, one line each: `[id] name=.. msgs=N split@k`, forks indented
        under their parent with `└─`."""
        fork = self.metadata.get("fork")
        line = (f"{'  ' * indent}{'└─ ' if indent else ''}[{self.id[:8]}] name={self.name} "
                f"msgs={len(self._messages)} split@{self.split_point}")
        if isinstance(fork, dict):
            line += f" (last_n={fork.get('last_n')}, first_k={fork.get('first_k')})"
        return "\n".join([line, *(c.tree_overview(indent + 1) for c in self.children)])

    @property
    def usage(self) -> InvokeCost:
        """Tokens and USD of every message's production, added up."""
        return InvokeCost.total(m.usage for m in self._messages if m.usage is not None)

    @property
    def cost(self) -> float:
        """USD spent on this dialog (a fork counts the history it shares with its parent too)."""
        return sum(m.cost for m in self._messages)

    def to_dict(self, *, children: bool = True) -> dict[str, Any]:
        """A JSON-able dict of this dialog and (with `children`) every fork below it."""
        return dialog_adapter().dump_python(self._data(children), mode="json", fallback=repr)

    def to_json(self, *, children: bool = True) -> str:
        """`to_dict()` as JSON text, encoded in one pass (what the log store keeps)."""
        return dialog_adapter().dump_json(self._data(children), fallback=repr).decode()

    def _data(self, children: bool) -> DialogData:
        return DialogData(
            id=self.id, name=self.name, messages=list(self._messages), parent_id=self.parent_id,
            split_point=self.split_point, created_at=self.created_at, metadata=self.metadata,
            children=[c._data(True) for c in self.children] if children else [],
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialog:
        """Rebuild a dialog (and its forks, linked to it as children) from `to_dict()` output.

        Raises:
            UsageError: `data` is not a dialog dict (the message says which field is wrong).
        """
        from pydantic import ValidationError

        try:
            parsed = dialog_adapter().validate_python(data)
        except ValidationError as exc:
            raise UsageError(f"Dialog.from_dict: not a dialog dict: {exc}") from exc
        return cls._build(parsed, None)

    @classmethod
    def _build(cls, data: DialogData, parent: Dialog | None) -> Dialog:
        d = cls(name=data.name, messages=data.messages, metadata=data.metadata)
        d.id, d.created_at, d.parent_id, d.split_point, d.parent = (
            data.id, data.created_at, data.parent_id, data.split_point, parent)
        d.children = [cls._build(c, d) for c in data.children]
        return d


# -- context managers --------------------------------------------------------------------------------------------


class ContextManager(ABC):
    """What an agent does to a dialog before each model call: trim, summarise, rewrite.

    The agent hands `__call__` a working copy of the current dialog (`Dialog.working_copy()`) and sends whatever
    dialog comes back; the dialog the agent keeps (and the log records) is never changed. Return the copy
    itself when nothing needs doing, a fork of it (`dialog.fork(last_n=10, first_k=1)`), or a new `Dialog`.

    Subclasses set the class attribute `name` (the `type:` of the `context_manager:` config block, once
    registered with `runtime.register_context_manager(cls)`); a config builds one as `cls(model_name, **rest of
    the block)`.
    """

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, dialog: Dialog) -> Dialog:
        """The dialog to send in place of `dialog`."""


TRUNCATION_MARK = "[...earlier content truncated...]\n"


class DefaultContextManager(ContextManager):
    """Keeps a dialog within the model's context window: the first message (the system prompt), then as many
    of the latest messages as fit, the oldest of those cut at its start if only part of it fits.

    Tokens are counted with `litellm.token_counter` (imported on first use). The window is `max_tokens`, or
    litellm's input window for the model (`max_input_tokens`: 128,000 for gpt-4o; 4096 when litellm does not
    know the model), less `SAFETY_BUFFER` (5,000 tokens; a quarter of the window for windows under 10,000
    tokens, so a small window is not all buffer).
    A tool answer is never sent without the assistant message that called the tool (the API refuses that), and
    a message with images is kept whole or dropped.

    Args:
        model_name: the model, as litellm names it (for its window and tokenizer).
        max_tokens: the window, overriding litellm's figure.
    """

    name: ClassVar[str] = "default"
    SAFETY_BUFFER: ClassVar[int] = 5000

    def __init__(self, model_name: str, max_tokens: int | None = None) -> None:
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens <= 0):
            raise UsageError(f"DefaultContextManager: max_tokens must be a positive int, got {max_tokens!r}")
        self.model_name = model_name
        self._max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"DefaultContextManager({self.model_name!r}, max_tokens={self._max_tokens!r})"

    @property
    def max_tokens(self) -> int:
        """The context window, in tokens."""
        if self._max_tokens is not None:
            return self._max_tokens
        from lllm.invokers.litellm import load_litellm

        table = load_litellm().model_cost
        info = table.get(self.model_name) or table.get(self.model_name.split("/", 1)[-1]) or {}
        found = info.get("max_input_tokens") or info.get("max_tokens")  # the input window, not the output cap
        return int(found) if found else 4096

    @property
    def budget(self) -> int:
        """The tokens a request may use: the window less the safety buffer."""
        window = self.max_tokens
        return window - (self.SAFETY_BUFFER if window >= 2 * self.SAFETY_BUFFER else window // 4)

    def count(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of OpenAI-format messages for this model."""
        from lllm.invokers.litellm import load_litellm

        return int(load_litellm().token_counter(model=self.model_name, messages=messages))

    def __call__(self, dialog: Dialog) -> Dialog:
        messages = dialog.messages
        wire = dialog.to_openai()
        budget = self.budget
        if not messages or self.count(wire) <= budget:
            return dialog
        budget -= self.count(wire[:1])
        kept: list[Message] = []
        for message, sent in zip(reversed(messages[1:]), reversed(wire[1:])):
            need = self.count([sent])
            if need <= budget:
                kept.append(message)
                budget -= need
                continue
            border = _cut_start(message, budget, need)
            if border is not None:
                kept.append(border)
            break
        kept.reverse()
        while kept and kept[0].role is Roles.TOOL:  # its call was dropped: the API would refuse it
            kept.pop(0)
        pruned = Dialog(name=dialog.name, metadata={**dialog.metadata,
                                                     "context": {"manager": self.name, "dropped": len(messages) - 1 -
                                                                 len(kept)}})
        for m in [messages[0], *kept]:
            pruned.append(m)
        return pruned


def _cut_start(message: Message, budget: int, need: int) -> Message | None:
    """A copy of a text message keeping the end that fits `budget` tokens (of `need`), or None."""
    if budget <= 50 or message.images or message.tool_calls or message.role is Roles.TOOL or not message.content:
        return None
    keep = max(1, int(len(message.content) * budget / need * 0.85))  # tokens ~ characters, with headroom
    return dataclasses.replace(message, content=TRUNCATION_MARK + message.content[-keep:],
                               metadata={**message.metadata, "truncated": True})
