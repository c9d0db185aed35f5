"""Seed lesson, Pattern 7 (Image Input), run as written (with a real chart in place of /path/to/chart.png),
and again with a PIL image and a base64 string: the model gets an image part with the right MIME type."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lllm import Agent, Prompt
from lllm.invokers.scripted import ScriptedInvoker

PATTERN_7 = '''
agent.open("vision")
agent.receive_image("/path/to/chart.png", caption="Q1 revenue chart")
agent.receive("What trends do you see in this chart?")
response = agent.respond()
print(response.content)
'''

ANSWER = "Revenue rises every month of Q1."


def chart() -> Image.Image:
    img = Image.new("RGB", (40, 30), "white")
    for x in range(40):
        img.putpixel((x, 29 - (x * 29) // 39), (200, 0, 0))
    return img


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    chart().save(buf, format=fmt)
    return buf.getvalue()


def run_pattern(image_expr: str, namespace: dict[str, Any]) -> ScriptedInvoker:
    script = ScriptedInvoker([ANSWER])
    namespace["agent"] = Agent(name="vision_agent", system_prompt=Prompt(path="v/system", prompt="You read charts."),
                               model="gpt-4o", llm_invoker=script)
    code = PATTERN_7.replace('"/path/to/chart.png"', image_expr)
    exec(compile(code, "<seed pattern 7>", "exec"), namespace)
    script.assert_complete()
    return script


def assert_image_request(script: ScriptedInvoker, mime: str, raw: bytes | None = None) -> None:
    messages = script.calls[0].messages
    assert [m["role"] for m in messages] == ["system", "user", "user"]
    text, image = messages[1]["content"]
    assert text == {"type": "text", "text": "Q1 revenue chart"}
    url = image["image_url"]["url"]
    assert image["type"] == "image_url" and url.startswith(f"data:{mime};base64,")
    sent = base64.b64decode(url.split(",", 1)[1])
    assert Image.open(io.BytesIO(sent)).size == (40, 30)
    if raw is not None:
        assert sent == raw
    assert messages[2] == {"role": "user", "content": "What trends do you see in this chart?"}


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_pattern7_from_a_path(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, mime: str) -> None:
    raw = encoded(fmt)
    path = tmp_path / "chart.png"  # a JPEG saved as chart.png is still sent as image/jpeg
    path.write_bytes(raw)
    script = run_pattern(repr(str(path)), {})
    assert_image_request(script, mime, raw)
    assert capsys.readouterr().out == ANSWER + "\n"


def test_pattern7_from_a_pil_image(capsys: pytest.CaptureFixture[str]) -> None:
    script = run_pattern("chart_image", {"chart_image": chart()})
    assert_image_request(script, "image/png")
    assert capsys.readouterr().out == ANSWER + "\n"


def test_pattern7_from_base64(capsys: pytest.CaptureFixture[str]) -> None:
    raw = encoded("JPEG")
    script = run_pattern("chart_b64", {"chart_b64": base64.b64encode(raw).decode()})
    assert_image_request(script, "image/jpeg", raw)
    assert capsys.readouterr().out == ANSWER + "\n"


def test_pattern7_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    from lllm.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):
        run_pattern(repr(str(tmp_path / "chart.png")), {})
