"""Seed lesson, Pattern 2 (dialog forking) over run_python: the dialog forks fork the kernel too.

The lesson's HypothesisTactic, verbatim, with an analyst whose `proxy:` block runs code in a Docker sandbox.
The base dialog builds a DataFrame and a list in the kernel; each hypothesis branch changes them; the
synthesis, back in the base, runs code again. Each branch must see the base's variables and none of its
siblings' changes, and the base none of the branches' (the scripted model reads what run_python returned).
"""

from __future__ import annotations

from typing import Any

import pytest

from lllm import Agent, Prompt, Tactic  # noqa: F401 - the lesson's imports
from lllm.invokers import build_invoker  # noqa: F401
from lllm.invokers import override
from lllm.invokers.scripted import ScriptedInvoker
from lllm.logging import sqlite_store

pytestmark = pytest.mark.docker


# ---- the lesson's code, as written ------------------------------------------------------------------------
class HypothesisTactic(Tactic):
    name = "hypothesis_explorer_kernel"
    agent_group = ["analyst"]

    def call(self, task: str, hypotheses: list[str], **kwargs) -> str:
        analyst = self.agents["analyst"]

        # Establish shared context
        analyst.open("base")
        analyst.receive(f"Background context: {task}")
        analyst.respond() # model acknowledges / asks clarifying questions

        results = {}
        for i, hypothesis in enumerate(hypotheses):
            # Fork from the shared base — each branch is independent
            analyst.fork("base", f"branch_{i}")
            analyst.receive(f"Now evaluate this hypothesis: {hypothesis}")
            results[hypothesis] = analyst.respond().content
            analyst.close(f"branch_{i}") # clean up

        # Synthesize: bring everything back to base and decide
        analyst.switch("base")
        summary = "\n".join(f"- {h}: {r[:80]}..." for h, r in results.items())
        analyst.receive(f"Given these evaluations:\n{summary}\n\nWhich hypothesis is strongest?")
        return analyst.respond().content
# ------------------------------------------------------------------------------------------------------------

HYPOTHESES = ["demand fell", "a competitor cut prices", "the supply chain broke"]
BASE_CELL = ("import pandas as pd\ndf = pd.DataFrame({'revenue': [100.0, 88.0]})\nseen = []\n"
             "def columns():\n    return sorted(df.columns)\nprint('base ready', columns())")


def run_python(code: str) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"name": "run_python", "arguments": {"code": code}}]}


def branch_cell(i: int) -> str:
    return f"seen.append({i})\ndf['h{i}'] = {i}\nprint('branch {i}', seen, columns())"


def test_each_branch_sees_the_base_kernel_and_none_of_its_siblings(sandbox_image: str, tmp_path) -> None:
    steps: list[Any] = [run_python(BASE_CELL), "Understood."]
    for i in range(len(HYPOTHESES)):
        steps += [run_python(branch_cell(i)), f"Evaluated hypothesis {i}."]
    steps += [run_python("print('synthesis', seen, columns())"), "The competitor's price cut."]
    config = {
        "global": {"model_name": "gpt-4o"},
        "workdir": str(tmp_path / "runs"),
        "agent_configs": [{"name": "analyst", "system_prompt": "You analyse revenue.",
                           "proxy": {"exec_env": "interpreter", "timeout": 60,
                                     "sandbox": {"image": sandbox_image}}}],
    }
    with override(ScriptedInvoker(steps)) as script:
        tactic = HypothesisTactic(config, log_store=sqlite_store(":memory:"))
        session = tactic("Q3 revenue dropped 12%.", hypotheses=HYPOTHESES, return_session=True)
    assert session.state == "ok", session.error
    assert session.delivery == "The competitor's price cut."

    tool_results = [m["content"] for call in script.calls for m in call.messages[-1:] if m["role"] == "tool"]
    assert "base ready ['revenue']" in tool_results[0]
    for i in range(len(HYPOTHESES)):
        # the base's variables and functions, this branch's change, none of its siblings'
        assert f"branch {i} [{i}] ['h{i}', 'revenue']" in tool_results[1 + i], tool_results[1 + i]
    assert "synthesis [] ['revenue']" in tool_results[-1], tool_results[-1]

    # each branch had its own notebook, and nothing of them is left running
    notebooks = sorted(p.name for p in (tmp_path / "runs").rglob("*.ipynb"))
    assert notebooks == ["analyst.branch_0.ipynb", "analyst.branch_1.ipynb", "analyst.branch_2.ipynb",
                         "analyst.ipynb"], notebooks
