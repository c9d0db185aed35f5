"""lllm.toml packages: discovery of prompts (nested folders), configs, tactics and proxies; prefixes;
dependencies with aliases; cycles and diamonds loaded once; bad toml and missing dependencies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lllm.core.runtime import Runtime, build_tactic, find_package_toml, load_package, load_runtime
from lllm.errors import ConfigError


def make_package(root: Path, name: str, *, toml_extra: str = "", deps: list[str] | None = None,
                 prompts: dict[str, str] | None = None, configs: dict[str, str] | None = None,
                 tactics: dict[str, str] | None = None, proxies: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    dep_line = f"[dependencies]\npackages = {deps!r}\n".replace("'", '"') if deps is not None else ""
    (root / "lllm.toml").write_text(f'[package]\nname = "{name}"\nversion = "1.0"\n{dep_line}{toml_extra}')
    for folder, files in (("prompts", prompts), ("configs", configs), ("tactics", tactics), ("proxies", proxies)):
        for rel, text in (files or {}).items():
            path = root / folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
    return root


LOGGED_PROMPT = """
import os
from lllm import Prompt
with open(os.environ["LLLM_TEST_LOG"], "a") as f:
    f.write("{name}\\n")
p = Prompt(path="{path}", prompt="from {name}")
"""


@pytest.fixture
def import_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "imports.log"
    log.write_text("")
    monkeypatch.setenv("LLLM_TEST_LOG", str(log))
    return log


def test_discovers_nested_prompts_configs_tactics_and_proxies(tmp_path: Path) -> None:
    root = make_package(
        tmp_path / "pkg", "alpha",
        prompts={"top.py": "from lllm import Prompt\nsystem = Prompt(path='alpha/system', prompt='hi')\n",
                 "deep/er/most.py": "from lllm import Prompt\nx = Prompt(path='deep/x', prompt='{a}')\n"
                                    "not_a_prompt = 'alpha/other'\n"},
        configs={"default.yaml": "tactic_type: echo_alpha\nagent_configs: [{name: a, model_name: m, "
                                 "system_prompt_path: alpha/system}]\n",
                 "nested/more.yml": "base: ../default.yaml\n"},
        tactics={"echo.py": """
            from lllm import Tactic
            class Echo(Tactic):
                name = "echo_alpha"
                agent_group = ["a"]
                def call(self, task):
                    return task
            """},
        proxies={"weather.py": """
            class Weather:
                _lllm_proxy = True
                name = "weather"
            class NotAProxy:
                pass
            """},
    )
    runtime = Runtime("discovery")
    info = runtime.load_package(root)
    assert info.name == "alpha" and info.version == "1.0"
    assert {"alpha/system", "deep/x", "alpha::alpha/system", "alpha::deep/x"} == set(runtime.prompts)
    assert {"default", "nested/more", "alpha::default", "alpha::nested/more"} == set(runtime.configs)
    assert set(runtime.tactics) == {"echo_alpha", "alpha::echo_alpha"}
    assert set(runtime.proxies) == {"weather", "alpha::weather"}
    assert runtime.get_config("nested/more")["tactic_type"] == "echo_alpha"
    tactic = build_tactic("nested/more", runtime=runtime)
    assert tactic("ping") == "ping"
    # the tactic registered in this runtime, not in the default one
    from lllm.core.runtime import get_default_runtime

    assert "echo_alpha" not in get_default_runtime().tactics
    assert runtime.load_package(root) is info  # loading again does nothing


def test_base_proxy_subclasses_are_discovered(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "prox", proxies={"svc.py": """
        from lllm.proxies import BaseProxy, ProxyRegistrator

        @ProxyRegistrator(path="unit_test_svc", name="Svc", description="A test proxy.")
        class Svc(BaseProxy):
            pass
        """})
    runtime = Runtime("prox")
    runtime.load_package(root)
    assert runtime.get_proxy("unit_test_svc").__name__ == "Svc"
    assert dict(runtime.iter_items("proxy"))["prox::unit_test_svc"].__name__ == "Svc"


def test_prefixes_and_custom_paths(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "beta",
                        toml_extra='[prompts]\npaths = ["my_prompts"]\nprefix = "b"\n[configs]\nprefix = "cfg"\n',
                        configs={"one.yaml": "global: {}\n"})
    (root / "my_prompts").mkdir()
    (root / "my_prompts" / "p.py").write_text("from lllm import Prompt\nq = Prompt(path='ask', prompt='?')\n")
    runtime = Runtime("prefixes")
    runtime.load_package(root)
    assert set(runtime.prompts) == {"b/ask", "beta::b/ask"}
    assert set(runtime.configs) == {"cfg/one", "beta::cfg/one"}


def test_dependencies_with_aliases_and_root_names_win(tmp_path: Path, import_log: Path) -> None:
    make_package(tmp_path / "dep", "dep", prompts={"p.py": LOGGED_PROMPT.format(name="dep", path="shared")})
    make_package(tmp_path / "other", "other", prompts={"p.py": LOGGED_PROMPT.format(name="other", path="only_other")})
    root = make_package(tmp_path / "root", "root", deps=["../dep as d", "../other"],
                        prompts={"p.py": LOGGED_PROMPT.format(name="root", path="shared")})
    runtime = Runtime("deps")
    info = runtime.load_package(root)
    assert runtime.prompts["shared"].prompt == "from root"  # the root package's own name wins
    assert runtime.prompts["d::shared"].prompt == "from dep"  # the alias reaches the dependency's
    assert runtime.prompts["dep::shared"].prompt == "from dep"
    assert runtime.prompts["only_other"].prompt == "from other"
    assert len(info.dependencies) == 2
    assert import_log.read_text().split() == ["dep", "other", "root"]


def test_toml_dependency_table_form(tmp_path: Path) -> None:
    make_package(tmp_path / "dep", "dep", prompts={"p.py": "from lllm import Prompt\nx = Prompt(path='x', prompt='x')\n"})
    root = make_package(tmp_path / "root", "root",
                        toml_extra='[dependencies]\npackages = [{path = "../dep", alias = "dd"}]\n')
    runtime = Runtime("table")
    runtime.load_package(root)
    assert "dd::x" in runtime.prompts and "x" in runtime.prompts


def test_a_diamond_loads_the_shared_package_once(tmp_path: Path, import_log: Path) -> None:
    make_package(tmp_path / "shared", "shared", prompts={"p.py": LOGGED_PROMPT.format(name="shared", path="s")})
    make_package(tmp_path / "left", "left", deps=["../shared"],
                 prompts={"p.py": LOGGED_PROMPT.format(name="left", path="l")})
    make_package(tmp_path / "right", "right", deps=["../shared as sh"],
                 prompts={"p.py": LOGGED_PROMPT.format(name="right", path="r")})
    root = make_package(tmp_path / "top", "top", deps=["../left", "../right"])
    runtime = Runtime("diamond")
    runtime.load_package(root)
    assert import_log.read_text().split() == ["shared", "left", "right"]
    assert len(runtime.packages) == 4
    assert runtime.prompts["sh::s"] is runtime.prompts["shared::s"]  # the second alias points at the same one


def test_a_dependency_cycle_loads_each_package_once(tmp_path: Path, import_log: Path) -> None:
    make_package(tmp_path / "a", "a", deps=["../b"], prompts={"p.py": LOGGED_PROMPT.format(name="a", path="pa")})
    make_package(tmp_path / "b", "b", deps=["../a"], prompts={"p.py": LOGGED_PROMPT.format(name="b", path="pb")})
    runtime = Runtime("cycle")
    runtime.load_package(tmp_path / "a")
    assert sorted(import_log.read_text().split()) == ["a", "b"]
    assert {"pa", "pb"} <= set(runtime.prompts)


def test_invalid_toml_names_the_file_and_the_parse_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "lllm.toml").write_text('[package]\nname = "x\n')
    with pytest.raises(ConfigError, match=r"lllm.toml: invalid TOML: .*line 2") as info:
        Runtime("bad").load_package(root)
    assert info.value.path == str(root / "lllm.toml")


def test_toml_schema_errors_suggest_near_keys(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "p", toml_extra='[prompts]\npath = ["prompts"]\n')
    with pytest.raises(ConfigError, match=r"unknown key 'prompts.path'. Did you mean 'paths'"):
        Runtime("schema").load_package(root)
    (root / "lllm.toml").write_text("[package]\nversion = '1'\n")
    with pytest.raises(ConfigError, match=r"missing key 'package.name'"):
        Runtime("schema2").load_package(root)


def test_missing_dependency_is_an_error_naming_it(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "p", deps=["../nowhere"])
    with pytest.raises(ConfigError, match=r"dependency '../nowhere' of package 'p': no lllm.toml at"):
        Runtime("missing").load_package(root)
    runtime = Runtime("missing2")
    with pytest.raises(ConfigError):
        runtime.load_package(root)
    assert runtime.packages == {}  # a failed load leaves nothing half-registered


def test_a_file_that_fails_to_import_names_itself(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "p", tactics={"broken.py": "raise RuntimeError('boom')\n"})
    with pytest.raises(ConfigError, match=r"broken.py: importing it .*RuntimeError: boom"):
        Runtime("broken").load_package(root)


def test_find_package_toml_walks_up_and_honours_llllm_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_package(tmp_path / "proj", "proj")
    (root / "a" / "b").mkdir(parents=True)
    monkeypatch.delenv("LLLM_CONFIG", raising=False)
    monkeypatch.chdir(root / "a" / "b")
    assert find_package_toml() == root / "lllm.toml"
    other = make_package(tmp_path / "other", "other")
    monkeypatch.setenv("LLLM_CONFIG", str(other / "lllm.toml"))
    assert find_package_toml() == other / "lllm.toml"
    monkeypatch.delenv("LLLM_CONFIG")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no lllm.toml in .* or any folder above"):
        find_package_toml()


def test_load_runtime_and_load_package_module_functions(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", "named", configs={"c.yaml": "global: {}\n"})
    runtime = load_runtime(root, name="unit-named")
    assert "c" in runtime.configs and runtime.name == "unit-named"
    other = Runtime("explicit")
    assert load_package(root, runtime=other).name == "named"


def test_unknown_config_prompt_and_tactic_suggest_near_names() -> None:
    runtime = Runtime("lookup")
    runtime.register_config("default", Path(os.devnull))
    with pytest.raises(ConfigError, match=r"no config 'defualt'.*Did you mean 'default'.*load_package"):
        runtime.get_config("defualt")
    with pytest.raises(ConfigError, match=r"unknown tactic_type 'x'"):
        build_tactic({"tactic_type": "x"}, runtime=runtime)
    with pytest.raises(ConfigError, match=r"no 'tactic_type'"):
        build_tactic({}, runtime=runtime)


def test_import_lllm_runs_no_discovery(tmp_path: Path) -> None:
    make_package(tmp_path, "side", prompts={"p.py": "raise SystemExit('a project file was executed')\n"})
    code = "import lllm; rt = lllm.get_default_runtime(); print(len(rt.packages), len(rt.prompts))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


def test_a_dependency_config_bases_on_its_own_package(tmp_path: Path) -> None:
    make_package(tmp_path / "dep", "dep", configs={
        "common.yaml": "global: {model_name: dep-model}\n",
        "sub/tool.yaml": "base: common\nagent_configs: [{name: a, system_prompt: x}]\n"})
    root = make_package(tmp_path / "root", "root", deps=["../dep"], configs={
        "common.yaml": "global: {model_name: root-model}\n"})
    runtime = Runtime("own-base")
    runtime.load_package(root)
    assert runtime.get_config("common")["global"]["model_name"] == "root-model"
    assert runtime.get_config("sub/tool")["global"]["model_name"] == "dep-model"
