"""The lllm pytest plugin as a user's suite gets it: a test project in a temporary folder, run by pytest's own
`pytester` in a fresh process (as a user runs it), and in this process where the point is a module imported
before the session (an in-process run drops the modules it imported: PyYAML's C loader and requests' cookie jar
do not survive being imported twice, so runs that load them use a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lllm.invokers.base as invoker_base

TACTIC = '''
from lllm import Tactic


class Echo(Tactic, register=False):
    name = "plugin_echo"
    agent_group = ["a"]

    def call(self, task, **kwargs):
        a = self.agents["a"]
        a.open("main")
        a.receive(task)
        return a.respond().content


def config(prompt="You echo."):
    return {"invoker": "litellm",  # the scripted_model fixture (lllm.invokers.override) answers instead
            "agent_configs": [{"name": "a", "model_name": "gpt-4o", "system_prompt": prompt}]}
'''


def test_the_plugin_loads_from_its_entry_point_and_imports_nothing_heavy() -> None:
    code = ("import sys, time; t = time.perf_counter(); import lllm.testing.plugin; took = time.perf_counter() - t; "
            "import json; print(json.dumps({'took': took, 'loaded': [m for m in ('docker', 'litellm', 'yaml', "
            "'lllm.sandbox', 'lllm.invokers', 'lllm.proxies', 'lllm.logging', 'lllm.core', 'lllm.testing.cassettes')"
            " if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    facts = json.loads(out.stdout)
    assert facts["loaded"] == [], facts
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "lllm"]
    assert ep.value == "lllm.testing.plugin"


def test_real_model_requests_are_blocked_unless_a_test_or_the_session_allows_them(pytester: pytest.Pytester,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_guard='''
        import os
        import pytest
        from lllm.errors import ModelRequestsDisabled
        from lllm.invokers.litellm import LiteLLMInvoker
        import lllm.invokers.base as base

        def test_blocked():
            assert os.environ["LLLM_ALLOW_MODEL_REQUESTS"] == "0" and base.ALLOW_MODEL_REQUESTS is False
            with pytest.raises(ModelRequestsDisabled, match="was blocked"):
                LiteLLMInvoker().call([{"role": "user", "content": "hi"}], model="gpt-4o")

        @pytest.mark.allow_model_requests
        def test_allowed():
            assert base.ALLOW_MODEL_REQUESTS is True

        def test_blocked_again():
            assert base.ALLOW_MODEL_REQUESTS is False
    ''')
    # a fresh process with the variable set to 1 (as a developer's shell might have it): still blocked
    monkeypatch.setenv("LLLM_ALLOW_MODEL_REQUESTS", "1")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_guard.py").assert_outcomes(passed=3)
    # in this process, where the invoker module was imported long before the session (and must import nothing
    # new: see the module docstring)
    pytester.makepyfile(test_flags='''
        import pytest
        import lllm.invokers.base as base
        from lllm.errors import ModelRequestsDisabled

        def test_blocked():
            with pytest.raises(ModelRequestsDisabled, match="'gpt-4o' was blocked"):
                base.check_model_requests_allowed("gpt-4o")

        @pytest.mark.allow_model_requests
        def test_allowed():
            base.check_model_requests_allowed("gpt-4o")

        def test_the_session(request):
            allowed = request.config.getoption("lllm_allow_model_requests")
            assert base.ALLOW_MODEL_REQUESTS is allowed
    ''')
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_flags.py").assert_outcomes(passed=3)
    assert invoker_base.ALLOW_MODEL_REQUESTS is False  # our own session's guard is back
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lllm-allow-model-requests", "test_flags.py",
                                 "-k", "allowed or session").assert_outcomes(passed=2)
    assert invoker_base.ALLOW_MODEL_REQUESTS is False


def test_scripted_model_installs_the_script_and_names_steps_left_over(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(echo=TACTIC)
    pytester.makepyfile(test_scripted='''
        from lllm.invokers import build_invoker
        from echo import Echo, config

        def test_steps(scripted_model):
            model = scripted_model(["Hello!", "Again!"])
            tactic = Echo(config())
            assert [tactic("hi"), tactic("hi")] == ["Hello!", "Again!"]
            assert model.calls[0]["messages"][-1]["content"] == "hi"

        def test_responder(scripted_model):
            scripted_model(responder=lambda messages: "echo " + messages[-1]["content"])
            assert Echo(config())("ping") == "echo ping"

        def test_left_over(scripted_model):
            scripted_model(["used", "never asked for"])
            assert Echo(config())("hi") == "used"

        def test_fails_on_its_own(scripted_model):
            scripted_model(["never asked for"])
            assert 1 == 2

        def test_nothing_leaks_into_the_next_test():
            assert type(build_invoker({"invoker": "scripted", "steps": ["x"]})).__name__ == "ScriptedInvoker"
            assert type(build_invoker({"invoker": "litellm"})).__name__ == "LiteLLMInvoker"
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, errors=1)  # test_left_over passed, then erred at teardown
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_left_over*",
        "*scripted_model was not used up: 1 of 2 scripted steps were never requested (the next one: 'never asked "
        "for'); the run made 1 request(s).*",
    ])
    assert "ERROR at teardown of test_fails_on_its_own" not in result.stdout.str()  # one failure, not two


def test_log_store_is_a_fresh_sqlite_file_a_tactic_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(echo=TACTIC)
    pytester.makepyfile(test_log='''
        from echo import Echo, config

        def test_logged(scripted_model, log_store, tmp_path):
            scripted_model(["Logged."])
            assert Echo(config(), log_store=log_store)("hi") == "Logged."
            (session,) = log_store.list_sessions()
            assert session.tactic == "plugin_echo" and session.state == "ok"
            assert [r["model"] for r in log_store.query("SELECT model FROM model_calls")] == ["scripted"]
            assert str(log_store.path).startswith(str(tmp_path))

        def test_fresh(log_store):
            assert log_store.list_sessions() == []
    ''')
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_local_sandbox_by_marker_or_by_indirect_parameter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_local='''
        import pytest

        @pytest.mark.lllm_sandbox("local", cell_timeout=20)
        def test_marker(sandbox):
            assert type(sandbox).__name__ == "LocalSandbox" and sandbox.cell_timeout == 20
            assert sandbox.run_cell("x = 6 * 7\\nprint(x)").stdout.strip() == "42"

        @pytest.mark.parametrize("sandbox", [{"backend": "local", "max_output_chars": 100}], indirect=True)
        def test_indirect(sandbox):
            assert type(sandbox).__name__ == "LocalSandbox" and sandbox.max_output_chars == 100

        @pytest.mark.lllm_sandbox("nowhere")
        def test_unknown_backend(sandbox):
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the `sandbox` fixture: *unknown sandbox backend 'nowhere'*"])


@pytest.mark.docker
def test_the_sandbox_fixture_gives_a_docker_sandbox_and_removes_it(pytester: pytest.Pytester,
                                                                   sandbox_image: str) -> None:
    import docker

    record = pytester.path / "container.txt"
    pytester.makepyfile(test_docker=f'''
        import os

        def test_in_docker(sandbox):
            assert type(sandbox).__name__ == "DockerSandbox"
            out = sandbox.run_cell("import os, socket\\nprint(os.getuid(), socket.gethostname() != '')")
            assert out.status == "ok" and out.stdout.split() == ["1000", "True"]
            net = sandbox.run_cell("import urllib.request\\nurllib.request.urlopen('http://1.1.1.1', timeout=3)")
            assert net.status == "error"  # no network
            with open({str(record)!r}, "w") as f:
                f.write(sandbox.container.id)
    ''')
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    container_id = record.read_text()
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(container_id)


def test_the_cassette_marker_records_then_replays_and_fails_on_a_change(pytester: pytest.Pytester,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(echo=TACTIC)
    pytester.makepyfile(test_taped='''
        import os
        import pytest
        from lllm.invokers import override
        from lllm.invokers.scripted import FunctionInvoker
        from echo import Echo, config

        def answer(messages):
            assert not os.environ.get("NO_MODEL"), "the model was asked"
            return "recorded answer"

        @pytest.mark.lllm_cassette("cassettes/echo.yaml")
        def test_echo():
            with override(FunctionInvoker(answer)):
                tactic = Echo(config(os.environ.get("PROMPT", "You echo.")))
                assert tactic("hi") == "recorded answer"
    ''')
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)  # auto: no file, so it records
    tape = pytester.path / "cassettes" / "echo.yaml"
    assert "recorded answer" in tape.read_text()
    monkeypatch.setenv("NO_MODEL", "1")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)  # replayed: the model is never asked
    monkeypatch.setenv("PROMPT", "You shout.")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CassetteMismatch*model request 1 of agent 'a', dialog 'main', task 'hi' differs*",
                                 "*-*content: You echo.", "*+*content: You shout."])
    monkeypatch.setenv("LLLM_CASSETTE_MODE", "replay")
    tape.unlink()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*echo.yaml' does not exist, so there is nothing to replay. Record it first*"])


def test_an_env_cassette_is_closed_with_the_session_and_fails_it_when_the_replay_stops_early(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(echo=TACTIC)
    pytester.makepyfile(test_session_taped='''
        import os
        from lllm.invokers import override
        from lllm.invokers.scripted import FunctionInvoker
        from echo import Echo, config

        def test_one():
            with override(FunctionInvoker(lambda messages: "answer one")):
                assert Echo(config())("one") == "answer one"

        def test_two():
            with override(FunctionInvoker(lambda messages: "answer two")):
                assert Echo(config())("two") == "answer two"
    ''')
    monkeypatch.setenv("LLLM_CASSETTE", str(pytester.path / "session.yaml"))
    monkeypatch.setenv("LLLM_CASSETTE_MODE", "record")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert "answer two" in (pytester.path / "session.yaml").read_text()  # written when the session ended
    monkeypatch.setenv("LLLM_CASSETTE_MODE", "replay")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "one")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*lllm: $LLLM_CASSETTE: *1 recorded exchange(s) were never replayed:*"])
