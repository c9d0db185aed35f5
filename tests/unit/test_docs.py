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


# -- every module, file, class member and function that docs/*.md names exists (issue 10) --------------------

import ast  # noqa: E402
import builtins  # noqa: E402
import importlib  # noqa: E402

CODE_DIRS = ("lllm", "proxies", "sandbox")
PATH = re.compile(r"^(?:\.\./)?[\w.-]+(?:/[\w.*-]+)*\.(?:py|md|toml|yaml|sh|ipynb)$|^(?:lllm|tests|bench|docs|sandbox|"
                  r"proxies|examples|scripts)/[\w./-]*$")
DOTTED = re.compile(r"^lllm(?:\.\w+)+$")
MEMBER = re.compile(r"^([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\(.*\))?(?:: .*)?$")
CALL = re.compile(r"^([A-Za-z_]\w*)\(.*\)(?: -> .*)?$")
EXTERNAL = {"litellm", "docker", "zmq", "playwright", "sqlite_utils", "pydantic", "os", "sys"}
"""Libraries the docs name members of (`litellm.responses`): not ours to check."""
RUNTIME_FILES = {"gateway.sock", "gateway.token", "kernel.json", "kernel.state"}
"""Files a sandbox's session directory holds at run time (named like `module.attr`)."""


def _code_names() -> tuple[set[str], dict[str, list[Path]], set[str]]:
    """Every def/class name in the code, the module files by stem, and every `self.x` attribute assigned."""
    defined: set[str] = set()
    stems: dict[str, list[Path]] = {}
    attributes: set[str] = set()
    for folder in CODE_DIRS:
        for file in (ROOT / folder).rglob("*.py"):
            stems.setdefault(file.stem, []).append(file)
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    defined.add(node.name)
                elif isinstance(node, ast.Attribute) and (isinstance(node.ctx, ast.Store) or (
                        isinstance(node.value, ast.Name) and node.value.id == "self")):
                    attributes.add(node.attr)  # `self.x`, or any `obj.x = ...` (`agent.proxy_tools = tools`)
                elif isinstance(node, (ast.AnnAssign, ast.Assign)):
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                        if isinstance(target, ast.Name):
                            defined.add(target.id)
    return defined, stems, attributes


def _resolve_dotted(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _public_classes() -> dict[str, type]:
    import lllm

    classes = {}
    for name in lllm.__all__:
        obj = getattr(lllm, name)
        if isinstance(obj, type):
            classes[name] = obj
    for module in ("lllm.sandbox", "lllm.proxies", "lllm.invokers", "lllm.logging"):
        mod = importlib.import_module(module)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if isinstance(obj, type):
                classes.setdefault(name, obj)
    return classes


def named_in_docs(text: str) -> list[str]:
    """The code a markdown text names: `backticked` tokens and link targets."""
    tokens = re.findall(r"`([^`\n]+)`", text)
    tokens += [t for t in re.findall(r"\]\(([^)#\s]+)\)", text) if not t.startswith("http")]
    return tokens


def missing_names(doc: Path) -> list[str]:
    defined, stems, attributes = _code_names()
    classes = _public_classes()
    problems = []
    for token in named_in_docs(doc.read_text(encoding="utf-8")):
        token = token.strip()
        if token in RUNTIME_FILES:
            continue
        if PATH.match(token) and "<" not in token:
            target = (doc.parent / token) if token.startswith("../") else ROOT / token
            if "/" in token or token.startswith(".."):
                ok = any(target.parent.glob(target.name)) if "*" in token else target.exists()
            else:  # a bare file name: a file of that name somewhere in the repo
                ok = token.endswith(".py") and token[:-3] in stems or any(
                    ".venv" not in f.parts for f in ROOT.rglob(token))
            if not ok:
                problems.append(f"{doc.name}: file {token!r} is not in the repo")
        elif DOTTED.match(token):
            if not _resolve_dotted(".".join(token.split(".")[:2])):
                continue  # not a module of ours (an entry point group, a container label)
            if not _resolve_dotted(token):
                problems.append(f"{doc.name}: {token!r} does not exist")
        elif m := MEMBER.match(token):
            owner, attr = m.groups()
            if owner in classes:
                cls = classes[owner]
                fields = set(getattr(cls, "model_fields", {})) | set(getattr(cls, "__dataclass_fields__", {}))
                if not (hasattr(cls, attr) or attr in fields or attr in attributes):
                    problems.append(f"{doc.name}: {token!r}: {owner} has no {attr!r}")
            elif owner in stems and owner not in classes and owner not in EXTERNAL:
                module_files = stems[owner]
                found = any(re.search(rf"^\s*(?:async )?def {attr}\b|^\s*class {attr}\b|^{attr}\s*[:=]",
                                      f.read_text(encoding="utf-8"), re.M) for f in module_files)
                if not (found or attr in attributes):  # `agent.tools`: an instance's attribute
                    problems.append(f"{doc.name}: {token!r}: module {owner} has no {attr!r}")
        elif m := CALL.match(token):
            # `builtins`, not `__builtins__`: in an imported module that is a dict, whose dir() is dict's methods
            if len(m.group(1)) > 1 and m.group(1) not in defined and not hasattr(builtins, m.group(1)):
                problems.append(f"{doc.name}: {token!r}: no function {m.group(1)!r} in the code")
    return problems


NAMES_OF_OTHERS = {"compat.md"}
"""Pages about another package's names (docs/compat.md lists lllm-core's, many not provided here on purpose;
`scripts/compat-check --names` checks them)."""


def test_every_module_and_function_the_docs_name_exists() -> None:
    docs = [d for d in sorted((ROOT / "docs").rglob("*.md")) if d.name not in NAMES_OF_OTHERS]
    problems = [p for doc in docs for p in missing_names(doc)]
    assert problems == []


def test_the_extending_guide_examples_run() -> None:
    """Every ```python block of docs/guide/extending.md runs as written, in one namespace (models.md has its own
    test, against a fake provider)."""
    from lllm.core.config import AGENT_EXTENSIONS
    from lllm.sandbox.backends import SANDBOX_BACKENDS

    import guide_runner

    before = (set(AGENT_EXTENSIONS._entries), set(SANDBOX_BACKENDS._entries))
    try:
        guide_runner.run_blocks("extending.md", test=__file__)
    finally:  # the pages register plug-ins of their own: take them out again
        for registry, names in zip((AGENT_EXTENSIONS, SANDBOX_BACKENDS), before):
            for name in set(registry._entries) - names:
                del registry[name]


def test_a_stale_name_in_the_docs_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "stale.md"
    doc.write_text("Old screenshots go (`toolset._rewire`); see `lllm.core.agent.Agent.respond`, "
                   "`lllm.core.agent.Agent.no_such_thing`, `lllm/no_such_file.py`, [map](../shared/DESIGN.md) and "
                   "`no_such_function(x)`.\n")
    problems = missing_names(doc)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "'toolset._rewire': module toolset has no '_rewire'",
        "'lllm.core.agent.Agent.no_such_thing' does not exist",
        "file 'lllm/no_such_file.py' is not in the repo",
        "'no_such_function(x)': no function 'no_such_function' in the code",
        "file '../shared/DESIGN.md' is not in the repo",
    ]
