"""lllm-core's runtime surface, as its docs (core/runtime.md, core/config.md, Lessons 3 and 6) describe it:
`resolve_config` from `lllm.core.config`, discovery without an explicit `load_package` (`$LLLM_CONFIG`, an
lllm.toml above the working folder, installed packages; `LLLM_AUTO_INIT=0`), keys written `pkg:key`, `.md`
prompt files, `get_runtime`, `Runtime.keys/has/get_node`, `load_tactic/load_proxy/load_resource`, registering
with `namespace=`, and stable tactic paths in the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lllm.core.runtime import Runtime, get_default_runtime, get_runtime, load_resource, load_runtime
from lllm.errors import ConfigError
from lllm.logging import sqlite_store
from test_runtime_discovery import make_package

ECHO_TACTIC = """
from lllm import Tactic
class Echo(Tactic):
    name = "echo"
    agent_group = ["a"]
    def call(self, task):
        a = self.agents["a"]
        a.open("main", prompt_args={"name": "Ada"})
        a.receive(task)
        return a.respond().content
"""
DEFAULT_YAML = ("tactic_type: echo\ninvoker: scripted\ninvoker_config: {steps: [done]}\n"
                "agent_configs: [{name: a, model_name: m, system_prompt_path: greeter/system}]\n")


def project(root: Path, name: str = "my_project") -> Path:
    return make_package(root, name, prompts={"greeter.py": "from lllm import Prompt\n"
                                                           "g = Prompt(path='greeter/system', prompt='Hi {name}')\n"},
                        configs={"default.yaml": DEFAULT_YAML}, tactics={"echo.py": ECHO_TACTIC})


def python(code: str, *, cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("LLLM_CONFIG", "LLLM_AUTO_INIT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         env={**clean, "HOME": str(cwd), **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# -- discovery without load_package -------------------------------------------------------------------------


def test_lllm_config_is_loaded_on_first_lookup(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    code = ("import lllm; rt = lllm.get_default_runtime(); before = len(rt.packages)\n"
            "from lllm.core.config import resolve_config\n"
            "cfg = resolve_config('default')\n"
            "print(before, len(rt.packages), cfg['tactic_type'], lllm.load_prompt('greeter/system').path)")
    assert python(code, cwd=tmp_path, LLLM_CONFIG=str(root / "lllm.toml")).split() == ["0", "1", "echo",
                                                                                       "greeter/system"]


def test_an_lllm_toml_above_the_working_folder_is_found_and_auto_init_0_turns_it_off(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    (root / "sub").mkdir()
    code = "from lllm import build_tactic, resolve_config\nprint(build_tactic(resolve_config('default'))('x'))"
    assert python(code, cwd=root / "sub") == "done"
    off = "import lllm\ntry:\n    lllm.resolve_config('default')\nexcept lllm.ConfigError as e:\n    print('off')"
    assert python(off, cwd=root / "sub", LLLM_AUTO_INIT="0") == "off"


def test_explicit_loading_means_no_discovery(tmp_path: Path) -> None:
    project(tmp_path / "here", "here")
    other = project(tmp_path / "other", "other")
    code = (f"import lllm; lllm.load_package({str(other)!r}); rt = lllm.get_default_runtime()\n"
            "print(sorted(p.name for p in rt.packages.values()))")
    assert python(code, cwd=tmp_path / "here") == "['other']"


def test_installed_packages_are_discovered_beside_the_project_and_for_the_user(tmp_path: Path) -> None:
    root = project(tmp_path / "proj")
    make_package(root / "lllm_packages" / "shared", "shared",
                 prompts={"s.py": "from lllm import Prompt\np = Prompt(path='shared/hello', prompt='hello')\n"})
    make_package(tmp_path / ".lllm" / "packages" / "mine", "mine",
                 prompts={"m.py": "from lllm import Prompt\np = Prompt(path='greeter/system', prompt='theirs')\n"})
    code = ("import lllm\nprint(lllm.load_prompt('shared:shared/hello').prompt, "
            "lllm.load_prompt('greeter/system').prompt, lllm.load_prompt('mine::greeter/system').prompt)")
    # the project's own greeter/system wins the bare key; the user's package keeps its qualified one
    assert python(code, cwd=root, HOME=str(tmp_path)) == "hello Hi {name} theirs"


# -- keys as lllm-core writes them, .md prompts ----------------------------------------------------------------


def test_lllm_core_key_forms_resolve(tmp_path: Path) -> None:
    rt = Runtime("forms")
    rt.load_package(project(tmp_path / "p"))
    prompt = rt.get_prompt("greeter/system")
    for form in ("my_project::greeter/system", "my_project:greeter/system", "my_project.prompts:greeter/system",
                 "prompts:greeter/system"):
        assert rt.get_prompt(form) is prompt, form
    assert rt.get_config("my_project:default")["tactic_type"] == "echo"
    assert rt.get_tactic("my_project:echo").name == "echo"
    assert rt.find_prompt("my_project.configs:greeter/system") is None  # a section of another kind
    with pytest.raises(ConfigError, match="no prompt 'nobody:greeter/system'"):
        rt.get_prompt("nobody:greeter/system")


def test_md_files_in_prompts_are_prompts(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / "prompts" / "roles").mkdir()
    (root / "prompts" / "roles" / "critic.md").write_text("You are a critic of {topic}.\nBe brief.\n")
    rt = Runtime("md")
    rt.load_package(root)
    critic = rt.get_prompt("roles/critic")
    assert critic.path == "roles/critic" and critic.variables == {"topic"}
    assert critic(topic="films") == "You are a critic of films.\nBe brief.\n"
    assert rt.get_prompt("my_project:roles/critic") is critic
    (root / "prompts" / "bad.md").write_text("a {broken brace\n")
    with pytest.raises(ConfigError, match=r"bad.md: Prompt 'bad': the template is not valid"):
        Runtime("md-bad").load_package(root)


# -- runtimes, nodes, loaders -------------------------------------------------------------------------------


def test_get_runtime_gives_the_default_or_a_loaded_one(tmp_path: Path) -> None:
    assert get_runtime() is get_default_runtime() is get_runtime("default")
    fresh = get_runtime("never")  # created empty on first use, as the batch executors expect
    assert fresh is get_runtime("never") and not fresh.keys()
    rt = load_runtime(project(tmp_path / "p"), name="compat-exp")
    assert get_runtime("compat-exp") is rt


def test_a_path_without_lllm_toml_loads_nothing_with_a_warning_that_lookups_repeat(tmp_path: Path) -> None:
    # core/runtime.md and Lesson 6 name runtimes after packages the reader has not written yet: lllm-core
    # loads nothing and goes on; the typo stays visible here in the warning and in the next "not found".
    with pytest.warns(RuntimeWarning, match=r"runtime 'compat-typo': no lllm.toml at .*experiment_a.*nothing was "
                                            r"loaded from it .*strict=True"):
        rt = load_runtime(tmp_path / "experiment_a" / "lllm.toml", name="compat-typo")
    assert get_runtime("compat-typo") is rt and not rt.packages
    with pytest.raises(ConfigError, match=r"load_package\('.*experiment_a.*lllm.toml'\) loaded nothing: no "
                                          r"lllm.toml there"):
        rt.get_prompt("greeter/system")
    with pytest.warns(RuntimeWarning, match="no lllm.toml at"):
        assert rt.load_package(tmp_path) is None  # a folder without one: the same
    rt.load_package(project(tmp_path / "p"))  # a later real package loads normally
    assert rt.get_prompt("greeter/system") is not None


def test_strict_loading_keeps_a_missing_lllm_toml_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no lllm.toml at .*: pass the folder that holds the package's lllm.toml"):
        load_runtime(tmp_path / "nowhere", name="compat-strict", strict=True)


def test_lllm_run_keeps_a_missing_package_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lllm.cli import main
    assert main(["run", "default", "--package", str(tmp_path / "nowhere"), "--task", "x"]) == 1
    assert "lllm: error: no lllm.toml at" in capsys.readouterr().err  # named on purpose: strict, no warning


def test_keys_has_and_get_node(tmp_path: Path) -> None:
    rt = Runtime("nodes")
    rt.load_package(project(tmp_path / "p"))
    from lllm import Prompt

    rt.register_prompt(Prompt(path="loose", prompt="x"))
    assert rt.keys("prompt") == ["loose", "my_project::greeter/system"]
    assert "my_project::echo" in rt.keys() and "my_project::default" in rt.keys("config")
    assert rt.has("my_project:greeter/system") and rt.has("echo") and not rt.has("nope")
    node = rt.get_node("echo", resource_type="tactic")
    assert (node.key, node.namespace, node.package, node.qualified_key) == (
        "echo", "my_project.tactics", "my_project", "my_project::echo")
    assert node.value.name == "echo"
    config = rt.get_node("my_project.configs:default")
    assert config.resource_type == "config" and config.value["tactic_type"] == "echo"
    assert rt.get_node("loose").namespace == ""
    with pytest.raises(ConfigError, match="unknown resource type 'widget'"):
        rt.keys("widget")


def test_load_resource_needs_a_section(tmp_path: Path) -> None:
    import lllm

    rt = Runtime("res")
    rt.load_package(project(tmp_path / "p"))
    assert load_resource("my_project.prompts:greeter/system", runtime=rt).path == "greeter/system"
    assert load_resource("configs:default", runtime=rt)["tactic_type"] == "echo"
    assert lllm.load_tactic("my_project::echo", runtime=rt).name == "echo"
    with pytest.raises(ConfigError, match="load_resource takes"):
        load_resource("greeter/system", runtime=rt)
    assert lllm.load_config("default", runtime=rt)["tactic_type"] == "echo"  # a name, not a file
    assert lllm.load_config(str(tmp_path / "p" / "configs" / "default.yaml"))["tactic_type"] == "echo"


def test_register_with_a_namespace_and_configs_as_data() -> None:
    from lllm import Prompt

    rt = Runtime("ns")
    p = Prompt(path="test/greeting", prompt="Hello {name}!")
    rt.register_prompt(p, namespace="my_pkg.prompts")
    assert rt.get_prompt("test/greeting") is p and rt.get_prompt("my_pkg:test/greeting") is p
    rt.register_config("fast", {"global": {"model_name": "gpt-4o-mini"}}, namespace="my_pkg")
    got = rt.get_config("my_pkg::fast")
    got["global"]["model_name"] = "changed"
    assert rt.get_config("fast")["global"]["model_name"] == "gpt-4o-mini"  # a fresh copy each time
    with pytest.raises(ConfigError, match="already registered"):
        rt.register_prompt(Prompt(path="test/greeting", prompt="other"), overwrite=False)


def test_a_tactics_file_imported_again_as_a_module_does_not_clash(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "twice")
    code = (f"import sys, lllm; sys.path.insert(0, {str(root)!r}); lllm.load_package({str(root)!r})\n"
            "from tactics.echo import Echo\nprint(Echo.__module__, lllm.load_tactic('twice::echo').name)")
    assert python(code, cwd=tmp_path) == "tactics.echo echo"


# -- stable tactic paths in the log ------------------------------------------------------------------------------


def test_the_log_resolves_tactic_paths_through_its_runtime(tmp_path: Path) -> None:
    rt = Runtime("paths")
    rt.load_package(project(tmp_path / "p"))
    store = sqlite_store(tmp_path / "runs.db", runtime=rt)
    tactic_cls = rt.get_tactic("echo")
    tactic_cls(rt.get_config("default"), log_store=store, runtime=rt)("task")
    (row,) = store.list_sessions()
    assert (row.tactic_name, row.tactic_path) == ("echo", "my_project::echo")
    for form in ("my_project::echo", "my_project:echo", "my_project.tactics:echo", "echo"):
        assert [r.session_id for r in store.list_sessions(tactic_path=form)] == [row.session_id], form
    assert store.list_sessions(tactic_path="other::thing") == []
    plain = sqlite_store(tmp_path / "runs.db")  # no runtime: the name is the path
    assert plain.list_sessions()[0].tactic_path == "echo"
    assert plain.list_sessions(tactic_path="my_project::echo")[0].session_id == row.session_id
    assert json.loads(store.export_session(row.session_id))["session"]["tactic"] == "echo"


def test_a_registered_config_may_be_completed_by_code_before_the_build(tmp_path: Path) -> None:
    from lllm import build_tactic

    root = project(tmp_path / "p", "svc")
    (root / "configs" / "open.yaml").write_text(
        "tactic_type: echo\ninvoker: scripted\ninvoker_config: {steps: [reviewed]}\n"
        "agent_configs: [{name: a, system_prompt_path: greeter/system}]\n")
    (root / "configs" / "typo.yaml").write_text("agent_configs: [{name: a, model_nme: m, system_prompt: x}]\n")
    (root / "configs" / "negative.yaml").write_text("agent_configs: [{name: a, max_exception_retry: -1}]\n")
    rt = Runtime("complete-later")
    rt.load_package(root)
    config = rt.get_config("open")  # no model_name yet: code adds it (examples/code_review_service does)
    with pytest.raises(ConfigError, match=r"missing key \"agent_configs\[0\] \('a'\).model_name\""):
        build_tactic(config, runtime=rt)
    config.setdefault("global", {})["model_name"] = "gpt-4o"
    assert build_tactic(config, runtime=rt)("x") == "reviewed"
    with pytest.raises(ConfigError, match=r"typo.yaml: .*unknown key .*model_nme"):
        rt.get_config("typo")  # what is there is still checked
    with pytest.raises(ConfigError, match=r"negative.yaml: .*max_exception_retry"):
        rt.get_config("negative")


def test_vendor_config_resolves_merges_and_stands_alone(tmp_path: Path) -> None:
    import yaml

    from lllm import vendor_config

    make_package(tmp_path / "A", "A", configs={
        "base.yaml": "global: {model_name: gpt-4o-mini, model_args: {temperature: 0.7, seed: 1}}\n",
        "default.yaml": "base: base\nagent_configs: [{name: w, system_prompt: hi}]\n"})
    root = make_package(tmp_path / "me", "me", deps=["../A"], configs={
        "vendor/A.yaml": 'base: "A:default"\nglobal: {model_args: {temperature: 0.05}}\n'})
    rt = Runtime("vendor")
    rt.load_package(root)
    cfg = vendor_config("A:default", {"global": {"model_name": "gpt-4o", "model_args": {"temperature": 0.05}}},
                        runtime=rt)
    assert cfg["global"] == {"model_name": "gpt-4o", "model_args": {"temperature": 0.05, "seed": 1}}
    assert "_config_path" not in cfg and "base" not in cfg
    rt.register_config("vendor/A2", cfg, namespace="me.configs")
    assert rt.get_config("me:vendor/A2") == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg
    from_yaml = rt.get_config("vendor/A")  # `base: "A:default"` in a file: the same config
    assert from_yaml["global"]["model_args"] == {"temperature": 0.05, "seed": 1}


def test_resource_folders_without_an_lllm_toml_load_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "loose-project"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "greeter.py").write_text(
        "from lllm import Prompt\ngreeter = Prompt(path='greeter/system', prompt='You are {name}.')\n")
    code = ("import warnings, lllm\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n    p = lllm.load_prompt('greeter/system')\n"
            "print(p.path, lllm.load_prompt('loose-project::greeter/system') is p, 'add an lllm.toml' in str(w[0].message))")
    assert python(code, cwd=folder) == "greeter/system True True"
