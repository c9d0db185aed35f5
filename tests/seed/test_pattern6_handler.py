"""Seed lesson, Pattern 6 (Custom Exception and Interrupt Handlers), run as written: the handler's retry text
carries the attempt number and the parse error, the model then succeeds, and the retries stay out of the
dialog but in the session."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lllm.core.prompt import ParseError
from lllm.invokers.scripted import ScriptedInvoker

PATTERN_6 = '''
from lllm.core.prompt import DefaultSimpleHandler, Prompt, AgentCallSession

class VerboseHandler(DefaultSimpleHandler):
    def on_exception(self, prompt: Prompt, session: AgentCallSession) -> Prompt:
        retry_num = session.exception_retries_count
        return prompt.extend(
            path=f"__verbose_exception_{retry_num}",
            prompt=(
                f"Attempt {retry_num + 1}: Your previous response had an error: "
                "{{error_message}}. Please fix it and try again. "
                "Pay close attention to the required format."
            ),
        )

my_prompt = Prompt(
    path="strict_agent/system",
    prompt="You are a strict JSON generator. {task}",
    handler=VerboseHandler(),
)
'''


def strict_json(text: str, **_: Any) -> dict[str, Any]:
    """The strict JSON generator's parser: a JSON object, or a ParseError the handler reports."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"the answer is not JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(data, dict):
        raise ParseError(f"the answer must be a JSON object, got {type(data).__name__}")
    return {"data": data}


@pytest.fixture()
def seed() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(PATTERN_6, "<seed pattern 6>", "exec"), namespace)
    return namespace


def expected_retry(attempt: int, error: str) -> str:
    return (f"Attempt {attempt}: Your previous response had an error: {error}. Please fix it and try again. "
            "Pay close attention to the required format.")


def test_pattern6_retry_text_has_attempt_number_and_error_then_success(seed: dict[str, Any]) -> None:
    from lllm import Agent

    my_prompt = seed["my_prompt"]
    assert my_prompt(task="Return a user.") == "You are a strict JSON generator. Return a user."
    json_prompt = my_prompt.extend(path="strict_agent/json", parser=strict_json)  # keeps VerboseHandler
    script = ScriptedInvoker(["Sure! Here is the user: name=Ann", "[1, 2]", '{"name": "Ann"}'])
    agent = Agent(name="strict", system_prompt=json_prompt, model="gpt-4o", llm_invoker=script)
    agent.open("json", prompt_args={"task": "Return a user."})
    agent.receive("Give me the user Ann.")
    reply = agent.respond()

    assert reply.parsed == {"data": {"name": "Ann"}, "raw": '{"name": "Ann"}'}
    first_error = "the answer is not JSON (Expecting value at position 0)"
    second_error = "the answer must be a JSON object, got list"
    assert script.calls[1].messages[-1] == {"role": "user", "content": expected_retry(2, first_error)}
    assert script.calls[2].messages[-1] == {"role": "user", "content": expected_retry(3, second_error)}
    # the second retry still shows the whole retry history to the model
    assert [m["content"] for m in script.calls[2].messages[-4:-1:2]] == ["Sure! Here is the user: name=Ann", "[1, 2]"]

    # retries never enter the dialog; the session keeps them with their errors and the LLM calls
    assert [m.content for m in agent.current_dialog.messages] == [
        "You are a strict JSON generator. Return a user.", "Give me the user Ann.", '{"name": "Ann"}']
    session = agent.last_session
    assert session.exception_retries_count == 2 and session.errors == [first_error, second_error]
    assert [r.retry_prompt for r in session.retries] == [expected_retry(2, first_error), expected_retry(3, second_error)]
    assert len(session.model_calls) == 3 and session.cost.cost == pytest.approx(reply.cost)
    script.assert_complete()


def test_pattern6_handler_gives_up_after_max_retries(seed: dict[str, Any]) -> None:
    from lllm import Agent
    from lllm.errors import AgentException

    json_prompt = seed["my_prompt"].extend(path="strict_agent/json", parser=strict_json)
    script = ScriptedInvoker(["nope"] * 2)
    agent = Agent(name="strict", system_prompt=json_prompt, model="gpt-4o", llm_invoker=script, max_exception_retry=1)
    agent.open("json", prompt_args={"task": "x"})
    agent.receive("go")
    with pytest.raises(AgentException) as err:
        agent.respond()
    assert [r["retry_prompt"] for r in err.value.retries][0].startswith("Attempt 2: ")
    assert len(agent.current_dialog) == 2
