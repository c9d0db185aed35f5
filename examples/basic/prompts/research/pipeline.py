"""Prompts of the research pipeline (a nested folder: discovery walks prompts/ recursively)."""

from lllm import DefaultTagParser, Prompt

planner_system = Prompt(
    path="pipeline/planner_system",
    prompt=(
        "You are a careful planner. Break tasks into small, checkable steps and name the risks. "
        "Format each step as <step>description</step> and each risk as <risk>description</risk>."
    ),
    parser=DefaultTagParser(xml_tags=["step", "risk"]),
)

planner_prompt = Prompt(
    path="pipeline/planner",
    prompt="""
Create a plan for: {task}
Format each step as <step>description</step>
Format each risk as <risk>description</risk>
""",
    parser=DefaultTagParser(xml_tags=["step", "risk"]),
)

executor_system = Prompt(
    path="pipeline/executor",
    prompt="You execute one plan step at a time and report the outcome in one or two sentences.",
)

analyst_system = Prompt(
    path="research/analyst",
    prompt="You are a research analyst. Weigh evidence for and against each hypothesis you are given.",
)
