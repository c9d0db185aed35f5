"""Prompts: str.format templates, missing variables, extend, handler templates, tools built from callables."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

from lllm.core.prompt import (
    AgentCallSession,
    DefaultSimpleHandler,
    DefaultTagParser,
    Function,
    FunctionParser,
    Prompt,
    ToolResult,
    tool,
)
from lllm.errors import ConfigError, UsageError


def test_render_fills_variables_and_unescapes_braces() -> None:
    p = Prompt(path="t/a", prompt="Plan {task} as JSON like {{\"steps\": []}}")
    assert p(task="X") == 'Plan X as JSON like {"steps": []}'
    assert p.variables == {"task"}


def test_doubled_braces_become_single_in_a_prompt_without_variables() -> None:
    p = Prompt(path="t/b", prompt="Answer as {{json}} only")
    assert p() == "Answer as {json} only"
    assert p.render() == "Answer as {json} only"


def test_missing_variable_names_it() -> None:
    p = Prompt(path="t/c", prompt="{task} for {user}")
    with pytest.raises(UsageError) as err:
        p(task="x")
    assert "'user'" in str(err.value) and "t/c" in str(err.value)
    assert err.value.missing == ["user"]


def test_attribute_and_index_fields_count_their_root_variable() -> None:
    p = Prompt(path="t/d", prompt="{user.name} {items[0]}")
    assert p.variables == {"user", "items"}

    class U:
        name = "ann"

    assert p(user=U(), items=["a"]) == "ann a"


@pytest.mark.parametrize("template", ["a { b", "a } b", "{}", "{0}"])
def test_broken_templates_fail_at_construction(template: str) -> None:
    with pytest.raises(ConfigError) as err:
        Prompt(path="t/bad", prompt=template)
    assert "t/bad" in str(err.value)


def test_extend_keeps_fields_and_overrides_some() -> None:
    parser = DefaultTagParser(xml_tags=["a"])
    handler = DefaultSimpleHandler()
    base = Prompt(path="t/base", prompt="{x}", parser=parser, handler=handler, metadata={"v": 1})
    child = base.extend(path="t/child", prompt="new {y}")
    assert child.path == "t/child" and child.prompt == "new {y}" and child.variables == {"y"}
    assert child.parser is parser and child.handler is handler and child.metadata == {"v": 1}
    assert base.prompt == "{x}"
    with pytest.raises(ConfigError, match="unknown field"):
        base.extend(path="t/z", parsr=None)
    with pytest.raises(UsageError, match="path="):
        base.extend(prompt="no path")


def test_handler_template_accepts_single_and_doubled_handler_variables() -> None:
    p = Prompt(path="t/h", prompt="Attempt 2: {{error_message}} / {error_message} / {task} / {{literal}}")
    text = p.render_handler({"error_message": "bad {json}"}, {"task": "T"})
    assert text == "Attempt 2: bad {json} / bad {json} / T / {literal}"


def test_constructor_type_errors() -> None:
    with pytest.raises(ConfigError, match="path"):
        Prompt(path="", prompt="x")
    with pytest.raises(ConfigError, match="format"):
        Prompt(path="p", prompt="x", format=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="handler"):
        Prompt(path="p", prompt="x", handler=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="parser"):
        Prompt(path="p", prompt="x", parser=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="function_list"):
        Prompt(path="p", prompt="x", function_list=[42])  # type: ignore[list-item]


def test_callable_parser_and_parse_adds_raw() -> None:
    p = Prompt(path="p", prompt="x", parser=lambda text, **kw: {"n": len(text), "kw": kw})
    assert isinstance(p.parser, FunctionParser)
    assert p.parse("abc", task="t") == {"n": 3, "kw": {"task": "t"}, "raw": "abc"}
    assert Prompt(path="q", prompt="x").parse("abc") == {"raw": "abc"}
    bad = Prompt(path="r", prompt="x", parser=lambda text, **kw: ["not", "a", "dict"])
    with pytest.raises(ConfigError, match="dict"):
        bad.parse("abc")


# ---- tools ------------------------------------------------------------------------------------------------


class Point(BaseModel):
    x: int
    y: int


def weather(city: str, unit: Literal["C", "F"] = "C", days: list[int] | None = None, at: Point | None = None) -> str:
    """Current weather in a city.

    More detail that is not the summary.

    Args:
        city: The city, e.g.
            "Paris".
        unit: The unit.

    Returns:
        A sentence.
    """
    return f"{city}:{unit}:{days}:{at}"


def test_from_callable_builds_json_schema_from_type_hints_and_docstring() -> None:
    fn = Function.from_callable(weather)
    schema = fn.to_tool()
    assert schema["type"] == "function"
    body = schema["function"]
    assert body["name"] == "weather" and body["description"] == "Current weather in a city."
    params = body["parameters"]
    assert params["required"] == ["city"] and params["additionalProperties"] is False
    assert params["properties"]["city"] == {"type": "string", "description": 'The city, e.g. "Paris".'}
    assert params["properties"]["unit"]["enum"] == ["C", "F"]
    assert params["properties"]["days"]["anyOf"][0] == {"items": {"type": "integer"}, "type": "array"}
    assert "Point" in params["$defs"]
    json.dumps(schema)  # JSON-able
    assert fn.to_tool() is schema  # cached


def test_run_validates_and_coerces_arguments() -> None:
    fn = Function.from_callable(weather)
    assert fn.run({"city": "Oslo", "at": {"x": 1, "y": 2}}) == "Oslo:C:None:x=1 y=2"
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        fn.run({"unit": "K"})
    with pytest.raises(ValidationError):
        fn.run({"city": "a", "extra": 1})


def test_tool_decorator_bare_and_with_options() -> None:
    @tool
    def a(x: int) -> int:
        """Double x."""
        return 2 * x

    @tool(description="Custom.", prop_desc={"x": "the number"}, name="b_tool")
    def b(x: int) -> int:
        return x

    assert isinstance(a, Function) and a.run({"x": 2}) == 4 and a.description == "Double x."
    assert b.name == "b_tool" and b.description == "Custom."
    assert b.properties["x"]["description"] == "the number"


def test_from_callable_rejects_varargs_and_bad_names() -> None:
    def f(*args: int) -> None: ...

    with pytest.raises(ConfigError, match=r"\*args"):
        Function.from_callable(f)
    with pytest.raises(ConfigError, match="not valid"):
        Function(name="has space")


def test_declared_function_linked_later() -> None:
    fn = Function(name="echo", description="Echo.", properties={"s": {"type": "string"}}, required=["s"])
    assert not fn.linked
    with pytest.raises(ConfigError, match="link_function"):
        fn.run({"s": "x"})
    fn.link_function(lambda s: s)
    assert fn.run({"s": "x"}) == "x"
    p = Prompt(path="p", prompt="x", function_list=[fn, weather])
    assert set(p.functions) == {"echo", "weather"}
    assert p.get_function("weather").name == "weather"
    with pytest.raises(UsageError, match="echo"):
        p.get_function("nope")


def test_default_handler_hooks_keep_parser_and_tools_and_final_drops_tools() -> None:
    parser = DefaultTagParser(xml_tags=["a"])
    p = Prompt(path="p", prompt="x", parser=parser, function_list=[weather])
    session = AgentCallSession("agent")
    h = DefaultSimpleHandler()
    retry = h.on_exception(p, session)
    assert retry.parser is parser and "weather" in retry.functions and "{error_message}" in retry.prompt
    assert h.on_interrupt(p, session).render_handler({"call_results": "r"}) == ""
    final = h.on_interrupt_final(p, session)
    assert final.functions == {} and final.parser is parser
    assert "3 rounds" in final.render_handler({"max_interrupt_steps": 3})


def test_tool_result_defaults() -> None:
    r = ToolResult(content="x")
    assert r.images == []
