"""The Python examples of docs/guide/explorer.md and docs/guide/tracing.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide"


def _blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (GUIDE / name).read_text(), flags=re.S)


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
