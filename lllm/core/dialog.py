"""Dialogs: `Message` (one turn of a conversation) and `Dialog` (an append-only list of them that forks into a
tree), with `to_dict()`/`from_dict()` through one pydantic adapter.

Messages are plain dataclasses: building one costs microseconds, and nothing is validated in the agent's hot
loop. Each message keeps its OpenAI chat-format dict (built once, when it is appended), so sending a dialog
to a model copies a list of references rather than rebuilding it. A message is not changed once appended;
a fork shares its parent's messages up to the split point.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from pydantic import TypeAdapter

from lllm.core._functions import FunctionCall
from lllm.core._images import ImageData
from lllm.errors import UsageError
from lllm.records import InvokeCost

__all__ = ["Dialog", "DialogData", "Message", "Roles", "dialog_adapter"]


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

    def fork(self, *, name: str | None = None, split_point: int | None = None) -> Dialog:
        """A child dialog holding this one's first `split_point` messages (default: all of them).

        Args:
            name: The child's alias.
            split_point: How many messages the child keeps (0..len).

        Raises:
            UsageError: `split_point` is out of range.
        """
        n = len(self._messages) if split_point is None else split_point
        if not isinstance(n, int) or not 0 <= n <= len(self._messages):
            raise UsageError(f"split_point must be between 0 and {len(self._messages)}, got {split_point!r}")
        child = Dialog(name=name)
        child._messages = self._messages[:n]
        child._wire = self._wire[:n]
        child.parent, child.parent_id, child.split_point = self, self.id, n
        self.children.append(child)
        return child

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
