"""The OpenTelemetry trace sink: a real tactic call (scripted model, a tool that runs a cell in a FakeSandbox and
makes a CALL_API record) becomes tactic → agent → model/tool → cell/CALL_API spans with GenAI attributes, read
back from the SDK's in-memory exporter; and the default sink exports over OTLP/HTTP to the endpoint the
standard variables name (a receiver on loopback)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from lllm import Tactic
from lllm.core.runtime import Runtime
from lllm.core.tactic import current_session
from lllm.core.trace import ApiCallRecord
from lllm.logging.sinks import disable_trace_sinks, enable_trace_sink

pytest.importorskip("opentelemetry.sdk")  # the [otel] extra; in [dev], so CI always has it

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from lllm.logging.otel import OtelSink  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_trace_sink(OtelSink(tracer_provider=provider))
    yield exporter
    disable_trace_sinks()
    provider.shutdown()


def run_python(code: str) -> str:
    """Run code in the call's sandbox (a FakeSandbox here, reporting its cell like any sandbox)."""
    from lllm.sandbox.fake import FakeSandbox

    session = current_session()
    assert session is not None
    with FakeSandbox(lambda c: "secret-free output 42", tracer=session.tracer, agent="coder") as sandbox:
        result = sandbox.run_cell(code)
    session.tracer(ApiCallRecord(agent="coder", proxy="fmp", endpoint="price", status="ok", latency_s=0.001,
                                 params='{"symbol": "AAPL"}', answer="x" * 10_000))
    return result.text


class Coder(Tactic, register=False):
    name = "otel_coder"
    agent_group = ["coder"]

    def call(self, task: str, **kwargs: object) -> str:
        agent = self.agents["coder"]
        agent.tools.append(run_python)
        agent.open("main")
        agent.receive(task)
        return agent.respond().content


def _config() -> dict[str, Any]:
    steps = [{"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": "print(6 * 7)"}}],
              "usage": {"prompt_tokens": 100, "completion_tokens": 20}},
             {"content": "42", "usage": {"prompt_tokens": 150, "completion_tokens": 5}}]
    return {"tactic_type": "otel_coder", "invoker": "scripted",
            "invoker_config": {"steps": steps, "input_price": 2.5, "output_price": 10.0},  # a simulated price
            "agent_configs": [{"name": "coder", "model_name": "gpt-4o", "system_prompt": "You code."}]}


def test_a_call_becomes_a_tree_of_spans_with_genai_attributes(spans: InMemorySpanExporter) -> None:
    session = Coder(_config(), runtime=Runtime("otel"))("compute", tags={"env": "test"}, return_session=True)
    got = {s.name: s for s in spans.get_finished_spans()}
    assert set(got) == {"tactic otel_coder", "invoke_agent coder", "chat scripted", "execute_tool run_python",
                        "sandbox.cell", "CALL_API fmp/price"}
    assert len(spans.get_finished_spans()) == 7  # two model calls

    def parent(name: str) -> str:
        span = got[name]
        return next(s.name for s in spans.get_finished_spans() if s.context.span_id == span.parent.span_id)

    tactic = got["tactic otel_coder"]
    assert tactic.parent is None
    assert parent("invoke_agent coder") == "tactic otel_coder"
    assert parent("chat scripted") == "invoke_agent coder"
    assert parent("execute_tool run_python") == "invoke_agent coder"
    assert parent("sandbox.cell") == "execute_tool run_python"
    assert parent("CALL_API fmp/price") == "execute_tool run_python"
    assert len({s.context.trace_id for s in spans.get_finished_spans()}) == 1

    chats = [s for s in spans.get_finished_spans() if s.name == "chat scripted"]  # the model that answered
    assert [(c.attributes["gen_ai.usage.input_tokens"], c.attributes["gen_ai.usage.output_tokens"]) for c in chats] \
        == [(100, 20), (150, 5)]
    assert all(c.attributes["gen_ai.operation.name"] == "chat" and c.attributes["gen_ai.response.model"] == "scripted"
               and c.attributes["lllm.cost_usd"] > 0 for c in chats)
    assert tactic.attributes["lllm.cost_usd"] == pytest.approx(session.total_cost.cost)
    assert tactic.attributes["lllm.tag.env"] == "test" and tactic.attributes["lllm.state"] == "ok"
    tool = got["execute_tool run_python"]
    assert tool.attributes["gen_ai.tool.name"] == "run_python" and "print(6 * 7)" in tool.attributes["lllm.tool.arguments"]
    assert got["sandbox.cell"].attributes["lllm.cell.code"] == "print(6 * 7)"
    answer = got["CALL_API fmp/price"].attributes["lllm.api.answer"]
    assert len(answer) < 4200 and answer.endswith("more characters]")  # capped
    for child in ("invoke_agent coder", "execute_tool run_python", "sandbox.cell"):  # inside their parents in time
        span, up = got[child], got[parent(child)]
        assert up.start_time <= span.start_time and span.end_time <= up.end_time + 1_000_000


def test_a_failed_call_is_an_error_span(spans: InMemorySpanExporter) -> None:
    config = _config()
    config["invoker_config"] = {"steps": [{"error": "api_error", "message": "upstream broke", "status_code": 400}]}
    with pytest.raises(Exception, match="upstream broke"):
        Coder(config, runtime=Runtime("otel"))("compute")
    got = {s.name: s for s in spans.get_finished_spans()}
    assert got["tactic otel_coder"].status.status_code.name == "ERROR"
    assert got["chat gpt-4o"].status.status_code.name == "ERROR"  # the model asked for (none answered)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).bodies.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_default_sink_exports_otlp_to_the_endpoint_the_standard_variables_name(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = textwrap.dedent("""
        from lllm import Tactic
        from lllm.core.runtime import Runtime

        class Hello(Tactic, register=False):
            name = "otlp_hello"
            agent_group = ["a"]
            def call(self, task, **kw):
                a = self.agents["a"]; a.open("main"); a.receive(task); return a.respond().content

        config = {"invoker": "scripted", "invoker_config": {"steps": ["hi"]},
                  "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": "hi"}]}
        print(Hello(config, runtime=Runtime("otlp"))("go"))
    """)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "OTEL_SERVICE_NAME": "lllm-test", "LLLM_ALLOW_MODEL_REQUESTS": "0"}
    env.pop("LLLM_TRACE_SINKS", None)
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert out.returncode == 0 and out.stdout.strip() == "hi", out.stderr
    assert [b[0] for b in _Receiver.bodies] == ["/v1/traces"]  # flushed once, at exit
    path, content_type, body = _Receiver.bodies[0]
    assert content_type == "application/x-protobuf"
    for name in (b"tactic otlp_hello", b"invoke_agent a", b"chat scripted", b"lllm-test", b"gen_ai.usage.input_tokens"):
        assert name in body
