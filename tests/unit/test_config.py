"""Agent configs: YAML loading, `base:` inheritance (dicts merge, lists replace, cycles fail), validation
errors that name the file and key with near names, and `parse_agent_configs`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lllm import Prompt
from lllm.core.config import AGENT_EXTENSIONS, AgentBuildContext, deep_merge, load_config, parse_agent_configs
from lllm.core.runtime import Runtime
from lllm.errors import ConfigError


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_deep_merge_merges_dicts_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": [1], "c": 1}
    over = {"a": {"y": [3], "z": 2}, "b": [9, 9]}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [3], "z": 2}, "b": [9, 9], "c": 1}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": [1], "c": 1}  # inputs untouched


def test_base_chain_by_file_and_by_name(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", "global: {model_name: gpt-4o, model_args: {temperature: 0, top_p: 1}}\n"
                                 "agent_configs: [{name: a, system_prompt: hi}]\ntags: [x, y]\n")
    write(tmp_path, "mid.yaml", "base: root\nglobal: {model_args: {temperature: 0.5}}\ntags: [z]\n")
    leaf = write(tmp_path, "sub/leaf.yaml", "base: ../mid.yaml\ntactic_type: t\n")
    config = load_config(leaf)
    assert config["global"] == {"model_name": "gpt-4o", "model_args": {"temperature": 0.5, "top_p": 1}}
    assert config["tags"] == ["z"]  # lists replace
    assert config["tactic_type"] == "t" and "base" not in config
    assert config["_config_path"] == str(leaf.resolve())


def test_base_by_registered_name(tmp_path: Path) -> None:
    runtime = Runtime("t")
    shared = write(tmp_path / "elsewhere", "shared.yaml", "global: {model_name: m}\n")
    runtime.register_config("team/shared", shared)
    leaf = write(tmp_path, "leaf.yaml", "base: team/shared\nagent_configs: [{name: a, system_prompt: x}]\n")
    assert load_config(leaf, runtime=runtime)["global"] == {"model_name": "m"}


def test_base_cycle_is_an_error_naming_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "base: b\n")
    write(tmp_path, "b.yaml", "base: c\n")
    write(tmp_path, "c.yaml", "base: a\n")
    with pytest.raises(ConfigError, match=r"cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_suggests_near_names(tmp_path: Path) -> None:
    write(tmp_path, "defaults.yaml", "global: {}\n")
    leaf = write(tmp_path, "leaf.yaml", "base: default\n")
    with pytest.raises(ConfigError, match=r"base config 'default' not found.*Did you mean 'defaults'") as info:
        load_config(leaf)
    assert info.value.key == "base" and str(leaf.resolve()) in str(info.value)


def test_missing_model_name_names_file_key_and_a_misspelling(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "agent_configs:\n  - name: writer\n    model_nme: gpt-4o\n    system_prompt: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path.resolve()) in msg
    assert "missing key \"agent_configs[0] ('writer').model_name\"" in msg
    assert "Is it misspelt as 'model_nme'?" in msg
    assert "unknown key \"agent_configs[0] ('writer').model_nme\". Did you mean 'model_name'" in msg


def test_unknown_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "agent_configs:\n  - {name: w, model_name: m, sytem_prompt: x}\n")
    with pytest.raises(ConfigError, match=r"unknown key .*\.sytem_prompt.*Did you mean 'system_prompt'"):
        load_config(path)


def test_wrong_type_and_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad_type = write(tmp_path, "t.yaml", "agent_configs: [{name: w, model_name: m, system_prompt: x, "
                                         "max_exception_retry: many}]\n")
    with pytest.raises(ConfigError, match=r"max_exception_retry.*'many'"):
        load_config(bad_type)
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        load_config(write(tmp_path, "y.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match=r"mapping at its top level"):
        load_config(write(tmp_path, "l.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_no_system_prompt_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neither 'system_prompt'.*nor 'system_prompt_path'"):
        load_config(write(tmp_path, "x.yaml", "agent_configs: [{name: w, model_name: m}]\n"))


def test_parse_agent_configs_merges_global_and_resolves_prompts() -> None:
    runtime = Runtime("t")
    prompt = Prompt(path="team/writer", prompt="You write.")
    runtime.register_prompt(prompt)
    config = {
        "global": {"model_name": "gpt-4o", "model_args": {"temperature": 0}, "max_exception_retry": 1},
        "agent_configs": [
            {"name": "writer", "system_prompt_path": "team/writer", "model_args": {"max_tokens": 5}},
            {"name": "critic", "system_prompt": "You criticise {topic}.", "model_name": "other", "api_type": "response"},
        ],
    }
    specs = parse_agent_configs(config, ["writer", "critic"], "duo", runtime=runtime)
    assert specs["writer"].system_prompt is prompt
    assert specs["writer"].model_args == {"temperature": 0, "max_tokens": 5}
    assert specs["writer"].max_exception_retry == 1 and specs["writer"].max_interrupt_steps == 5
    assert specs["critic"].model == "other" and specs["critic"].api_type == "response"
    assert specs["critic"].system_prompt.path == "duo/critic/system"
    assert specs["critic"].system_prompt.variables == frozenset({"topic"})


def test_parse_agent_configs_errors() -> None:
    runtime = Runtime("t")
    runtime.register_prompt(Prompt(path="team/writer", prompt="x"))
    base = {"global": {"model_name": "m"}}
    with pytest.raises(ConfigError, match=r"needs an agent 'writer'.*Did you mean 'writr'"):
        parse_agent_configs({**base, "agent_configs": [{"name": "writr", "system_prompt": "x"}]}, ["writer"], "t",
                            runtime=runtime)
    with pytest.raises(ConfigError, match=r"no prompt 'team/writter' is registered. Did you mean 'team/writer'") as info:
        parse_agent_configs({**base, "agent_configs": [{"name": "w", "system_prompt_path": "team/writter"}]}, ["w"],
                            "t", runtime=runtime)
    assert info.value.key == "agent_configs[0].system_prompt_path"
    with pytest.raises(ConfigError, match=r"used twice"):
        parse_agent_configs({**base, "agent_configs": [{"name": "w", "system_prompt": "x"}] * 2}, ["w"], "t",
                            runtime=runtime)


def test_extension_blocks_are_carried_to_their_attach(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def attach(agent, block, ctx):  # the extension seam: attach(agent, block, ctx)
        calls.append((agent.name, block, ctx.session_id, ctx.agent_name))
        agent.add_cleanup(lambda: calls.append("cleaned"))

    monkeypatch.setitem(AGENT_EXTENSIONS, "proxy", f"{__name__}:_attach_for_test")
    monkeypatch.setitem(globals(), "_attach_for_test", attach)
    config = {"agent_configs": [{"name": "w", "model_name": "m", "system_prompt": "x",
                                 "proxy": {"activate_proxies": ["fmp"], "exec_env": "interpreter"}}]}
    spec = parse_agent_configs(config, ["w"], "t", runtime=Runtime("t"))["w"]
    assert spec.extensions == {"proxy": {"activate_proxies": ["fmp"], "exec_env": "interpreter"}}
    from lllm.invokers import build_invoker

    ctx = AgentBuildContext(session_id="sess", tracer=lambda r: None, agent_name="w")
    agent = spec.build(build_invoker({"invoker": "scripted", "steps": []}), ctx=ctx)
    assert calls == [("w", {"activate_proxies": ["fmp"], "exec_env": "interpreter"}, "sess", "w")]
    agent.shutdown()
    assert calls[-1] == "cleaned"


def test_an_extension_that_does_not_import_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(AGENT_EXTENSIONS, "gadget", "lllm.no_such_module:attach")
    config = {"agent_configs": [{"name": "w", "model_name": "m", "system_prompt": "x", "gadget": {"on": True}}]}
    spec = parse_agent_configs(config, ["w"], "t", runtime=Runtime("t"))["w"]
    from lllm.invokers import build_invoker

    with pytest.raises(ConfigError, match=r"'gadget' block needs 'lllm.no_such_module:attach'"):
        spec.build(build_invoker({"invoker": "scripted"}),
                   ctx=AgentBuildContext(session_id="s", tracer=lambda r: None))


def test_workdir_is_per_session_and_created_on_use(tmp_path: Path) -> None:
    ctx = AgentBuildContext(session_id="abc", tracer=lambda r: None, workdir_base=tmp_path)
    assert not (tmp_path / "abc").exists()
    assert ctx.workdir == tmp_path / "abc" and ctx.workdir.is_dir()


def test_an_unknown_key_in_global_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "global: {model_name: m, temprature: 0}\nagent_configs: [{name: w, system_prompt: x}]\n")
    with pytest.raises(ConfigError, match=r"'temprature' comes from 'global'"):
        load_config(path)


def test_invoker_errors_name_the_config_file(tmp_path: Path) -> None:
    from lllm import Tactic

    class One(Tactic, register=False):
        name = "unit_config_one"
        agent_group = ["w"]

    path = write(tmp_path, "inv.yaml", "invoker: scripted\ninvoker_config: {stream_chunk_chars: 0}\n"
                                       "agent_configs: [{name: w, model_name: m, system_prompt: x}]\n")
    with pytest.raises(ConfigError, match=r"inv.yaml: stream_chunk_chars must be") as info:
        One(load_config(path), runtime=Runtime("inv"))
    assert info.value.key == "invoker_config.stream_chunk_chars"
    with pytest.raises(ConfigError, match=r"<config dict>: unknown invoker 'nope'"):
        One({"invoker": "nope", "agent_configs": [{"name": "w", "model_name": "m", "system_prompt": "x"}]},
            runtime=Runtime("inv"))
