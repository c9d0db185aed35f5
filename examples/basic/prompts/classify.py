"""Prompts of the sentiment classifier."""

from lllm import DefaultTagParser, Prompt

classify_system = Prompt(
    path="classify/system",
    prompt=(
        "You are a sentiment classifier. Read the user's text and answer with exactly one label: "
        "<label>positive</label>, <label>negative</label> or <label>neutral</label>."
    ),
    parser=DefaultTagParser(xml_tags=["label"], required_xml_tags=["label"]),
)
