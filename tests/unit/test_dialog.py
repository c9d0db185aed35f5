"""Dialogs: append-only messages, head/tail, forks form a tree, to_dict/from_dict round trip, wire format."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lllm.core._images import load_image
from lllm.core.const import InvokeCost, Roles
from lllm.core.dialog import Dialog, Message
from lllm.core.prompt import FunctionCall
from lllm.errors import UsageError


def _sample() -> Dialog:
    d = Dialog(name="base", metadata={"agent": "a"})
    d.append(Message(role=Roles.SYSTEM, content="You help."))
    d.append(Message(role=Roles.USER, content="Look", images=[load_image(Image.new("RGB", (2, 2)))]))
    call = FunctionCall(id="c1", name="add", arguments={"a": 1}, raw_arguments='{"a": 1}', result_str="2")
    d.append(Message(role=Roles.ASSISTANT, content=None, name="a", tool_calls=[call],
                     usage=InvokeCost(prompt_tokens=10, completion_tokens=2, total_tokens=12, cost=0.25)))
    d.append(Message(role=Roles.TOOL, content="2", name="add", tool_call_id="c1"))
    d.append(Message(role=Roles.ASSISTANT, content="<x>done</x>", name="a", parsed={"raw": "<x>done</x>", "n": [1]},
                     usage=InvokeCost(prompt_tokens=5, completion_tokens=1, total_tokens=6, cost=0.5)))
    return d


def test_messages_head_tail_and_read_only_view() -> None:
    d = _sample()
    assert len(d) == 5 and d.head.role is Roles.SYSTEM and d.tail.content == "<x>done</x>"
    assert isinstance(d.messages, tuple)
    assert Dialog().head is None and Dialog().tail is None
    with pytest.raises(UsageError):
        d.append({"role": "user", "content": "x"})  # type: ignore[arg-type]


def test_wire_format() -> None:
    wire = _sample().to_openai()
    assert wire[0] == {"role": "system", "content": "You help."}
    assert wire[1]["content"][0] == {"type": "text", "text": "Look"}
    assert wire[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert wire[2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}
    assert wire[3] == {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "2"}
    img_only = Message(role=Roles.USER, images=[load_image(Image.new("RGB", (1, 1)))]).to_openai()
    assert [p["type"] for p in img_only["content"]] == ["image_url"]


def test_cost_and_usage_add_up() -> None:
    d = _sample()
    assert d.cost == pytest.approx(0.75)
    assert d.usage.prompt_tokens == 15 and d.usage.total_tokens == 18
    assert d.messages[0].cost == 0.0


def test_fork_records_parent_and_split_point_and_is_independent() -> None:
    base = _sample()
    branch = base.fork(name="b1")
    assert branch.parent is base and branch.parent_id == base.id and branch.split_point == 5
    assert base.children == [branch]
    branch.append(Message(role=Roles.USER, content="only in branch"))
    assert len(base) == 5 and len(branch) == 6
    early = base.fork(name="b2", split_point=2)
    assert len(early) == 2 and early.tail.content == "Look"
    grandchild = branch.fork(name="g")
    assert grandchild.parent is branch and grandchild.split_point == 6
    with pytest.raises(UsageError, match="split_point"):
        base.fork(split_point=9)


def test_round_trip_keeps_the_tree() -> None:
    base = _sample()
    branch = base.fork(name="b1")
    branch.append(Message(role=Roles.USER, content="more", metadata={"k": "v"}))
    branch.fork(name="g").append(Message(role=Roles.USER, content="deeper"))
    data = base.to_dict()
    text = json.dumps(data)
    again = Dialog.from_dict(json.loads(text))
    assert again.to_dict() == data
    assert again.id == base.id and again.name == "base" and again.metadata == {"agent": "a"}
    child = again.children[0]
    assert child.parent is again and child.split_point == 5 and child.tail.metadata == {"k": "v"}
    assert child.children[0].tail.content == "deeper"
    msg = again.messages[2]
    assert msg.role is Roles.ASSISTANT and msg.tool_calls[0].arguments == {"a": 1}
    assert msg.usage == InvokeCost(prompt_tokens=10, completion_tokens=2, total_tokens=12, cost=0.25)
    assert again.messages[1].images[0].mime == "image/png"
    assert again.to_openai() == base.to_openai()
    assert data["kind"] == "dialog" and data["messages"][0]["kind"] == "message"


def test_to_dict_without_children_and_odd_parsed_values() -> None:
    d = _sample()
    d.fork(name="x")
    assert d.to_dict(children=False)["children"] == []
    d.append(Message(role=Roles.ASSISTANT, content="x", parsed={"raw": "x", "obj": object()}))
    json.dumps(d.to_dict())  # non-JSON values fall back to their repr


def test_from_dict_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="not a dialog"):
        Dialog.from_dict({"messages": "nope"})


def test_replace_swaps_a_message_in_this_dialog_only() -> None:
    from lllm.core.const import Roles
    from lllm.core.dialog import Dialog, Message
    from lllm.errors import UsageError

    base = Dialog(name="base")
    base.append(Message(role=Roles.USER, content="a big screenshot"))
    base.append(Message(role=Roles.USER, content="next"))
    child = base.fork(name="child")
    sent = child.to_openai()
    slim = child.replace(0, Message(role=Roles.USER, content="[screenshot dropped]"))
    assert child.messages[0] is slim
    assert child.to_openai()[0]["content"] == "[screenshot dropped]"
    assert sent[0]["content"] == "a big screenshot"  # what was already sent stays as sent
    assert base.messages[0].content == "a big screenshot"  # the parent keeps its own message
    assert base.to_openai()[0]["content"] == "a big screenshot"
    with pytest.raises(UsageError, match="between -2 and 1, got 2"):
        child.replace(2, slim)
    with pytest.raises(UsageError, match="takes a Message"):
        child.replace(0, "text")  # type: ignore[arg-type]
