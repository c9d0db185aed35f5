"""compat-check --names: the lllm names lllm-core's docs and examples use, found statically, with counts.

A name is one of:
- `module.Name`: imported (`from lllm.logging import local_store` gives `lllm.logging.local_store`), or a
  module imported or documented by a reference page (`::: lllm.core.agent` gives `module lllm.core.agent`);
- `Owner.attr`: an attribute read on an imported name (`Tactic.quick`) or on a variable whose type the
  snippet makes plain (`agent = Agent(...)`, `store = sqlite_store(...)`, `x = self.agents["a"]`,
  `msg = agent.respond()`; the table RETURNS below says what a documented call returns);
- `Callable(kw=)`: a keyword argument passed to one of those (`Agent(context_manager=)`).
Each name counts the python blocks (and examples) that use it. probe.py then checks each one in a venv.
"""

from __future__ import annotations

import ast
import re

# what documented calls return, by (owner type, attribute) -> type; "call" is calling an instance
RETURNS: dict[tuple[str, str], str] = {
    ("lllm.Agent", "respond"): "lllm.Message",
    ("lllm.Agent", "current_dialog"): "lllm.Dialog",
    ("lllm.Agent", "close"): "lllm.Dialog",
    ("lllm.Dialog", "tail"): "lllm.Message",
    ("lllm.Dialog", "head"): "lllm.Message",
    ("lllm.Dialog", "fork"): "lllm.Dialog",
    ("lllm.Tactic", "call!return_session"): "lllm.core.tactic.TacticCallSession",
    ("lllm.LogStore", "load_session"): "lllm.core.tactic.TacticCallSession",
    ("lllm.LogStore", "load_session_record"): "lllm.logging.models.SessionRecord",
    ("lllm.Prompt", "extend"): "lllm.Prompt",
    ("lllm.Runtime", "get_prompt"): "lllm.Prompt",
}
FACTORIES: dict[str, str] = {
    "lllm.logging.sqlite_store": "lllm.LogStore",
    "lllm.logging.local_store": "lllm.LogStore",
    "lllm.logging.noop_store": "lllm.LogStore",
    "lllm.load_prompt": "lllm.Prompt",
    "lllm.build_tactic": "lllm.Tactic",
    "lllm.load_tactic": "lllm.Tactic",
    "lllm.get_default_runtime": "lllm.Runtime",
    "lllm.get_runtime": "lllm.Runtime",
    "lllm.load_runtime": "lllm.Runtime",
    "lllm.invokers.build_invoker": "lllm.invokers.base.BaseInvoker",
    "lllm.core.dialog.Dialog": "lllm.Dialog",
    "lllm.core.prompt.Prompt": "lllm.Prompt",
    "lllm.core.agent.Agent": "lllm.Agent",
}
# the documented home of a class imported from elsewhere, so that one name has one spelling
CANONICAL = {
    "lllm.core.dialog.Dialog": "lllm.Dialog", "lllm.core.dialog.Message": "lllm.Message",
    "lllm.core.prompt.Prompt": "lllm.Prompt", "lllm.core.agent.Agent": "lllm.Agent",
    "lllm.core.tactic.Tactic": "lllm.Tactic", "lllm.core.runtime.Runtime": "lllm.Runtime",
    "lllm.logging.LogStore": "lllm.LogStore", "lllm.logging.store.LogStore": "lllm.LogStore",
    "lllm.proxies.ProxyManager": "lllm.ProxyManager", "lllm.proxies.BaseProxy": "lllm.BaseProxy",
}
_SKIP_ATTRS = {"__init__", "__class__"}


class _Scan(ast.NodeVisitor):
    """Walks one block in order, tracking what each local name is: an lllm callable, or an instance of a type."""

    def __init__(self) -> None:
        self.callables: dict[str, str] = {}  # local name -> dotted lllm class/function (imports, subclasses)
        self.instances: dict[str, str] = {}  # variable -> lllm type of its value
        self.found: set[str] = set()

    def _callable(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.callables.get(node.id)
        return None

    def _type(self, node: ast.AST) -> str | None:
        """The lllm type of the value of an expression, where the code makes it plain."""
        if isinstance(node, ast.Name):
            return self.instances.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._type(node.value) or self._callable(node.value)
            if owner and (owner, node.attr) in RETURNS:
                return RETURNS[(owner, node.attr)]
            return None
        if isinstance(node, ast.Subscript):
            v = node.value
            if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "self" and v.attr == "agents":
                return "lllm.Agent"
            return None
        if isinstance(node, ast.Call):
            fn = self._callable(node.func)
            if fn is not None:
                if fn in FACTORIES:
                    return FACTORIES[fn]
                if fn.rsplit(".", 1)[-1][:1].isupper():  # a class: an instance of it
                    return CANONICAL.get(fn, fn)
                return None
            inst = self._type(node.func) if isinstance(node.func, ast.Name) else None
            if inst == "lllm.Tactic" and any(k.arg == "return_session" for k in node.keywords):
                return "lllm.core.tactic.TacticCallSession"
            if isinstance(node.func, ast.Attribute):
                if node.func.attr == "respond" and any(k.arg == "return_session" for k in node.keywords):
                    return "lllm.core.prompt.AgentCallSession"  # as the docs write it (the code returns a tuple)
                if self._callable(node.func.value) == "lllm.Tactic" and node.func.attr == "quick":
                    # quick(query) -> Message; quick() with no query -> Agent; return_agent=True -> both
                    return "lllm.Message" if node.args else "lllm.Agent"
                return self._type(node.func)
        return None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("lllm"):
                self.found.add(f"module {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if not module.startswith("lllm"):
            return
        for alias in node.names:
            dotted = f"{module}.{alias.name}"
            self.found.add(dotted)
            self.callables[alias.asname or alias.name] = CANONICAL.get(dotted, dotted)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = [b for b in (self._callable(x) for x in node.bases) if b]
        if bases:
            self.callables[node.name] = bases[0]  # a user's subclass stands for its lllm base
            for kw in node.keywords:  # class X(Tactic, register=False)
                self.found.add(f"{bases[0]}(class keyword {kw.arg}=)")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        t = self._type(node.value)
        value = node.value
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "quick"
                and any(k.arg == "return_agent" for k in value.keywords)):
            for target, kind in zip(getattr(node.targets[0], "elts", []), ("lllm.Message", "lllm.Agent")):
                if isinstance(target, ast.Name):
                    self.instances[target.id] = kind
            return
        for target in node.targets:
            if isinstance(target, ast.Name):
                if t:
                    self.instances[target.id] = t
                else:
                    self.instances.pop(target.id, None)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        owner = self._type(node.value) or self._callable(node.value)
        if owner and node.attr not in _SKIP_ATTRS:
            self.found.add(f"{owner}.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        keywords = [k.arg for k in node.keywords if k.arg]
        fn = self._callable(node.func)
        if fn:
            self.found.update(f"{fn}({k}=)" for k in keywords)
        elif isinstance(node.func, ast.Name) and self.instances.get(node.func.id):
            self.found.update(f"{self.instances[node.func.id]}.__call__({k}=)" for k in keywords)
        elif isinstance(node.func, ast.Attribute):
            owner = self._type(node.func.value) or self._callable(node.func.value)
            if owner:
                self.found.update(f"{owner}.{node.func.attr}({k}=)" for k in keywords)
        self.generic_visit(node)


def scan(code: str) -> set[str]:
    """The lllm names one block of code uses (see the module docstring)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    scanner = _Scan()
    for stmt in tree.body:
        scanner.visit(stmt)
    return scanner.found


_REFERENCE = re.compile(r"^:::\s*([\w.]+)", re.M)


def reference_modules(text: str) -> set[str]:
    """`::: lllm.core.agent.Agent` lines of a reference page (mkdocstrings) -> {'lllm.core.agent.Agent'}."""
    return {m for m in _REFERENCE.findall(text) if m.startswith("lllm")}
