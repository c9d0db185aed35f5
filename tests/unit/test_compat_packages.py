"""Sharing packages as lllm-core's building-agents guide (step 9) describes it: `export_package` (with
`bundle_deps`), `install_package` (user or project scope, `alias`), `list_packages`, `remove_package`, the
`lllm pkg` commands; installed packages load on the default runtime's first lookup."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lllm import export_package, install_package, list_packages, remove_package
from lllm.core.runtime import Runtime
from lllm.errors import UsageError
from test_runtime_discovery import make_package

PROMPT = "from lllm import Prompt\np = Prompt(path='{path}', prompt='{text}')\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLLM_CONFIG", raising=False)
    return tmp_path / "home"


def writer_with_a_dependency(tmp_path: Path) -> Runtime:
    make_package(tmp_path / "src" / "shared", "shared", prompts={"s.py": PROMPT.format(path="style", text="Be terse.")})
    make_package(tmp_path / "src" / "writer", "research_writer", deps=["../shared"],
                 prompts={"w.py": PROMPT.format(path="researcher_system", text="You research.")})
    (tmp_path / "src" / "writer" / "prompts" / "__pycache__").mkdir()
    (tmp_path / "src" / "writer" / "prompts" / "__pycache__" / "junk.pyc").write_bytes(b"x")
    rt = Runtime("export")
    rt.load_package(tmp_path / "src" / "writer")
    return rt


def python(code: str, cwd: Path, home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LLLM_CONFIG", "LLLM_AUTO_INIT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         env={**env, "HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_export_bundle_install_and_load_in_a_project(tmp_path: Path, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rt = writer_with_a_dependency(tmp_path)
    zip_path = export_package("research_writer", tmp_path / "dist" / "rw-1.0", bundle_deps=True, runtime=rt)
    assert zip_path.name == "rw-1.0.zip"
    names = sorted(zipfile.ZipFile(zip_path).namelist())
    assert names == ["research_writer/lllm.toml", "research_writer/lllm_packages/shared/lllm.toml",
                     "research_writer/lllm_packages/shared/prompts/s.py", "research_writer/prompts/w.py"]
    project = make_package(tmp_path / "app", "app")
    monkeypatch.chdir(project)
    dest = install_package(zip_path, scope="project", load=False)
    assert dest == project / "lllm_packages" / "research_writer"
    assert list_packages() == [{"name": "research_writer", "version": "1.0", "scope": "project", "path": str(dest)}]
    code = ("import lllm\nprint(lllm.load_prompt('research_writer:researcher_system').prompt, "
            "lllm.load_prompt('shared::style').prompt)")
    assert python(code, project, home) == "You research. Be terse."  # the bundled dependency resolves
    with pytest.raises(UsageError, match="is installed at .* already"):
        install_package(zip_path, scope="project", load=False)


def test_an_alias_renames_the_namespace_and_remove_deletes_it(tmp_path: Path, home: Path) -> None:
    zip_path = export_package("research_writer", tmp_path / "rw.zip", bundle_deps=True,
                              runtime=writer_with_a_dependency(tmp_path))
    rt = Runtime("install-alias")
    dest = install_package(zip_path, alias="rw", runtime=rt)  # user scope, loaded at once
    assert dest == home / ".lllm" / "packages" / "rw"
    assert 'name = "rw"' in (dest / "lllm.toml").read_text()
    assert rt.get_prompt("rw::researcher_system").prompt == "You research."
    assert [p["scope"] for p in list_packages(scope="user")] == ["user"]
    assert remove_package("rw") == dest and not dest.exists() and list_packages() == []
    with pytest.raises(UsageError, match="no installed package 'rw'"):
        remove_package("rw")
    with pytest.raises(UsageError, match="alias 'no way' is not a package name"):
        install_package(zip_path, alias="no way")


def test_unsafe_or_wrong_zips_are_refused(tmp_path: Path, home: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("pkg/lllm.toml", '[package]\nname = "pkg"\n')
        zf.writestr("../../escaped.txt", "gotcha")
    with pytest.raises(UsageError, match="would land outside the package folder"):
        install_package(evil)
    assert not (tmp_path / "escaped.txt").exists() and not (home / "escaped.txt").exists()
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no package here")
    with pytest.raises(UsageError, match="holds one folder with an lllm.toml"):
        install_package(empty)
    (tmp_path / "not.zip").write_text("text")
    with pytest.raises(UsageError, match="is not a zip file"):
        install_package(tmp_path / "not.zip")
    with pytest.raises(UsageError, match="no package 'nobody' is loaded"):
        export_package("nobody", tmp_path / "x.zip", runtime=Runtime("empty"))


def lllm_cmd(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLLM_CONFIG", "LLLM_AUTO_INIT")}
    return subprocess.run([sys.executable, "-m", "lllm.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "HOME": str(home)})


def test_the_pkg_commands(tmp_path: Path, home: Path) -> None:
    writer_with_a_dependency(tmp_path)
    here = tmp_path / "src" / "writer"  # a fresh process discovers the package it runs in
    assert lllm_cmd("pkg", "export", "research_writer", str(tmp_path / "cli.zip"), cwd=here, home=home).returncode == 0
    assert lllm_cmd("pkg", "install", str(tmp_path / "cli.zip"), "--alias", "rw2", cwd=tmp_path, home=home
                    ).returncode == 0
    listed = lllm_cmd("pkg", "list", cwd=tmp_path, home=home).stdout
    assert "rw2" in listed and "user" in listed
    assert lllm_cmd("pkg", "remove", "rw2", "--scope", "user", cwd=tmp_path, home=home).returncode == 0
    again = lllm_cmd("pkg", "remove", "rw2", cwd=tmp_path, home=home)
    assert again.returncode == 1 and "no installed package 'rw2'" in again.stderr
