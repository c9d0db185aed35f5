"""docs/guide/sandbox.md: the examples of "Packages" and "Sandboxes that outlive a call" run as written, against
real containers and a package index on loopback that serves the guide's `lllm-demo-greeting`."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import guide_runner
from package_index import LocalIndex, make_wheel

pytestmark = pytest.mark.docker

GUIDE = guide_runner.GUIDE / "sandbox.md"  # its own runner: these sections need a package index it starts


def _section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def _blocks(title: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(title), flags=re.S)


@pytest.fixture
def greeting_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    wheel = make_wheel(tmp_path, "lllm-demo-greeting", "1.0",
                       {"lllm_demo_greeting/__init__.py": "def hello():\n    return 'hello from a wheel'\n"})
    index = LocalIndex(tmp_path / "index", [wheel])
    monkeypatch.setenv("PIP_INDEX_URL", index.simple)  # the host's pip configuration, as the guide says
    yield index
    index.close()


def _run(block: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(GUIDE), "exec"), {"__name__": "guide_sandbox"})
    return out.getvalue()


def test_the_packages_examples_run(sandbox_image: str, greeting_index: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLLM_SANDBOX_IMAGE", sandbox_image)
    build, relay = _blocks("Packages", "python")
    assert _run(build).strip() == "hello from a wheel"
    assert "hello from a wheel" in _run(relay)


def test_the_outlive_examples_run(sandbox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLLM_SANDBOX_IMAGE", sandbox_image)
    (example,) = _blocks("Sandboxes that outlive a call", "python")
    assert _run(example).strip() == "['first', 'second']"


def test_the_config_blocks_of_the_guide_are_valid() -> None:
    from lllm.tools.code import ProxyConfig

    for title in ("Packages", "Sandboxes that outlive a call"):
        for block in _blocks(title, "yaml"):
            ProxyConfig.model_validate(yaml.safe_load(block)["proxy"])
