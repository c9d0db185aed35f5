"""The research tactic: one analyst, one dialog, as many run_python turns as the analyst needs."""

from lllm import Tactic


class ResearchTactic(Tactic):
    name = "research"
    agent_group = ["research_analyst"]

    def call(self, task: str, **kwargs) -> str:
        analyst = self.agents["research_analyst"]
        analyst.open("research")
        analyst.receive(task)
        return analyst.respond().content
