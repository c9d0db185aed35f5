"""Seed lesson, Pattern 5 (Streaming Responses), run as written on the scripted model: tokens print as they
arrive, then `on_done` prints the newline. Once in-process, once through litellm's own streaming path."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from lllm.invokers import override
from lllm.invokers.scripted import ScriptedInvoker

PATTERN_5 = '''
from lllm.invokers.base import BaseStreamHandler

class PrintStreamHandler(BaseStreamHandler):
    def on_token(self, token: str) -> None:
        print(token, end="", flush=True)

    def on_done(self) -> None:
        print()  # newline after streaming finishes

from lllm.invokers import build_invoker
from lllm import Agent, Prompt

invoker = build_invoker({"invoker": "litellm"})
agent = Agent(
    name="streamer",
    system_prompt=Prompt(path="s/system", prompt="You are a storyteller."),
    model="gpt-4o",
    llm_invoker=invoker,
    stream_handler=PrintStreamHandler(),
)

agent.open("chat")
agent.receive("Tell me a short story about a robot.")
agent.respond()  # tokens print to stdout as they arrive
'''

STORY = "Unit 7 swept the empty station every night, and one night the stars swept back."


@pytest.mark.parametrize("through_litellm", [False, True], ids=["in-process", "through-litellm"])
def test_pattern5_streams_tokens_then_on_done(capsys: pytest.CaptureFixture[str], through_litellm: bool) -> None:
    prints: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recording_print(*args: Any, **kwargs: Any) -> None:
        prints.append((args, kwargs))
        builtins.print(*args, **kwargs)

    namespace: dict[str, Any] = {"print": recording_print}
    # a simulated price: the scripted model costs $0 unless asked, and the cost must reach a streamed reply too
    script = ScriptedInvoker([STORY], stream_chunk_chars=6, through_litellm=through_litellm, input_price=2.5,
                             output_price=10.0)
    with override(script):
        exec(compile(PATTERN_5, "<seed pattern 5>", "exec"), namespace)
    script.assert_complete()

    assert capsys.readouterr().out == STORY + "\n"
    tokens = [args[0] for args, kwargs in prints if kwargs.get("end") == ""]
    assert len(tokens) > 5, "the story should arrive in pieces, not in one print"
    assert "".join(tokens) == STORY
    assert prints[-1] == ((), {}), "on_done prints the final newline once, after the last token"
    assert sum(1 for p in prints if p == ((), {})) == 1

    reply = namespace["agent"].current_dialog.tail
    assert reply.content == STORY
    assert reply.usage.completion_tokens > 0 and reply.cost > 0, "usage and cost are reported when streaming too"
    assert script.calls[0].messages[0] == {"role": "system", "content": "You are a storyteller."}
