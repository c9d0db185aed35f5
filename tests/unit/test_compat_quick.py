"""`Tactic.quick`, as lllm-core's Lesson 1 documents it: the answer `Message`; `(Message, Agent)` with
`return_agent=True`; the `Agent` alone without a query (its dialog not opened yet)."""

from __future__ import annotations

from lllm import Agent, Message, Prompt, Tactic
from lllm.invokers import ScriptedInvoker, override


def test_a_query_gets_the_answer_message() -> None:
    with ScriptedInvoker(["Paris"]) as inv, override(inv):
        response = Tactic.quick("What is the capital of France?")
    assert isinstance(response, Message) and response.content == "Paris"
    (call,) = inv.calls
    assert call.model == "gpt-4o"
    assert [m["role"] for m in call.messages] == ["system", "user"]
    assert call.messages[0]["content"] == "You are a helpful assistant."
    assert call.messages[1]["content"] == "What is the capital of France?"


def test_model_system_prompt_and_model_args_reach_the_call() -> None:
    with ScriptedInvoker(["*sigh* 4"]) as inv, override(inv):
        Tactic.quick("What is 2 + 2?", system_prompt="You are a grumpy math teacher.", model="claude-opus-4-6",
                     temperature=0.2)
    (call,) = inv.calls
    assert call.model == "claude-opus-4-6"
    assert call.messages[0]["content"] == "You are a grumpy math teacher."
    assert call.model_args == {"temperature": 0.2}


def test_return_agent_gives_the_agent_to_go_on_with() -> None:
    with ScriptedInvoker(["Paris", "About 2.1 million."]) as inv, override(inv):
        response, agent = Tactic.quick("What is the capital of France?", return_agent=True)
        assert isinstance(agent, Agent) and agent.name == "assistant"
        assert agent.current_alias == "chat" and agent.current_dialog.tail is response
        agent.receive("How many people live there?")
        assert agent.respond().content == "About 2.1 million."
    assert len(inv.calls[1].messages) == 4  # system, question, answer, follow-up


def test_without_a_query_the_agent_comes_back_unopened() -> None:
    review = Prompt(path="review/movie", prompt="You are a film critic.")
    with ScriptedInvoker(["Fine."]) as inv, override(inv):
        agent = Tactic.quick(system_prompt=review, model="gpt-4o")
        assert isinstance(agent, Agent) and agent.current_dialog is None and agent.system_prompt is review
        assert Tactic.quick(return_agent=True).current_dialog is None  # no query: the agent, whatever return_agent says
        agent.open("chat")
        agent.receive("Review 'Inception'.")
        assert agent.respond().content == "Fine."
    assert inv.calls[0].messages[0]["content"] == "You are a film critic."
