"""docs/guide/models.md, run: its Python, YAML and shell examples against a fake OpenAI-compatible server on
127.0.0.1 (its address in place of http://127.0.0.1:8000/v1), and its table of defaults against the code."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import guide_runner
from fake_openai import text, tool_calls
from lllm.invokers import build_invoker

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "models.md"
DOC_URL = "http://127.0.0.1:8000/v1"


def blocks(lang: str) -> list[str]:
    return [block.code for block in guide_runner.blocks(GUIDE.name, lang) if block.run]


def run_python(code: str, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace(DOC_URL, url), str(GUIDE), "exec"), {})
    return out.getvalue()


def test_the_python_example_reaches_the_server_and_explains_the_zero_cost(fake_openai: Any) -> None:
    server = fake_openai([text("Hello!")])
    out = run_python(blocks("python")[0], server.url).splitlines()
    assert out[0] == "Hello!"
    assert out[1].startswith("0.0 litellm has no price for model 'openai/my-model'; cost reported as 0")
    assert server.requests[0]["json"]["model"] == "my-model"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-local"


def test_the_yaml_invoker_config_builds_and_calls(fake_openai: Any) -> None:
    server = fake_openai([text("from yaml")])
    config = yaml.safe_load(blocks("yaml")[0].replace(DOC_URL, server.url))
    inv = build_invoker({"invoker": config["invoker"], **config["invoker_config"]})
    assert (inv.timeout, inv.connect_timeout, inv.retry.deadline, inv.retry.max_retries) == (120, 10, 300, 3)
    assert inv.call([{"role": "user", "content": "hi"}], model="openai/my-model").content == "from yaml"


def test_the_table_of_defaults_is_the_code() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d.]+) \|", GUIDE.read_text(), flags=re.M))
    inv = build_invoker({"invoker": "litellm"})
    actual = {"connect_timeout": inv.connect_timeout, "timeout": inv.timeout, "deadline": inv.retry.deadline,
              "max_retries": inv.retry.max_retries, "backoff": inv.retry.backoff, "backoff_max": inv.retry.backoff_max}
    assert {k: float(v) for k, v in rows.items()} == {k: float(v) for k, v in actual.items()}


def test_the_scripted_price_block_simulates_a_price() -> None:
    config = yaml.safe_load(blocks("yaml")[1])
    inv = build_invoker({"invoker": config["invoker"], **config["invoker_config"]})
    r = inv.call([{"role": "user", "content": "great"}], model="gpt-4o")
    assert r.model == "scripted" and r.usage.cost > 0 and r.cost_note.startswith("simulated")


def test_the_responses_example_says_what_it_needs(fake_openai: Any) -> None:
    import importlib.util

    server = fake_openai([])
    code = blocks("python")[1]
    if importlib.util.find_spec("mcp") is None:  # the guide's first requirement
        out = run_python(code, server.url)
        assert "imports the optional `mcp` package" in out and "pip install 'mcp>=2.2,<3'" in out
        assert server.requests == []  # refused before any request was sent
    else:  # the second: a server with /v1/responses (the fake has chat completions only)
        from lllm.errors import ModelAPIError

        with pytest.raises(ModelAPIError):
            run_python(code, server.url)
        assert server.requests[0]["path"] == "/v1/responses"


def test_the_shell_example_runs_lllm_demo_on_the_server_and_shows_what_the_model_said(
        fake_openai: Any, tmp_path: Path) -> None:
    replies = [tool_calls(("query_api_doc", {"proxy_name": "fmp"}), content="First I will read the fmp docs."),
               text("Apple's stock rose; GDP grew; the news is mixed.")]
    server = fake_openai(replies)
    (shell,) = blocks("bash")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLLM_MODEL"))}
    command: list[str] = []
    for line in shell.replace(DOC_URL, server.url).splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
        elif line.startswith("lllm "):
            command = line.split()
    assert command[:2] == ["lllm", "demo"] and env["OPENAI_API_BASE"] == server.url
    env["LLLM_ALLOW_MODEL_REQUESTS"] = "1"  # a real model request: to the fake on loopback only
    proc = subprocess.run([sys.executable, "-m", "lllm.cli", *command[1:], "--db", str(tmp_path / "demo.db"),
                           "--workdir", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # the text that came with the tool call is printed, before the call
    assert "[assistant]\n    First I will read the fmp docs.\n[research_analyst -> query_api_doc]" in out
    assert "[assistant]\n    Apple's stock rose; GDP grew; the news is mixed." in out
    assert "code ran in: nowhere (no cell ran)" in out  # it only read docs: no sandbox started, none claimed
    assert "cost: $0.000000 (" in out and "note: litellm has no price for model 'openai/my-model'" in out
    assert [r["json"]["model"] for r in server.requests] == ["my-model", "my-model"]
    assert any(m.get("role") == "tool" for m in server.requests[1]["json"]["messages"])
