"""Every example package in examples/ is run by the tests: each of its configs is named by a test (or by the code a
test runs, like `lllm demo`), and each builds its tactic. A new example, or a new config of one, without a test
that runs it fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lllm.core.runtime import Runtime, build_tactic

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "examples").glob("*/lllm.toml"))
RUNNERS = {
    "research": [ROOT / "lllm" / "demo.py"],  # `lllm demo` runs it (tests/sandbox/test_demo.py)
    "fix_the_test": [ROOT / "examples" / "fix_the_test" / "run.py"],  # tests/ci/test_ci_tool.py runs its run.py
}
"""Code that runs a package's configs on a test's behalf."""


def _texts() -> str:
    files = [p for p in (ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name]
    files += [p for runners in RUNNERS.values() for p in runners]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def _configs(package: Path) -> list[str]:
    runtime = Runtime(f"examples-{package.name}")
    runtime.load_package(package)
    return sorted(k for k, _ in runtime.iter_items("config") if "::" not in k)


def test_there_are_example_packages() -> None:
    assert {p.name for p in PACKAGES} >= {"basic", "research"}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_config_of_every_example_is_run_by_a_test(package: Path) -> None:
    texts = _texts()
    assert re.search(rf"examples[\"' /]+(?:\" / \")?{package.name}\b", texts), f"no test uses examples/{package.name}"
    unnamed = [c for c in _configs(package) if not re.search(rf"[\"']{re.escape(c)}[\"']", texts)]
    assert unnamed == [], f"configs of examples/{package.name} that no test runs"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_config_of_every_example_builds(package: Path) -> None:
    """A config whose tactic the package declares builds it; the others (a base, a seed pattern whose tactic its
    test defines) are checked complete."""
    from lllm.core._configfile import validate_tactic_config

    runtime = Runtime(f"examples-build-{package.name}")
    runtime.load_package(package)
    built = 0
    for name in _configs(package):
        config = runtime.get_config(name)
        validate_tactic_config(config)
        kind = config.get("tactic_type")
        if kind and runtime.tactics.get(kind) is not None:  # else a test defines the tactic (the seed's patterns)
            assert build_tactic(config, runtime=runtime).agent_specs, name
            built += 1
    assert built, f"examples/{package.name} has no config that names its tactic"
