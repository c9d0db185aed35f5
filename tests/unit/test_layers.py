"""Layers point down: a lower room never imports (or names, for a lazy import) a higher one, and no two modules
import each other in a cycle (at module level or inside functions). The order is the `layers` block of docs/internals.md; this test reads it.

Every module of `lllm/`, the API adapters `proxies/` and the guest code `sandbox/` is parsed (AST): imports at
module level, inside functions and under `if TYPE_CHECKING:` all count, and so does a string constant that is a
whole dotted path into lllm (`"lllm.tools.cua:attach"`: what a lazy import or a registry entry names).
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOTTED = re.compile(r"^(lllm|proxies)(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?$")


@dataclass(frozen=True)
class Room:
    name: str
    layer: int
    prefixes: tuple[str, ...]


def read_layers(doc: Path) -> list[Room]:
    """The rooms of the ```layers block in docs/internals.md: `layer N: a, b | c` (`|` separates sibling rooms
    that must not import each other; `,` joins modules into one room)."""
    block = re.search(r"```layers\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    assert block, f"{doc} has no ```layers block"
    rooms = []
    for line in block.group(1).splitlines():
        m = re.match(r"layer (\d+): (.+?)(?:\s+#.*)?$", line.strip())
        if not m:
            continue
        for part in m.group(2).split("|"):
            prefixes = tuple(p.strip() for p in part.split(",") if p.strip())
            rooms.append(Room(name=prefixes[0], layer=int(m.group(1)), prefixes=prefixes))
    return rooms


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str, rooms: list[Room]) -> Room | None:
    best: tuple[int, Room] | None = None
    for room in rooms:
        for prefix in room.prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), room)
    return best[1] if best else None


def _is_module(root: Path, dotted: str) -> bool:
    path = root / Path(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _named_module(root: Path, text: str) -> str | None:
    """The module a dotted path names (`pkg.mod:attr`, `pkg.mod.attr` or `pkg.mod`), if it is one of ours."""
    module, colon, _ = text.partition(":")
    candidates = [module] if colon else [module, module.rpartition(".")[0]]
    for candidate in candidates:
        if candidate.count(".") >= 1 and _is_module(root, candidate):
            return candidate
    return None


def imports_of(root: Path, file: Path) -> list[tuple[str, int, str]]:
    """(imported module, line, how) for every import and dotted-path string of lllm in `file`."""
    module = module_name(root, file)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for stmt in node.body for sub in ast.walk(stmt)}
    out: list[tuple[str, int, str]] = []
    for node in ast.walk(tree):
        how = "annotates" if id(node) in typing_only else "import"
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, how) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # `from lllm.sandbox import files` imports the submodule files
                sub = f"{target}.{alias.name}"
                out.append((sub if _is_module(root, sub) else target, node.lineno, how))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            named = _named_module(root, node.value) if DOTTED.match(node.value) else None
            if named is not None:
                out.append((named, node.lineno, "names"))
    return [(m, line, how) for m, line, how in out if m.split(".")[0] in ("lllm", "proxies")]


def source_files(root: Path) -> list[Path]:
    files = [*sorted((root / "lllm").rglob("*.py")), *sorted((root / "proxies").rglob("*.py")),
             *sorted((root / "sandbox").glob("*.py"))]
    return [f for f in files if "__pycache__" not in f.parts]


def layer_violations(root: Path) -> list[str]:
    rooms = read_layers(root / "docs" / "internals.md")
    problems = []
    for file in source_files(root):
        module = module_name(root, file)
        here = room_of(module, rooms)
        for target, line, how in imports_of(root, file):
            where = f"{file.relative_to(root)}:{line}: {module} {how} {target}"
            if module.split(".")[0] == "sandbox":
                problems.append(f"{where}: the guest code imports nothing of lllm")
                continue
            if here is None:
                problems.append(f"{where}: {module} is in no room of the layers block")
                continue
            there = room_of(target, rooms)
            if there is None:
                problems.append(f"{where}: {target} is in no room of the layers block")
            elif there is here:
                continue
            elif there.layer > here.layer:
                problems.append(f"{where}: {here.name} (layer {here.layer}) reaches up to {there.name} "
                                f"(layer {there.layer}); plug it in through a registry instead")
            elif there.layer == here.layer:
                problems.append(f"{where}: {here.name} and {there.name} are sibling rooms; neither imports the other")
            elif here.name == "lllm.proxies" and there.name == "lllm.sandbox":
                problems.append(f"{where}: proxies hold proxies, the manager and the gateway; sandboxes are "
                                "the tools' business")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles among lllm's modules through imports that run (at module level or inside functions); an import
    under TYPE_CHECKING only annotates, so it counts for the layers but not here."""
    graph: dict[str, set[str]] = {}
    for file in source_files(root):
        module = module_name(root, file)
        graph.setdefault(module, set()).update(
            t for t, _, how in imports_of(root, file) if how == "import" and t != module)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_lower_rooms_never_import_higher_ones() -> None:
    assert layer_violations(REPO) == []


def test_no_import_cycles() -> None:
    assert import_cycles(REPO) == []


def test_every_module_is_in_a_room() -> None:
    rooms = read_layers(REPO / "docs" / "internals.md")
    lost = [module_name(REPO, f) for f in source_files(REPO)
            if room_of(module_name(REPO, f), rooms) is None and module_name(REPO, f).split(".")[0] != "sandbox"]
    assert lost == []


@pytest.fixture()
def tree_copy(tmp_path: Path) -> Path:
    for part in ("lllm", "proxies", "sandbox", "docs"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize(("file", "planted", "expect"), [
    # an import inside a function (how upward imports used to hide)
    ("lllm/logging/store.py", "\n\ndef _planted():\n    from lllm.core.dialog import Dialog\n    return Dialog\n",
     "lllm.logging (layer 1) reaches up to lllm.core (layer 2)"),
    # at module level
    ("lllm/sandbox/pool.py", "\nfrom lllm.proxies.gateway import get_gateway  # noqa\n",
     "lllm.sandbox (layer 1) reaches up to lllm.proxies (layer 3)"),
    # under TYPE_CHECKING
    ("lllm/invokers/base.py", "\nif TYPE_CHECKING:\n    from lllm.logging.store import LogStore\n",
     "lllm.invokers and lllm.logging are sibling rooms"),
    # a lazy import by name (what a registry entry or a lazy export holds)
    ("lllm/core/runtime.py", '\n_PLANTED = {"computer_use": "lllm.tools.cua.tactic:ComputerUseTactic"}\n',
     "lllm.core (layer 2) reaches up to lllm.tools (layer 4)"),
    # proxies reaching into the sandbox room
    ("lllm/proxies/manager.py", "\n\ndef _planted():\n    from lllm.sandbox.pool import SandboxPool\n",
     "sandboxes are the tools' business"),
    # the guest code
    ("sandbox/lllm_guest.py", "\n\ndef _planted():\n    import lllm.errors\n", "the guest code imports nothing"),
])
def test_a_planted_upward_import_is_caught(tree_copy: Path, file: str, planted: str, expect: str) -> None:
    assert layer_violations(tree_copy) == []
    with open(tree_copy / file, "a", encoding="utf-8") as f:
        f.write(planted)
    problems = layer_violations(tree_copy)
    assert len(problems) == 1 and expect in problems[0], problems


def test_a_planted_cycle_is_caught(tree_copy: Path) -> None:
    with open(tree_copy / "lllm/core/dialog.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from lllm.core.agent import Agent\n")
    assert ["lllm.core.agent", "lllm.core.dialog"] in [
        [m for m in cycle if m in ("lllm.core.agent", "lllm.core.dialog")] for cycle in import_cycles(tree_copy)]
