"""compat-check's reader: the snippets of lllm-core's docs and the commands of its examples, from the mirror.

Nothing here is copied into our repo: pages are read from the git mirror at run time (`git show HEAD:path`).

How a page becomes jobs (the rule, also printed by `compat-check --help`):
- Every fenced ```python block is a snippet, numbered from 1 in page order.
- A block whose first line is a comment naming a file under a folder (`# prompts/greeter.py`), a ```yaml block
  whose first line names a `.yaml`/`.yml` file, and a ```toml block with a `[package]` table (`lllm.toml`) are
  FILES the page asks the reader to create: they are written into the working folder of every later snippet
  of the page and are not run themselves.
- A snippet that leaves out code (`...` used as a value or an argument, or as a statement outside a `def` or
  `class` body) is ILLUSTRATIVE and not run.
- A snippet's free names (read, never bound in it, not builtins) are looked up in the earlier snippets of the
  same page: the latest earlier snippet that binds each one is a prerequisite, transitively, and the
  prerequisites run first, in page order, in the same process. An earlier snippet that registers something
  by side effect (a class under a decorator, like `@ProxyRegistrator(...)`) is a prerequisite of every later
  snippet of the page, as it would be in the reader's session.
- A free name no earlier snippet binds is imported as a reader would, when it is a standard-library module
  (`json`), a name from typing/abc/dataclasses/pydantic (`Any`, `ABC`, `dataclass`, `BaseModel`), or a
  top-level name of lllm-core's `lllm` package as the mirror's lllm/__init__.py imports it
  (`from lllm import Dialog`); the import line goes first in the script, on both sides alike.
- Any other free name makes the snippet a FRAGMENT (listed with the names it lacks, not run); so does a
  prerequisite that is illustrative or a fragment.
- Examples run as the examples' README says (`python examples/x.py`, or `cd dir` then `python service.py
  --demo`: the first command given for each script), from a checkout of the mirror's tree.
"""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import symtable
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DOC_GLOBS = ("docs/tutorials/", "docs/core/", "docs/guides/")
BUILTIN_NAMES = set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
_IMPLIED_FROM = {
    "typing": ("Any", "Callable", "ClassVar", "Dict", "Iterable", "Iterator", "List", "Literal", "Optional",
               "Sequence", "Tuple", "Type", "Union"),
    "abc": ("ABC", "abstractmethod"),
    "dataclasses": ("dataclass", "field"),
    "pydantic": ("BaseModel", "Field"),
}


def implied_imports(lllm_init: str) -> dict[str, str]:
    """name -> the import line a reader adds for it: stdlib modules, typing & co., lllm's top-level names.

    `lllm_init` is the text of lllm-core's lllm/__init__.py (from the mirror): its `from ... import` names.
    """
    lines = {mod: f"import {mod}" for mod in sys.stdlib_module_names if not mod.startswith("_")}
    for module, names in _IMPLIED_FROM.items():
        lines.update({n: f"from {module} import {n}" for n in names})
    tree = ast.parse(lllm_init)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lllm"):
            lines.update({a.asname or a.name: f"from lllm import {a.asname or a.name}" for a in node.names})
    return lines

_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w.\-/]+\.(?P<ext>py|ya?ml|toml))\s*(?:[-—(#].*)?$")


@dataclass
class Block:
    """One fenced code block of a page."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence in the page


@dataclass
class Snippet:
    """One python block of a page, classified."""

    page: str
    index: int  # 1-based among the page's python blocks
    line: int
    code: str
    kind: str  # "snippet" | "file" | "illustrative" | "syntax-error"
    file_path: str | None = None
    binds: set[str] = field(default_factory=set)
    free: set[str] = field(default_factory=set)
    registers: bool = False  # defines a decorated class at module level (a registration by side effect)
    note: str = ""


@dataclass
class Job:
    """What one side runs for one snippet or example."""

    page: str
    index: int  # 0 for an example
    line: int
    status: str  # "run" | "file" | "illustrative" | "fragment" | "syntax-error"
    code: str = ""  # the script (prerequisites first), for a snippet
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text, written before running
    prereqs: list[int] = field(default_factory=list)
    implied: list[str] = field(default_factory=list)  # import lines added (names the page never imports)
    missing: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (first script line, snippet index)
    script: str = ""  # for an example: path inside the checkout
    cwd: str = ""  # for an example: folder inside the checkout
    argv: list[str] = field(default_factory=list)
    exclusive: list[str] = field(default_factory=list)  # absolute paths the script writes (run alone)

    @property
    def key(self) -> str:
        return f"{self.page}#{self.index}" if self.index else self.page


def git_show(mirror: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", mirror, "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def list_pages(mirror: str, prefixes: tuple[str, ...] = DOC_GLOBS) -> list[str]:
    names = subprocess.run(
        ["git", "-C", mirror, "ls-tree", "-r", "--name-only", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.split()
    return sorted(n for n in names if n.endswith(".md") and n.startswith(prefixes))


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, dedented to their fence."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group("indent"), m.group("lang").lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def _placeholder(tree: ast.Module) -> bool:
    """True when `...` stands for left-out code (a value, an argument, a statement outside a def/class body)."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
                    allowed.add(id(stmt.value))
    return any(
        isinstance(n, ast.Constant) and n.value is Ellipsis and id(n) not in allowed for n in ast.walk(tree)
    )


def _names(code: str) -> tuple[set[str], set[str]]:
    """(names bound at module level, free names read anywhere) of a snippet."""
    table = symtable.symtable(code, "<snippet>", "exec")
    binds = {
        s.get_name()
        for s in table.get_symbols()
        if s.is_assigned() or s.is_imported() or s.is_namespace() or s.is_parameter()
    }
    used: set[str] = set()

    def walk(t: symtable.SymbolTable) -> None:
        for s in t.get_symbols():
            if s.is_referenced() and (t.get_type() == "module" or s.is_global()):
                used.add(s.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return binds, used - binds - BUILTIN_NAMES


def classify(page: str, blocks: list[Block]) -> tuple[list[Snippet], dict[int, dict[str, str]]]:
    """The page's python snippets, and for each snippet index the files created before it."""
    snippets: list[Snippet] = []
    files_before: dict[int, dict[str, str]] = {}
    files: dict[str, str] = {}
    for block in blocks:
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        header = _FILE_HEADER.match(first)
        if block.lang in ("yaml", "yml") and header and header.group("ext") in ("yaml", "yml"):
            files[header.group("path")] = block.code
        elif block.lang == "toml" and (header and header.group("ext") == "toml" or "[package]" in block.code):
            files[header.group("path") if header else "lllm.toml"] = block.code
        if block.lang not in ("python", "py"):
            continue
        snip = Snippet(page, len(snippets) + 1, block.line, block.code, "snippet")
        snippets.append(snip)
        files_before[snip.index] = dict(files)
        if header and header.group("ext") == "py" and "/" in header.group("path") and not header.group("path").startswith("examples/"):
            snip.kind, snip.file_path = "file", header.group("path")
            files[snip.file_path] = block.code
            continue
        try:
            tree = ast.parse(block.code)
            snip.binds, snip.free = _names(block.code)
        except SyntaxError as exc:
            snip.kind, snip.note = "syntax-error", f"line {exc.lineno}: {exc.msg}"
            continue
        snip.registers = any(isinstance(n, ast.ClassDef) and n.decorator_list for n in tree.body)
        if _placeholder(tree):
            snip.kind, snip.note = "illustrative", "`...` stands for left-out code"
    return snippets, files_before


def page_jobs(page: str, text: str, implied: dict[str, str] | None = None) -> list[Job]:
    """One job per python block of a page (see the module docstring for the rule)."""
    snippets, files_before = classify(page, fenced_blocks(text))
    by_index = {s.index: s for s in snippets}
    implied = implied or {}
    resolved: dict[int, tuple[set[int], set[str], set[str]]] = {}

    def resolve(s: Snippet) -> tuple[set[int], set[str], set[str]]:
        """(prerequisite indices, implied import lines, names nothing binds) of a snippet, transitively."""
        if s.index in resolved:
            return resolved[s.index]
        prereqs: set[int] = set()
        imports: set[str] = set()
        missing: set[str] = set()
        for earlier in snippets[: s.index - 1]:
            if earlier.kind == "snippet" and earlier.registers:
                prereqs.add(earlier.index)
                more, more_imports, lacking = resolve(earlier)
                prereqs |= more
                imports |= more_imports
                missing |= lacking
        for name in sorted(s.free):
            source = next(
                (p for p in reversed(snippets[: s.index - 1]) if p.kind != "file" and name in p.binds), None
            )
            if source is None and name in implied:
                imports.add(implied[name])
            elif source is None:
                missing.add(name)
            elif source.kind != "snippet":
                missing.add(f"{name} (from {source.kind} #{source.index})")
            else:
                prereqs.add(source.index)
                more, more_imports, lacking = resolve(source)
                prereqs |= more
                imports |= more_imports
                missing |= lacking
        resolved[s.index] = (prereqs, imports, missing)
        return prereqs, imports, missing

    jobs: list[Job] = []
    for s in snippets:
        job = Job(page, s.index, s.line, s.kind if s.kind != "snippet" else "run", files=files_before[s.index])
        if s.kind == "file":
            job.missing = [s.file_path or ""]
        elif s.kind != "snippet":
            job.missing = [s.note]
        else:
            prereqs, imports, missing = resolve(s)
            job.prereqs, job.implied = sorted(prereqs), sorted(imports)
            if missing:
                job.status, job.missing = "fragment", sorted(missing)
            else:
                parts, offsets, line = [], [], 1
                if job.implied:
                    parts.append("# ---- imports the page leaves to the reader ----\n" + "\n".join(job.implied) + "\n")
                    line += 1 + len(job.implied)
                for i in [*job.prereqs, s.index]:
                    header = f"# ---- {page} python block #{i} (line {by_index[i].line}) ----\n"
                    offsets.append((line + 1, i))
                    parts.append(header + by_index[i].code)
                    line += 1 + by_index[i].code.count("\n")
                job.code, job.offsets = "".join(parts), offsets
        jobs.append(job)
    return jobs


def example_jobs(readme: str, tree_files: set[str], read: "callable[[str], str]") -> list[Job]:
    """The examples' commands as their README gives them: `python examples/x.py` or `cd d` + `python s.py args`."""
    jobs: list[Job] = []
    seen: set[str] = set()
    for block in fenced_blocks(readme):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        cwd = "."
        for raw in block.code.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line.startswith("cd "):
                cwd = str(PurePosixPath(cwd) / line[3:].strip())
                continue
            words = line.split()
            if "python" not in words:
                continue
            at = words.index("python")
            if at + 1 >= len(words) or not words[at + 1].endswith(".py") or any("=" in w for w in words[:at]):
                continue
            script = str(PurePosixPath(cwd) / words[at + 1]).lstrip("./") if cwd != "." else words[at + 1]
            script = str(PurePosixPath(script))
            if script in seen or script not in tree_files:
                continue
            seen.add(script)
            source = read(script)
            jobs.append(
                Job(
                    page=script, index=0, line=0, status="run", script=script, cwd=cwd, argv=words[at + 2 :],
                    exclusive=sorted(set(re.findall(r"[\"'](/tmp/[^\"']+)[\"']", source))),
                )
            )
    return jobs
