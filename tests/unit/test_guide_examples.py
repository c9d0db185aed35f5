"""The examples of docs/guide/explorer.md, docs/guide/tracing.md and docs/guide/testing.md run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import guide_runner


def _blocks(name: str) -> list[str]:
    return [block.code for block in guide_runner.blocks(name) if block.run]


def test_the_explorer_guide_example_runs(tmp_path: Path) -> None:
    (block,) = _blocks("explorer.md")
    exec(compile(block, "docs/guide/explorer.md", "exec"), {"DB": str(tmp_path / "runs.db")})


def test_the_tracing_guide_examples_run() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from lllm import Tactic
    from lllm.core.runtime import Runtime
    from lllm.logging.sinks import disable_trace_sinks, enable_trace_sink

    otel, sink = _blocks("tracing.md")
    scope: dict[str, object] = {}
    before, _, after = otel.partition("# ... run tactics ...")  # the tactic below runs in that place
    assert after.strip() == "disable_trace_sinks()"
    exec(compile(before, "docs/guide/tracing.md", "exec"), scope)
    exec(compile(sink, "docs/guide/tracing.md", "exec"), scope)
    counting = enable_trace_sink("counting")

    class Hello(Tactic, register=False):
        name = "guide_hello"
        agent_group = ["a"]

        def call(self, task: str, **kwargs: object) -> str:
            a = self.agents["a"]
            a.open("main")
            a.receive(task)
            return a.respond().content

    config = {"invoker": "scripted", "invoker_config": {"steps": ["hi"]},
              "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": "hi"}]}
    try:
        assert Hello(config, runtime=Runtime("guide"))("go") == "hi"
    finally:
        disable_trace_sinks()
    assert counting.kinds == {"model_call": 1, "agent_call": 1}
    assert {s.name for s in scope["exporter"].get_finished_spans()} == {  # type: ignore[attr-defined]
        "tactic guide_hello", "invoke_agent a", "chat scripted"}


GUIDE_KEY = "sk-guide-FAKE-key-0123456789"


@pytest.mark.docker
def test_the_testing_guide_runs_as_written(fake_openai: Any, sandbox_image: str, tmp_path: Path) -> None:
    """docs/guide/testing.md: its files are written as the page shows them and its shell commands run in fresh
    processes, the recordings (`OPENAI_API_KEY=sk-...`) against a fake OpenAI-compatible server on loopback, then
    the replays with no key and nothing to reach."""
    import os
    import subprocess
    import sys

    from fake_openai import text, tool_calls

    page = (guide_runner.GUIDE / "testing.md").read_text()
    files = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", page, flags=re.S)
    assert [name for name, _ in files] == ["weather.py", "test_weather.py", "test_sandbox.py",
                                           "test_weather_recorded.py", "oslo_taped.py", "oslo.py"]
    for name, body in files:
        (tmp_path / name).write_text(body)
    commands = [line.split("#")[0].strip() for block in re.findall(r"```sh\n(.*?)```", page, flags=re.S)
                for line in block.splitlines()]
    commands = [c for c in commands if c and not c.startswith("git ")]
    assert len(commands) == 7

    def answer(request: dict[str, Any]) -> Any:
        if request["messages"][-1]["role"] == "tool":
            return text("Snow in Oslo today, -3 C.")
        return tool_calls(("forecast", {"city": "Oslo"}))

    server = fake_openai(answer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLLM_ALLOW_MODEL_REQUESTS"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` and `pytest` of this environment

    def start(command: str) -> subprocess.Popen[str]:
        live = "OPENAI_API_KEY=sk-..." in command
        run_env = {**env, "OPENAI_BASE_URL": server.url if live else "http://127.0.0.1:9/v1"}
        return subprocess.Popen(["bash", "-c", command.replace("sk-...", GUIDE_KEY)], cwd=tmp_path, env=run_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # each replay follows its recording; the recordings (and the first command) do not depend on each other, so
    # they run at once, then the replays (litellm's import makes a recording take seconds)
    first_replay = next(i for i, c in enumerate(commands) if i and "sk-..." in commands[i - 1] and "sk-..." not in c)
    waves = [[c for i, c in enumerate(commands) if "sk-..." in c or i < first_replay],
             [c for i, c in enumerate(commands) if "sk-..." not in c and i >= first_replay]]
    out: dict[str, str] = {}
    for wave in waves:
        running = [(c, start(c)) for c in wave]
        for command, process in running:
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, f"{command}\n{stdout[-3000:]}\n{stderr[-3000:]}"
            out[command] = stdout.strip()
    printed = [out[c] for c in commands if "python oslo" in c]
    assert printed == ["Snow in Oslo today, -3 C."] * 4  # recorded, replayed; twice
    assert len(server.requests) == 3 * 2  # the three recordings; the replays reached nothing
    tapes = sorted(p.name for p in (tmp_path / "cassettes").iterdir())
    assert tapes == ["oslo-script.yaml", "oslo.yaml", "run.yaml"]
    for tape in (tmp_path / "cassettes").iterdir():
        assert GUIDE_KEY not in tape.read_text()
