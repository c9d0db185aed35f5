"""The one runner of the user guide's examples: the ```python blocks of docs/guide/*.md, run as written.

A page says which test runs its blocks with an HTML comment (not shown on the rendered page):
    <!-- guide-test: tests/sandbox/test_guide_sandbox.py -->
at its top, and again before a section when another test runs the blocks from there on (the sandbox page's
package sections need a package index the test starts, for instance). A block that is shown but never run says
so, and why, on the line before it:
    <!-- guide: no-run (it needs a model provider's key) -->
`tests/unit/test_guide_pages.py` checks every page: each ```python block is either run by the test its page
names (which exists and calls this runner for that page) or marked no-run with a reason.

`run_blocks(page, test=__file__)` runs the blocks assigned to the calling test, in order, in one namespace,
with stdout captured; a line `print(...)  # text` must print `text` (so a page shows what its example prints,
and the test holds it to that). Tests with needs of their own (a fake server's address in place of the page's)
use `blocks(page)` and run them their own way.

Pages about the host-side library (quick start, agents, prompts, tools, tactics, packages, the log, computer use)
are run as a reader would run them: `run_in_fresh_process(page, test=__file__, cwd=tmp)` runs the test's blocks in
a new Python process (`python tests/guide_runner.py PAGE.md TEST`), in an empty working folder, on the scripted
model: the invoker `litellm` (what `Tactic.quick` and a config without `invoker:` build) is replaced by a
cooperative stand-in for a provider (`respond`: it calls the tool offered with arguments made from its schema,
answers a `format=` with JSON that validates, and otherwise writes a short text with every `<tag>` the prompt asks
for). A block that configures a scripted model of its own (`invoker: scripted`, `override(...)`) gets that one.
Their `print(...)  # ...` comments explain rather than quote, so that run does not hold them to it. A page that
needs the Docker engine or Chromium says so anywhere on it (`<!-- guide: needs docker -->`, `needs browser`);
`needs(page)` reads it, and the test asks for the matching fixture (which fails, never skips, in CI).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide"
_FENCE = re.compile(r"^```(\w*)\s*$")
_TEST = re.compile(r"^<!--\s*guide-test:\s*(\S+)\s*-->\s*$")
_NO_RUN = re.compile(r"^<!--\s*guide:\s*no-run\s*(.*?)\s*-->\s*$")
_EXPECT = re.compile(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$")
_NEEDS = re.compile(r"<!--\s*guide:\s*needs\s+(\w+)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block of a guide page."""

    page: str
    lang: str
    line: int
    """1-based line of its opening fence."""
    code: str
    section: str
    """The `## ` heading it is under ('' before the first)."""
    test: str | None
    """The test file that runs it (the nearest `guide-test` comment above it)."""
    run: bool
    """False when marked no-run."""
    why_not: str = ""


def pages() -> list[Path]:
    return sorted(GUIDE.glob("*.md"))


def blocks(page: str, lang: str | None = "python") -> list[Block]:
    """The page's fenced blocks of `lang` (every language when None), in order."""
    lines = (GUIDE / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    test: str | None = None
    section = ""
    no_run: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := _TEST.match(line):
            test = match.group(1)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif match := _NO_RUN.match(line):
            no_run = match.group(1).strip("() ") or "?"
            i += 1
            continue
        elif match := _FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            code = "\n".join(lines[i + 1:end]) + "\n"
            if lang is None or match.group(1) == lang:
                found.append(Block(page, match.group(1), i + 1, code, section, test, no_run is None,
                                   no_run or ""))
            no_run = None
            i = end + 1
            continue
        if line.strip():
            no_run = None  # the mark belongs to the block right after it
        i += 1
    return found


def needs(page: str) -> set[str]:
    """What the page's examples need besides Python: {"docker", "browser"} (its `<!-- guide: needs X -->` marks)."""
    return set(_NEEDS.findall((GUIDE / page).read_text(encoding="utf-8")))


def run_blocks(page: str, *, test: str | None = None, namespace: dict[str, Any] | None = None,
               replace: dict[str, str] | None = None, check_prints: bool = True) -> tuple[dict[str, Any], str]:
    """Run the page's runnable ```python blocks (those of `test`, a test file's path or `__file__`, when given)
    in order, in one namespace; return it and what they printed. `print(...)  # text` lines are checked unless
    `check_prints` is False."""
    scope: dict[str, Any] = namespace if namespace is not None else {"__name__": f"guide_{Path(page).stem}"}
    mine = _relative(test) if test else None
    printed = io.StringIO()
    ran = 0
    for block in blocks(page):
        if not block.run or (mine is not None and block.test != mine):
            continue
        code = block.code
        for old, new in (replace or {}).items():
            code = code.replace(old, new)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/guide/{page}:{block.line}", "exec"), scope)
        expected = [m.group(1) for m in map(_EXPECT.match, block.code.splitlines()) if m]
        if expected and check_prints:
            assert out.getvalue().splitlines() == expected, (f"docs/guide/{page}:{block.line} printed",
                                                             out.getvalue().splitlines(), "not", expected)
        printed.write(out.getvalue())
        ran += 1
    assert ran, f"no runnable block of docs/guide/{page} belongs to {mine or 'any test'}"
    return scope, printed.getvalue()


def _relative(test: str) -> str:
    path = Path(test)
    return str(path.resolve().relative_to(ROOT)) if path.is_absolute() else str(path)


# -- a page in a fresh process, on the guide's stand-in model ---------------------------------------------------

TEXT = "Scripted answer."
_PAIRED = re.compile(r"<([A-Za-z_][\w\-]*)>")


def run_in_fresh_process(page: str, *, test: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the blocks of `page` that `test` runs in a new Python process, in `cwd` (made HOME too), with
    discovery on as for a reader (LLLM_AUTO_INIT unset), on the stand-in model (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "LLLM_AUTO_INIT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["HOME"] = str(cwd)
    return subprocess.run([sys.executable, __file__, str(GUIDE / page), _relative(test)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _value(name: str, schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    if depth > 6:
        return None
    if "$ref" in schema:
        return _value(name, defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _value(name, options[0], defs, depth + 1)
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: _value(k, v, defs, depth + 1) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [_value(name, schema.get("items", {"type": "string"}), defs, depth + 1)]
    if kind == "integer":
        return 7
    if kind == "number":
        return 7.5
    if kind == "boolean":
        return True
    if "city" in name.lower():
        return "Paris"
    if "code" in name.lower():
        return "print(6 * 7)"
    return f"example {name}"


def respond(messages: list[dict[str, Any]], call: Any = None) -> Any:
    """One step of the guide's stand-in model (see the module docstring)."""
    tools = [t for t in (getattr(call, "tools", None) or []) if t.get("type") == "function"]
    last = messages[-1] if messages else {}
    if tools and last.get("role") == "user":
        fn = tools[0]["function"]
        params = fn.get("parameters") or {}
        props, defs = params.get("properties") or {}, params.get("$defs") or {}
        args = {k: _value(k, props[k], defs) for k in params.get("required") or [] if k in props}
        return {"content": None, "tool_calls": [{"name": fn["name"], "arguments": args}]}
    fmt = getattr(call, "response_format", None)
    if fmt is not None:
        schema = fmt.model_json_schema()
        return json.dumps(_value("output", schema, schema.get("$defs", {})))
    asked = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") in ("system", "user"))
    parts = [TEXT]
    for tag in dict.fromkeys(_PAIRED.findall(asked)):
        if f"</{tag}>" in asked:
            parts.append(f"<{tag}>example</{tag}>")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    """`python tests/guide_runner.py PAGE.md [TEST]`: run the page's blocks (those TEST runs) on the stand-in model;
    exit 1 with the failing block's page line and traceback."""
    global GUIDE
    page = Path(argv[1]).resolve()
    GUIDE = page.parent
    from lllm.invokers import FunctionInvoker, register_invoker

    model = FunctionInvoker(respond)

    class GuideModel(FunctionInvoker):
        """What `{"invoker": "litellm", ...}` builds in the guide's examples: the stand-in model."""

        @classmethod
        def from_config(cls, options: dict[str, Any]) -> FunctionInvoker:  # type: ignore[override]
            return model

    register_invoker("litellm", GuideModel, replace=True)  # only provider-bound invokers: a scripted config keeps its script
    try:
        _, printed = run_blocks(page.name, test=argv[2] if len(argv) > 2 else None,
                                namespace={"__name__": "__main__"}, check_prints=False)
    except BaseException:  # noqa: BLE001 - the traceback names the block (docs/guide/PAGE:LINE), then fail
        traceback.print_exc()
        return 1
    sys.stdout.write(printed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
