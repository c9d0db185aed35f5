"""The sentiment classifier: one agent, one turn, the <label> tag as the result."""

from lllm import Tactic


class SentimentTactic(Tactic):
    name = "sentiment"
    agent_group = ["classifier"]

    def call(self, task: str, **kwargs) -> str:
        classifier = self.agents["classifier"]
        classifier.open("classify")
        classifier.receive(task)
        answer = classifier.respond()
        return answer.parsed["xml_tags"]["label"][0]
