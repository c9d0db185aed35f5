"""One registry per kind of plug-in (lllm.registry), the sandbox backends and pools built on it, and the Agent's
answer hooks (how the `proxy:` block's jupyter mode plugs in without replacing `respond`)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lllm.core.agent import Agent
from lllm.core.prompt import ToolResult
from lllm.errors import ConfigError, UsageError
from lllm.invokers.scripted import ScriptedInvoker
from lllm.registry import Registry
from lllm.sandbox import FakeSandbox, SandboxPool
from lllm.sandbox.backends import SANDBOX_BACKENDS, backend_options, create_sandbox, register_sandbox_backend
from lllm.sandbox.pool import close_shared_pools, shared_pool

PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class EchoSandbox(FakeSandbox):
    """A backend registered by a test: answers each cell with its code."""

    def __init__(self, *, prefix: str = "", **options: object) -> None:
        super().__init__(lambda code: prefix + code, **options)  # type: ignore[arg-type]  # FakeSandbox's own


# -- the Registry --------------------------------------------------------------------------------------------


def test_a_dotted_path_loads_on_first_use_and_a_bad_one_says_what_failed() -> None:
    reg: Registry[object] = Registry("gadget")
    reg.register("echo", f"{__name__}:EchoSandbox")
    assert "echo" in reg and reg.entry("echo") == f"{__name__}:EchoSandbox"  # nothing imported yet
    assert reg["echo"] is EchoSandbox and reg.entry("echo") is EchoSandbox
    reg.register("broken", "no_such_module_xyz:Thing")
    with pytest.raises(ConfigError, match="gadget 'broken'.*cannot import module 'no_such_module_xyz'"):
        reg["broken"]
    with pytest.raises(ConfigError, match=r"unknown gadget 'ecko'; registered: \['broken', 'echo'\]\. Did you mean 'echo'"):
        reg.lookup("ecko")
    with pytest.raises(ConfigError, match="not a dotted path"):
        reg.register("x", "EchoSandbox")
    with pytest.raises(ConfigError, match="'echo' is already registered"):
        reg.register("echo", FakeSandbox, replace=False)


def test_plug_ins_of_other_distributions_declare_themselves_as_entry_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that is not imported anywhere joins a registry through its metadata alone."""
    (tmp_path / "lllm_plugin_demo.py").write_text(textwrap.dedent("""
        from lllm.sandbox.fake import FakeSandbox

        class PluginSandbox(FakeSandbox):
            pass
        """))
    dist = tmp_path / "lllm_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lllm-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lllm.test_backends]\nplugged = lllm_plugin_demo:PluginSandbox\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("sandbox backend", group="lllm.test_backends")
    reg.register("mine", EchoSandbox)
    assert "lllm_plugin_demo" not in sys.modules
    assert reg.names() == ["mine", "plugged"] and "lllm_plugin_demo" not in sys.modules
    assert reg["plugged"].__name__ == "PluginSandbox"
    reg.register("plugged", EchoSandbox)  # code wins over an entry point
    assert reg["plugged"] is EchoSandbox


def test_lllm_own_plug_ins_from_higher_rooms_are_entry_points() -> None:
    from lllm.core.config import AGENT_EXTENSIONS
    from lllm.core.runtime import get_default_runtime
    from lllm.proxies import PROXY_REGISTRY

    assert {"proxy", "computer_use"} <= set(AGENT_EXTENSIONS.names())
    assert AGENT_EXTENSIONS.entry("computer_use") in ("lllm.tools.cua:attach", AGENT_EXTENSIONS["computer_use"])
    assert {"fmp", "fred", "exa"} <= set(PROXY_REGISTRY["live"].names()) & set(PROXY_REGISTRY["offline"].names())
    assert get_default_runtime().get_tactic("computer_use").__name__ == "ComputerUseTactic"


# -- sandbox backends and pools ------------------------------------------------------------------------------


def test_backends_register_by_name_and_options_are_checked() -> None:
    assert {"docker", "local", "fake"} <= set(SANDBOX_BACKENDS.names())
    register_sandbox_backend("echo_test", f"{__name__}:EchoSandbox")
    try:
        assert "prefix" in backend_options("echo_test")
        with create_sandbox("echo_test", prefix="> ", agent="a") as sb:
            assert sb.run_cell("hi").stdout == "> hi" and sb.agent == "a"
        with pytest.raises(UsageError, match="sandbox backend 'local' takes no option 'image'"):
            create_sandbox("local", image="x")
        with pytest.raises(ConfigError, match="unknown sandbox backend 'vm'"):
            create_sandbox("vm")
    finally:
        del SANDBOX_BACKENDS["echo_test"]


def test_pool_acquire_sets_per_use_options_and_shared_pools_are_cached() -> None:
    register_sandbox_backend("echo_test", f"{__name__}:EchoSandbox")
    try:
        records: list = []
        with SandboxPool(size=1, backend="echo_test", prefix="$ ", reap=False) as pool:
            sb = pool.acquire(cell_timeout=5.0, max_output_chars=300, tracer=records.append, agent="analyst")
            assert (sb.cell_timeout, sb.max_output_chars, sb.agent) == (5.0, 300, "analyst")
            assert sb.run_cell("x").stdout == "$ x" and records[0].agent == "analyst"
            pool.release(sb)
            with pytest.raises(UsageError, match="got 'image', which is not a per-use option"):
                pool.acquire(image="x")
            with pytest.raises(UsageError, match="max_output_chars=5 is too small"):
                pool.acquire(max_output_chars=5)
        with pytest.raises(UsageError, match="takes no option 'nope'"):
            SandboxPool(size=1, backend="fake", nope=1)
        one = shared_pool("echo_test", size=1, prefix="a")
        assert shared_pool("echo_test", size=1, prefix="a") is one
        assert shared_pool("echo_test", size=1, prefix="b") is not one
    finally:
        close_shared_pools()
        del SANDBOX_BACKENDS["echo_test"]


# -- answer hooks -----------------------------------------------------------------------------------------------


def _agent(steps: list, **kwargs: object) -> tuple[Agent, ScriptedInvoker]:
    invoker = ScriptedInvoker(steps)
    agent = Agent(name="a", system_prompt="Be brief.", model="m", llm_invoker=invoker, **kwargs)  # type: ignore[arg-type]
    agent.open("main")
    agent.receive("go")
    return agent, invoker


def test_an_answer_hook_answers_back_until_an_answer_stands() -> None:
    agent, invoker = _agent(["<run>1+1</run>", "<run>2+2</run>", "four"])
    seen = []

    def hook(message):  # type: ignore[no-untyped-def]
        seen.append(message.content)
        if "<run>" not in (message.content or ""):
            return None
        return ToolResult(content="ran it", images=[PNG_1PX]) if len(seen) == 1 else "ran it again"

    agent.add_answer_hook(hook)
    assert agent.respond().content == "four"
    invoker.assert_complete()
    users = [m for m in agent.current_dialog.messages if m.role == "user"]
    assert [m.content for m in users] == ["go", "ran it", "ran it again"] and len(users[1].images) == 1
    assert seen == ["<run>1+1</run>", "<run>2+2</run>", "four"]
    with pytest.raises(UsageError, match="takes a callable"):
        agent.add_answer_hook("nope")  # type: ignore[arg-type]


def test_answer_hooks_stop_after_max_interrupt_steps_and_follow_the_alias() -> None:
    agent, invoker = _agent(["a", "b", "c"], max_interrupt_steps=2)
    agent.add_answer_hook(lambda message: "again")
    agent.fork("main", "side")
    agent.switch("main")
    assert agent.respond(alias="side").content == "c"  # 1 answer + 2 answered back, then it stands
    invoker.assert_complete()
    assert [m.content for m in agent.dialogs["side"].messages if m.role == "user"] == ["go", "again", "again"]
    assert [m.role for m in agent.dialogs["main"].messages] == ["system", "user"]
