"""DefaultTagParser: the exact parsed shape, required tags, md blocks, signals; callables as parsers."""

from __future__ import annotations

import pytest

from lllm.core.prompt import BaseParser, DefaultTagParser, ParseError
from lllm.errors import ConfigError

PLAN = """Here is the plan.
<step>Collect the data</step>
<step id="2">
Clean it
</step>
<risk>Data may be stale</risk>
```python
print("hi")
```
<DONE>
"""


def test_parsed_has_exactly_the_seed_shape() -> None:
    parser = DefaultTagParser(xml_tags=["step", "risk"], md_tags=["python"], signal_tags=["DONE", "ABORT"])
    parsed = parser.parse(PLAN)
    assert set(parsed) == {"raw", "xml_tags", "md_tags", "signal_tags"}
    assert parsed["raw"] == PLAN
    assert parsed["xml_tags"] == {"step": ["Collect the data", "Clean it"], "risk": ["Data may be stale"]}
    assert parsed["md_tags"] == {"python": ['print("hi")']}
    assert parsed["signal_tags"] == {"DONE": True, "ABORT": False}


def test_absent_optional_tag_is_an_empty_list() -> None:
    parsed = DefaultTagParser(xml_tags=["step", "risk"]).parse("<step>a</step>")
    assert parsed["xml_tags"] == {"step": ["a"], "risk": []}


def test_required_tags_raise_parse_error_naming_each() -> None:
    parser = DefaultTagParser(xml_tags=["step"], required_xml_tags=["answer"], required_md_tags=["json"])
    with pytest.raises(ParseError) as err:
        parser.parse("<step>a</step>")
    text = str(err.value)
    assert "<answer>" in text and "```json" in text
    assert len(err.value.missing) == 2
    # required tags are extracted even when not listed in xml_tags
    ok = parser.parse("<answer>42</answer>\n```json\n{}\n```")
    assert ok["xml_tags"]["answer"] == ["42"] and ok["md_tags"]["json"] == ["{}"]


def test_empty_required_tag_counts_as_missing() -> None:
    with pytest.raises(ParseError):
        DefaultTagParser(required_xml_tags=["a"]).parse("<a>  </a>")


def test_signal_self_closing_and_none_content() -> None:
    parser = DefaultTagParser(signal_tags=["STOP"])
    assert parser.parse("ok <STOP/>")["signal_tags"] == {"STOP": True}
    assert parser.parse(None)["raw"] == ""  # type: ignore[arg-type]


def test_bad_tag_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="xml_tags"):
        DefaultTagParser(xml_tags=["a b"])


def test_subclass_adds_validation() -> None:
    class TwoSteps(DefaultTagParser):
        def parse(self, content: str, **kw: object) -> dict:
            parsed = super().parse(content, **kw)
            if len(parsed["xml_tags"]["step"]) < 2:
                raise ParseError("need at least two <step> tags")
            return parsed

    p = TwoSteps(xml_tags=["step"])
    assert isinstance(p, BaseParser)
    with pytest.raises(ParseError, match="two"):
        p("<step>a</step>")
    assert p("<step>a</step><step>b</step>")["xml_tags"]["step"] == ["a", "b"]
