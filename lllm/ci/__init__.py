"""lllm.ci: a project's pytest suite in sandboxes with no network (`lllm test`), and the `run_tests` tool's
engine. Names load lazily.

- `run_tests(path, *, shards=1, image=None, pytest_args=(), timeout=...) -> TestReport`: fresh sandboxes, one
  per shard (`lllm.ci.runner`).
- `run_in_sandbox(sandbox, cwd=...)`: pytest in a sandbox you already have (the agent tool uses it).
- `TestReport`, `TestResult`, `ShardReport`: the report, the same data as `lllm test --json` (`lllm.ci.report`).
- `render_text(report)`, `render_summary(report, max_chars=)`, `to_junit(report)`: views of a report
  (`lllm.ci.render`).
"""

from __future__ import annotations

from lllm._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "ShardReport": "lllm.ci.report",
    "TestReport": "lllm.ci.report",
    "TestResult": "lllm.ci.report",
    "render_summary": "lllm.ci.render",
    "render_text": "lllm.ci.render",
    "report_from_runs": "lllm.ci.runner",
    "run_in_sandbox": "lllm.ci.runner",
    "run_tests": "lllm.ci.runner",
    "to_junit": "lllm.ci.render",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr("lllm.ci", _EXPORTS, globals())


def __dir__() -> list[str]:
    return __all__
