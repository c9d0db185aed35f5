"""docs/guide/proxies.md: its YAML blocks are valid `proxy:` blocks and its Python blocks run as written."""

from __future__ import annotations

from pathlib import Path

import yaml

import guide_runner
from lllm.tools.code import ProxyConfig
from lllm.proxies.gateway import GatewayLimits

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "proxies.md"


def blocks(lang: str) -> list[str]:
    return [block.code for block in guide_runner.blocks(PAGE.name, lang)]


def test_the_yaml_blocks_are_valid_proxy_blocks() -> None:
    found = blocks("yaml")
    assert len(found) == 2
    for text in found:
        cfg = ProxyConfig.model_validate(yaml.safe_load(text)["proxy"])
        GatewayLimits(**cfg.gateway)
    first = ProxyConfig.model_validate(yaml.safe_load(found[0])["proxy"])
    assert first.budgets["fmp"].calls == 500 and first.budgets["exa"].calls is None


def test_the_python_blocks_run_and_print_what_their_comments_say() -> None:
    guide_runner.run_blocks(PAGE.name, test=__file__)  # checks each `print(...)  # expected` line
