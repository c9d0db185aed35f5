"""Docs that are tested: every `lllm` command has a section in docs/cli.md, and the README's commands exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from lllm import cli

ROOT = Path(__file__).resolve().parents[2]


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [" ".join(path)] if path else []
    return [name for a in subs for n, p in a.choices.items() for name in _leaf_commands(p, (*path, n))]


def test_every_command_has_a_docs_section() -> None:
    documented = set(re.findall(r"^## lllm (.+)$", (ROOT / "docs" / "cli.md").read_text(), flags=re.M))
    commands = set(_leaf_commands(cli.build_parser()))
    assert {"demo", "run", "logs ls", "sandbox build", "proxies doc", "browser check"} <= commands
    assert commands - documented == set(), "commands without a section in docs/cli.md"
    assert documented - commands == set(), "docs/cli.md documents commands that do not exist"


def test_the_readme_commands_and_scripts_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in re.findall(r"bash (scripts/[\w.-]+)", readme):
        assert (ROOT / script).is_file(), script
    assert (ROOT / ".ci" / "run").read_text().count("scripts/run-tests") == 1
    for bench in re.findall(r"\.venv/bin/python (bench/\w+\.py)", readme):
        assert (ROOT / bench).is_file(), bench
