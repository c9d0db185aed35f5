"""Seed lesson, Pattern 3 (a structured multi-step pipeline with pydantic), run as written.

The code below is the lesson's, verbatim. The test supplies the example package's `research/pipeline`
config (a planner whose system prompt carries the <step>/<risk> tag parser, and an executor) and a scripted
model, and checks what the lesson says: the `Plan` is built from the <step> and <risk> tags, and each step
is executed in its own dialog.
"""

from __future__ import annotations

from pathlib import Path

from lllm import load_package, resolve_config
from lllm.logging import sqlite_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"

# ---- the lesson's code, as written ------------------------------------------------------------------------
from pydantic import BaseModel
from lllm import Tactic, Prompt
from lllm.core.prompt import DefaultTagParser

class Plan(BaseModel):
    steps: list[str]
    risks: list[str]

class PipelineTactic(Tactic):
    name = "pipeline"
    agent_group = ["planner", "executor"]

    def call(self, task: str, **kwargs) -> str:
        planner = self.agents["planner"]
        executor = self.agents["executor"]

        # Stage 1: produce a structured plan
        planner.open("plan")
        planner.receive(task)
        plan_msg = planner.respond()

        # parse plan from XML tags
        steps = plan_msg.parsed["xml_tags"].get("step", [])
        risks = plan_msg.parsed["xml_tags"].get("risk", [])
        plan = Plan(steps=steps, risks=risks)

        # Stage 2: execute each step
        results = []
        for step in plan.steps:
            executor.open(f"step_{len(results)}")
            executor.receive(f"Execute: {step}")
            results.append(executor.respond().content)
            executor.close(f"step_{len(results) - 1}")

        return "\n".join(results)

planner_prompt = Prompt(
    path="pipeline/planner",
    prompt="""
Create a plan for: {task}
Format each step as <step>description</step>
Format each risk as <risk>description</risk>
""",
    parser=DefaultTagParser(xml_tags=["step", "risk"]),
)
# ------------------------------------------------------------------------------------------------------------

PLAN_ANSWER = (
    "Here is the plan.\n<step>Collect the Q3 invoices</step>\n<step>Reconcile them with the ledger</step>\n"
    "<step>Write the summary</step>\n<risk>Invoices may be missing</risk>"
)
EXECUTIONS = ["Collected 412 invoices.", "Reconciled: 3 mismatches found.", "Summary written."]


def test_pattern3_plan_from_tags_and_one_dialog_per_step() -> None:
    load_package(EXAMPLE)
    config = resolve_config("research/pipeline")
    config["invoker_config"] = {"steps": [PLAN_ANSWER, *EXECUTIONS]}
    store = sqlite_store(":memory:")
    tactic = PipelineTactic(config, log_store=store)

    session = tactic("Close the Q3 books", return_session=True)

    assert session.delivery == "\n".join(EXECUTIONS)
    tactic.llm_invoker.assert_complete()
    planner = session.agents["planner"]
    plan_msg = planner.dialogs["plan"].tail
    plan = Plan(steps=plan_msg.parsed["xml_tags"]["step"], risks=plan_msg.parsed["xml_tags"]["risk"])
    assert plan == Plan(steps=["Collect the Q3 invoices", "Reconcile them with the ledger", "Write the summary"],
                        risks=["Invoices may be missing"])
    requests = [call.messages for call in tactic.llm_invoker.calls]
    assert requests[0][-1] == {"role": "user", "content": "Close the Q3 books"}
    for i, step in enumerate(plan.steps):  # each step in a fresh dialog: system prompt + that step only
        assert [m["role"] for m in requests[1 + i]] == ["system", "user"]
        assert requests[1 + i][1]["content"] == f"Execute: {step}"
    assert session.agents["executor"].dialogs == {}  # every step dialog was closed ...
    logged = sorted((d.agent, d.alias) for d in store.load_session(session.session_id).dialogs)
    assert logged == [("executor", "step_0"), ("executor", "step_1"), ("executor", "step_2"), ("planner", "plan")]

    # the lesson's planner prompt: renders the task and parses the same tags
    text = planner_prompt(task="Close the Q3 books")
    assert "Create a plan for: Close the Q3 books" in text and "<step>description</step>" in text
    assert planner_prompt.parser(PLAN_ANSWER)["xml_tags"]["risk"] == ["Invoices may be missing"]
