"""Bad input from issues 2 and 3 that had no test of its own, seen as a user sees it: a config file whose
prompt path or tactic_type is misspelt, a missing model_name, a package folder without lllm.toml; a package
loaded into a second named Runtime; a rejected answer that must reach the log but not the logged dialog; a
misspelt invoker name; and the public names of lllm-core 0.1 that its users import (they must keep
working without code changes)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import lllm.errors
from lllm import build_tactic, load_config
from lllm.core.config import parse_agent_configs
from lllm.core.runtime import Runtime, find_package_toml
from lllm.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"

LLLM_CORE_01_NAMES = {
    "lllm.core.const": ["ParseError", "Roles", "InvokeCost"],
    "lllm.core.prompt": ["Prompt", "Function", "FunctionCall", "tool", "BaseParser", "DefaultTagParser",
                         "BaseHandler", "DefaultSimpleHandler", "AgentCallSession", "AgentException"],
    "lllm.core.dialog": ["Message", "Dialog"],
    "lllm.invokers": ["build_invoker", "register_invoker"],
    "lllm.invokers.base": ["BaseInvoker", "BaseStreamHandler"],
    "lllm": ["Tactic", "Agent", "Prompt", "LogStore", "load_package", "resolve_config", "build_tactic", "Runtime",
             "get_default_runtime", "load_runtime", "load_prompt", "load_config", "parse_agent_configs",
             "register_tactic_class", "TacticCallSession"],
    "lllm.logging": ["sqlite_store", "LogStore"],
}


@pytest.mark.parametrize("module", sorted(LLLM_CORE_01_NAMES))
def test_the_lllm_core_0_1_names_import(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in LLLM_CORE_01_NAMES[module] if not hasattr(mod, name)]
    assert missing == [], f"{module} lacks {missing}"


def test_the_error_names_are_the_ones_of_the_error_tree() -> None:
    from lllm.core import const, prompt

    assert const.ParseError is prompt.ParseError is lllm.errors.ParseError
    assert prompt.AgentException is lllm.errors.AgentException


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    return path


def test_a_misspelt_prompt_path_in_a_config_file_names_the_file_the_key_and_the_near_name(tmp_path: Path) -> None:
    runtime = Runtime("audit-prompt-path")
    runtime.load_package(EXAMPLE)
    path = write(tmp_path, "agent_configs:\n  - name: classifier\n    model_name: gpt-4o\n"
                           "    system_prompt_path: clasify/system\n")
    with pytest.raises(ConfigError) as info:
        parse_agent_configs(load_config(path, runtime=runtime), ["classifier"], "sentiment", runtime=runtime)
    msg = str(info.value)
    assert msg.startswith(f"{path.resolve()}: agent_configs[0] ('classifier').system_prompt_path")
    assert "no prompt 'clasify/system' is registered. Did you mean 'classify/system'" in msg
    assert info.value.key == "agent_configs[0].system_prompt_path" and info.value.path == str(path.resolve())


def test_an_unknown_tactic_type_in_a_config_file_names_the_file_and_suggests(tmp_path: Path) -> None:
    runtime = Runtime("audit-tactic-type")
    runtime.load_package(EXAMPLE)
    path = write(tmp_path, "tactic_type: sentimnt\nagent_configs:\n  - {name: classifier, model_name: gpt-4o, "
                           "system_prompt_path: classify/system}\n")
    with pytest.raises(ConfigError, match=r"unknown tactic_type 'sentimnt'.*Did you mean 'sentiment'") as info:
        build_tactic(load_config(path, runtime=runtime), runtime=runtime)
    assert str(path.resolve()) in str(info.value)


def test_a_missing_model_name_without_a_near_key_says_where_to_put_it(tmp_path: Path) -> None:
    path = write(tmp_path, "agent_configs:\n  - name: writer\n    system_prompt: You write.\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path.resolve()) in msg and "missing key \"agent_configs[0] ('writer').model_name\"" in msg
    assert "under `global:`" in msg


def test_a_folder_without_lllm_toml_says_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLLM_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"no lllm.toml at .*: pass the folder that holds the package's lllm.toml"):
        find_package_toml(tmp_path)
    monkeypatch.setenv("LLLM_CONFIG", str(tmp_path / "gone" / "lllm.toml"))
    with pytest.raises(ConfigError, match=r"\(from LLLM_CONFIG\): set LLLM_CONFIG to a package's lllm.toml"):
        find_package_toml()


def test_a_package_loaded_into_a_second_runtime_registers_its_tactics_there_too(tmp_path: Path) -> None:
    root = tmp_path / "twice"
    (root / "tactics").mkdir(parents=True)
    (root / "lllm.toml").write_text('[package]\nname = "twice"\nversion = "1.0"\n')
    (root / "tactics" / "t.py").write_text(
        "from lllm import Tactic\n"
        "class Kept(Tactic):\n    name = 'audit_twice_kept'\n    agent_group = []\n"
        "    def call(self, task):\n        return task\n"
        "class Helper(Tactic, register=False):\n    name = 'audit_twice_helper'\n    agent_group = []\n"
        "    def call(self, task):\n        return task\n")
    first, second = Runtime("audit-first"), Runtime("audit-second")
    first.load_package(root)
    second.load_package(root)  # the tactics module is imported already: its classes must register here too
    for runtime in (first, second):
        assert set(runtime.tactics) == {"audit_twice_kept", "twice::audit_twice_kept"}
    assert second.tactics["audit_twice_kept"] is first.tactics["audit_twice_kept"]
    assert build_tactic({"tactic_type": "audit_twice_kept"}, runtime=second)("ping") == "ping"


def test_a_misspelt_invoker_name_suggests_the_near_one() -> None:
    from lllm.invokers import build_invoker

    with pytest.raises(ConfigError, match=r"unknown invoker 'litelm'; known invokers: .*Did you mean 'litellm'\?"):
        build_invoker({"invoker": "litelm"})


def test_a_rejected_answer_stays_out_of_the_logged_dialog_but_is_in_the_logged_agent_call() -> None:
    from lllm import Tactic
    from lllm.logging import sqlite_store

    class Labeller(Tactic, register=False):
        name = "audit_labeller"
        agent_group = ["l"]

        def call(self, task: str, **kwargs) -> str:
            agent = self.agents["l"]
            agent.open("main")
            agent.receive(task)
            return agent.respond().parsed["xml_tags"]["label"][0]

    runtime = Runtime("audit-retries")
    from lllm import Prompt
    from lllm.core.prompt import DefaultTagParser

    runtime.register_prompt(Prompt(path="audit/label", prompt="Label it.",
                                   parser=DefaultTagParser(required_xml_tags=["label"])))
    config = {"invoker": "scripted", "invoker_config": {"steps": ["no tag here", "<label>pos</label>"]},
              "agent_configs": [{"name": "l", "model_name": "gpt-4o", "system_prompt_path": "audit/label"}]}
    store = sqlite_store(":memory:")
    session = Labeller(config, log_store=store, runtime=runtime)("great", return_session=True)
    assert session.delivery == "pos"
    detail = store.load_session(session.session_id)
    (call,) = detail.agent_calls
    assert call.exception_retries == 1 and call.model_calls == 2
    assert call.detail["retries"][0]["content"] == "no tag here" and "missing <label>" in call.detail["retries"][0]["error"]
    (dialog,) = detail.dialogs
    assert [m.content for m in dialog.to_dialog().messages] == ["Label it.", "great", "<label>pos</label>"]
