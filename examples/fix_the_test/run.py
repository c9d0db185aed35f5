"""Run the example: `python examples/fix_the_test/run.py` prints the coder's last answer.

The coder is a scripted model (no provider, no key): `responder` reads what the tools returned and decides the
next step as a coding model would, in the order run_tests -> read the failure -> edit the file -> run_tests.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

FIX = """
import pathlib
for path in sorted(pathlib.Path("project").rglob("*.py")):
    text = path.read_text()
    if "def {name}(" in text and "return a - b" in text:
        path.write_text(text.replace("return a - b", "return a + b"))
        print("fixed", path)
"""


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"name": name, "arguments": arguments}]}


def responder(messages: list[dict[str, Any]]) -> Any:
    """The coder's next step, from the dialog so far."""
    tools_called = [call["function"]["name"] for m in messages if m["role"] == "assistant"
                    for call in (m.get("tool_calls") or [])]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if not tools_called:
        return _call("run_tests")
    last = results[-1] if results else ""
    if tools_called[-1] == "run_python":
        return _call("run_tests")
    if last.startswith("PASSED"):
        return f"The tests pass now. {last.splitlines()[0]}"
    # read the failure: which function gave the wrong answer ("where 0 = add(2, 2)")
    found = re.search(r"where \S+ = (\w+)\(", last)
    if found is None or tools_called.count("run_python") >= 2:
        return f"I could not fix it. Last test run:\n{last}"
    return _call("run_python", code=FIX.replace("{name}", found.group(1)))


def main(project: Path = HERE / "project", *, log_store: Any = None) -> str:
    """Run the tactic once on `project` (copied into the coder's sandbox; the host folder is not changed)."""
    from lllm.core.runtime import build_tactic, get_default_runtime, load_package
    from lllm.invokers import override
    from lllm.invokers.scripted import FunctionInvoker

    load_package(HERE)
    config = json.loads(json.dumps(get_default_runtime().get_config("fix")))
    config["agent_configs"][0]["ci"]["source"] = str(project)
    with override(FunctionInvoker(responder)):
        tactic = build_tactic(config, log_store=log_store)
        return tactic("Make the project's tests pass.")


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "project"))
