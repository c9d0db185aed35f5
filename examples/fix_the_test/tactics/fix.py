"""The fix_the_test tactic: one coder, one dialog, as many tool turns as it needs."""

from lllm import Tactic


class FixTheTest(Tactic):
    name = "fix_the_test"
    agent_group = ["coder"]

    def call(self, task: str, **kwargs) -> str:
        coder = self.agents["coder"]
        coder.open("fix")
        coder.receive(task)
        return coder.respond().content
