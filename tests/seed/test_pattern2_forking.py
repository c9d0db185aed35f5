"""Seed lesson, Pattern 2 (dialog forking for hypothesis exploration), run as written.

The tactic below is the lesson's code, verbatim. The test supplies what it implies: the example package's
`research/hypothesis` config (an `analyst` agent) and a scripted model. It checks what the lesson says
happens: every branch is forked from the same base and sees none of the others, and the synthesis happens
in the base dialog, which holds none of the branches' messages.
"""

from __future__ import annotations

from pathlib import Path

from lllm import get_default_runtime, load_package, resolve_config
from lllm.logging import sqlite_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"

# ---- the lesson's code, as written ------------------------------------------------------------------------
from lllm import Tactic
from lllm.invokers import build_invoker
from lllm import Agent, Prompt

class HypothesisTactic(Tactic):
    name = "hypothesis_explorer"
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
STEPS = [
    "Understood: Q3 revenue dropped 12% while costs were flat.",
    "Weak: web traffic and search interest stayed flat through Q3.",
    "Strong: the main competitor cut prices 15% in July, when our decline began.",
    "Weak: every order shipped on time; no stock-outs were recorded.",
    "The competitor's price cut is the strongest hypothesis.",
]


def test_pattern2_branches_fork_from_one_base_and_the_synthesis_is_in_the_base() -> None:
    load_package(EXAMPLE)
    config = resolve_config("research/hypothesis")
    config["invoker_config"] = {"steps": STEPS}
    store = sqlite_store(":memory:")
    tactic = HypothesisTactic(config, log_store=store)
    assert get_default_runtime().tactics["hypothesis_explorer"] is HypothesisTactic

    session = tactic("Q3 revenue dropped 12% while costs were flat.", hypotheses=HYPOTHESES, return_session=True)

    assert session.delivery == "The competitor's price cut is the strongest hypothesis."
    invoker = tactic.llm_invoker
    invoker.assert_complete()  # one base turn, one per hypothesis, one synthesis: no more, no less
    requests = [call.messages for call in invoker.calls]
    base_prefix = requests[0] + [{"role": "assistant", "content": STEPS[0]}]
    for i, hypothesis in enumerate(HYPOTHESES):
        branch = requests[1 + i]
        # forked from the base: its history is the base's three messages, then its own question only
        assert [m["content"] for m in branch[:3]] == [m["content"] for m in base_prefix]
        assert branch[3]["content"] == f"Now evaluate this hypothesis: {hypothesis}"
        assert len(branch) == 4  # no other branch's question or answer leaked in
    synthesis = requests[-1]
    assert [m["content"] for m in synthesis[:3]] == [m["content"] for m in base_prefix]
    assert len(synthesis) == 4 and synthesis[3]["content"].startswith("Given these evaluations:\n- demand fell: Weak")
    assert "Which hypothesis is strongest?" in synthesis[3]["content"]

    # the dialog tree: the base holds the synthesis, the (closed) branches are its children
    analyst = session.agents["analyst"]
    assert list(analyst.dialogs) == ["base"]
    base = analyst.dialogs["base"]
    assert [m.role.value for m in base.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert [c.name for c in base.children] == ["branch_0", "branch_1", "branch_2"]
    assert all(c.split_point == 3 and c.parent is base for c in base.children)
    assert [c.messages[-1].content for c in base.children] == STEPS[1:4]

    # and the log store holds the same tree
    (row,) = store.load_session(session.session_id).dialogs
    tree = row.to_dialog()
    assert row.alias == "base" and [c.name for c in tree.children] == ["branch_0", "branch_1", "branch_2"]
    assert store.get_session(session.session_id).model_calls == 5
