"""Tactics: registration by definition, fresh agents per call, one shared invoker, the call session and its
records in the log store, errors with tracebacks, shutdown on every path, sub-tactics folded into the parent."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lllm import Tactic, TacticCallSession
from lllm.core.runtime import Runtime, get_default_runtime
from lllm.errors import ConfigError, UsageError
from lllm.invokers import ScriptedInvoker
from lllm.logging import sqlite_store


def agent_config(*names: str, invoker: dict | None = None) -> dict:
    return {
        # a simulated price, so that the cost sums below are not sums of zeros (the scripted model is free by default)
        **(invoker or {"invoker": "scripted", "invoker_config": {"responder": lambda m: f"echo: {m[-1]['content']}",
                                                                 "input_price": 2.5, "output_price": 10.0}}),
        "global": {"model_name": "gpt-4o"},
        "agent_configs": [{"name": n, "system_prompt": f"You are {n}."} for n in names],
    }


class Echo(Tactic):
    name = "unit_echo"
    agent_group = ["a"]

    def call(self, task: str, **kwargs) -> str:
        a = self.agents["a"]
        a.open("main")
        a.receive(task)
        return a.respond().content


def test_defining_a_subclass_registers_it_and_inheriting_does_not() -> None:
    assert get_default_runtime().tactics["unit_echo"] is Echo

    class Louder(Echo):  # no name of its own: not registered again
        pass

    assert get_default_runtime().tactics["unit_echo"] is Echo
    with pytest.raises(ConfigError, match=r"a tactic named 'unit_echo' is already registered"):
        class Impostor(Tactic):  # noqa: F841
            name = "unit_echo"


def test_a_tactic_without_a_name_cannot_be_built() -> None:
    class Nameless(Tactic):
        agent_group = []

    with pytest.raises(UsageError, match="has no `name`"):
        Nameless({})


def test_one_call_and_its_session() -> None:
    tactic = Echo(agent_config("a"))
    session = tactic("hello", return_session=True)
    assert isinstance(session, TacticCallSession)
    assert session.delivery == "echo: hello" and session.state == "ok"
    assert [r.kind for r in session.records] == ["model_call", "agent_call"]  # in the order they were reported
    assert all(r.session_id == session.session_id for r in session.records)
    assert session.agent_call_count == 1 and session.total_cost.cost > 0
    assert session.summary()["state"] == "ok"
    assert tactic("again") == "echo: again"


def test_each_call_gets_fresh_agents_and_concurrent_calls_share_nothing() -> None:
    seen: list[object] = []
    barrier = threading.Barrier(4)

    class Parallel(Tactic, register=False):
        name = "unit_parallel"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            a = self.agents["a"]
            seen.append(a)
            a.open("main")
            a.receive(task)
            barrier.wait(timeout=10)  # all four calls are inside call() at once
            a.respond()
            return f"{len(a.current_dialog.messages)} messages"

    tactic = Parallel(agent_config("a"))
    results = tactic.bcall(["w", "x", "y", "z"], max_workers=4)
    assert results == ["3 messages"] * 4
    assert len({id(a) for a in seen}) == 4
    assert tactic.agents == {}  # the tactic itself holds no per-call state


def test_the_invoker_is_built_once_and_shared_by_agents_and_calls() -> None:
    class Two(Tactic, register=False):
        name = "unit_two"
        agent_group = ["a", "b"]

        def call(self, task: str, **kwargs) -> tuple:
            return self.agents["a"].llm_invoker, self.agents["b"].llm_invoker

    tactic = Two(agent_config("a", "b"))
    first = tactic("x")
    second = tactic("y")
    assert first[0] is first[1] is second[0] is tactic.llm_invoker


def test_an_agent_can_have_its_own_invoker() -> None:
    config = agent_config("a", "b")
    config["agent_configs"][1]["invoker_config"] = {"steps": ["from b's own script"]}

    class Two(Tactic, register=False):
        name = "unit_two_invokers"
        agent_group = ["a", "b"]

        def call(self, task: str, **kwargs) -> str:
            b = self.agents["b"]
            b.open("m")
            b.receive(task)
            return b.respond().content

    tactic = Two(config)
    assert tactic("x") == "from b's own script"
    assert isinstance(tactic._agent_invokers["b"], ScriptedInvoker)
    assert tactic._agent_invokers["b"] is not tactic.llm_invoker


def test_sessions_and_records_reach_the_log_store() -> None:
    store = sqlite_store(":memory:")
    tactic = Echo(agent_config("a"), log_store=store, tags={"team": "core"})
    session = tactic("hello", tags={"env": "test"}, metadata={"note": 1}, return_session=True)
    row = store.get_session(session.session_id)
    assert row.state == "ok" and row.tactic == "unit_echo" and row.result == "echo: hello"
    assert row.tags == {"team": "core", "env": "test"} and row.metadata == {"note": 1}
    assert row.cost == pytest.approx(session.total_cost.cost) and row.cost > 0
    assert row.model_calls == 1 and row.agent_calls == 1 and row.task == "hello"
    detail = store.load_session(session.session_id)
    assert {r.kind for r in detail.records} == {"agent_call", "model_call"}
    (dialog,) = detail.dialogs
    assert dialog.agent == "a" and dialog.alias == "main"
    assert [m.role for m in dialog.to_dialog().messages] == ["system", "user", "assistant"]


def test_a_failing_call_is_recorded_with_its_traceback_and_agents_are_shut_down() -> None:
    store = sqlite_store(":memory:")
    cleaned: list[str] = []

    class Failing(Tactic, register=False):
        name = "unit_failing"
        agent_group = ["a", "b"]

        def call(self, task: str, **kwargs) -> str:
            for name, agent in self.agents.items():
                agent.add_cleanup(lambda name=name: cleaned.append(name))
            a = self.agents["a"]
            a.open("main")
            a.receive(task)
            a.respond()
            raise ValueError(f"cannot handle {task!r}")

    tactic = Failing(agent_config("a", "b"), log_store=store)
    with pytest.raises(ValueError, match="cannot handle 'x'"):
        tactic("x")
    assert sorted(cleaned) == ["a", "b"]
    (row,) = store.list_sessions()
    assert row.state == "error" and row.error == "ValueError: cannot handle 'x'"
    assert "Traceback" in row.traceback and "raise ValueError" in row.traceback
    assert row.model_calls == 1 and row.result is None
    assert tactic.last_session.state == "error" and tactic.last_session.exception is not None


def test_shutdown_runs_after_a_successful_call_and_cleanup_errors_are_kept() -> None:
    store = sqlite_store(":memory:")

    class Leaky(Tactic, register=False):
        name = "unit_leaky"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            def broken() -> None:
                raise OSError("container already gone")

            self.agents["a"].add_cleanup(broken)
            return "done"

    tactic = Leaky(agent_config("a"), log_store=store)
    assert tactic("x") == "done"  # a failing cleanup does not lose the result
    row = store.list_sessions()[0]
    assert row.state == "ok"
    assert row.metadata["cleanup_errors"] == ["a: OSError: container already gone"]


def test_closed_dialogs_are_kept_in_the_log() -> None:
    store = sqlite_store(":memory:")

    class Steps(Tactic, register=False):
        name = "unit_steps"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            a = self.agents["a"]
            for i in range(2):
                a.open(f"step_{i}")
                a.receive(f"do {i}")
                a.respond()
                a.close(f"step_{i}")
            return "ok"

    session = Steps(agent_config("a"), log_store=store)("x", return_session=True)
    aliases = sorted(d.alias for d in store.load_session(session.session_id).dialogs)
    assert aliases == ["step_0", "step_1"]


def test_sub_tactic_calls_fold_into_the_parent_session_and_cost() -> None:
    store = sqlite_store(":memory:")
    inner = Echo(agent_config("a"))  # no store of its own: it writes to its parent's

    class Outer(Tactic, register=False):
        name = "unit_outer"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            a = self.agents["a"]
            a.open("main")
            a.receive(task)
            mine = a.respond().content
            return mine + " | " + inner(task) + " | " + inner(task + "!")

    session = Outer(agent_config("a"), log_store=store, tags={"t": 1})("hi", return_session=True)
    assert session.delivery == "echo: hi | echo: hi | echo: hi!"
    assert session.sub_tactic_call_count == 2
    children = session.sub_tactic_sessions["unit_echo"]
    assert all(c.parent is session for c in children)
    assert session.total_cost.cost == pytest.approx(session.agent_cost.cost + sum(c.total_cost.cost for c in children))
    top = store.get_session(session.session_id)
    assert top.cost == pytest.approx(session.total_cost.cost) and top.model_calls == 3
    assert [s.id for s in store.list_sessions()] == [session.session_id]  # children are not top-level rows
    detail = store.load_session(session.session_id)
    assert len(detail.children) == 2 and all(c.parent_id == session.session_id for c in detail.children)
    assert all(c.tags == {"t": 1} for c in detail.children)


def test_acall_runs_the_same_call_without_blocking_the_loop() -> None:
    tactic = Echo(agent_config("a"))

    async def main() -> list[str]:
        return list(await asyncio.gather(tactic.acall("a"), tactic.acall("b")))

    assert asyncio.run(main()) == ["echo: a", "echo: b"]


def test_build_errors_name_the_missing_agent_and_prompt() -> None:
    with pytest.raises(ConfigError, match=r"needs an agent 'a' in agent_configs"):
        Echo(agent_config("b"))
    config = agent_config("a")
    config["agent_configs"][0] = {"name": "a", "system_prompt_path": "nowhere/system"}
    with pytest.raises(ConfigError, match=r"no prompt 'nowhere/system' is registered"):
        Echo(config, runtime=Runtime("empty"))
    with pytest.raises(ConfigError, match=r"unknown invoker 'scriptd'"):
        Echo(agent_config("a", invoker={"invoker": "scriptd"}))


def test_a_store_that_cannot_write_does_not_hide_the_task_error() -> None:
    store = sqlite_store(":memory:")

    class Boom(Tactic, register=False):
        name = "unit_boom"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            store.close()  # the log goes away mid-call
            raise KeyError("the real problem")

    with pytest.raises(KeyError, match="the real problem") as info:
        Boom(agent_config("a"), log_store=store)("x")
    assert any("could not record this failure" in note for note in info.value.__notes__)

    ok_store = sqlite_store(":memory:")

    class Quiet(Tactic, register=False):
        name = "unit_quiet"
        agent_group = ["a"]

        def call(self, task: str, **kwargs) -> str:
            ok_store.close()
            return "fine"

    with pytest.raises(UsageError, match="closed"):  # a result that could not be recorded is not silent
        Quiet(agent_config("a"), log_store=ok_store)("x")


def test_a_batch_inside_a_call_folds_into_the_call() -> None:
    store = sqlite_store(":memory:")
    inner = Echo(agent_config("a"))

    class Fanout(Tactic, register=False):
        name = "unit_fanout"
        agent_group = []

        def call(self, task: str, **kwargs) -> list:
            results = inner.bcall([f"{task}{i}" for i in range(3)], max_workers=3)
            streamed = sorted(r for _, r in inner.ccall(["s0", "s1"], max_workers=2))
            return list(results) + streamed

    session = Fanout({}, log_store=store, tags={"job": "fan"})("t", return_session=True)
    assert session.delivery == ["echo: t0", "echo: t1", "echo: t2", "echo: s0", "echo: s1"]
    assert session.sub_tactic_call_count == 5
    top = store.get_session(session.session_id)
    assert top.model_calls == 5 and top.cost == pytest.approx(session.total_cost.cost) and top.cost > 0
    assert [s.id for s in store.list_sessions()] == [session.session_id]
    (by_model,) = store.cost_summary(group_by="model", tags={"job": "fan"})
    assert by_model.group == "scripted" and by_model.sessions == 5 and by_model.cost == pytest.approx(top.cost)


def test_a_config_name_or_a_wrong_type(tmp_path) -> None:
    runtime = Runtime("by-name")
    path = tmp_path / "echo.yaml"
    path.write_text("invoker: scripted\ninvoker_config: {steps: [hi]}\n"
                    "agent_configs: [{name: a, model_name: m, system_prompt: x}]\n")
    runtime.register_config("echo", path)
    assert Echo("echo", runtime=runtime)("x") == "hi"
    with pytest.raises(UsageError, match="takes a config dict"):
        Echo(["not", "a", "config"])


def test_a_builtin_tactic_type_loads_on_first_use() -> None:
    from lllm.core.runtime import Runtime

    cls = Runtime(name="fresh-for-builtin").get_tactic("computer_use")
    assert cls.__module__ == "lllm.tools.cua.tactic"
