"""The `ci:` agent config block: a `run_tests` tool over the agent's own sandbox.

```yaml
agent_configs:
  - name: coder
    proxy: {activate_proxies: []}         # run_python, and the sandbox both tools share
    ci: {path: project, source: ./my_project, shards: 1, timeout: 300}
```

`run_tests(nodeid="")` runs pytest on the folder `path` of the agent's sandbox workspace (the sandbox of its
`proxy:` block when it has one, so what `run_python` edits is what gets tested; else a sandbox of this block's
own), and returns a compact summary: the totals and the first failures, within `max_output_chars`. The whole
report goes to the log as a `TestRunRecord`. `source:` is a host folder copied to `path` before the first run
(relative to the working directory). Keys: `path` (default `.`), `source`,
`shards` (pytest processes at once in the sandbox, splitting the tests), `timeout` (seconds per run, default
300), `test_timeout` (per test), `pytest_args` (a list), `max_output_chars` (default 4000), `failures`
(how many failures the summary shows, default 5).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lllm.errors import ConfigError, UsageError

__all__ = ["CIConfig", "CITools", "attach"]


class CIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "."
    source: str | None = None
    shards: int = Field(default=1, ge=1, le=16)
    timeout: float = Field(default=300.0, gt=0)
    test_timeout: float | None = Field(default=None, gt=0)
    pytest_args: list[str] = Field(default_factory=list)
    max_output_chars: int = Field(default=4000, ge=200)
    failures: int = Field(default=5, ge=1)


class CITools:
    """What `attach` gives one agent (`agent.ci_tools`): its sandbox (shared with `proxy:` when there is one) and
    the last report."""

    def __init__(self, config: CIConfig, agent: Any, *, tracer: Any, source: Path | None) -> None:
        self.config = config
        self.agent = agent
        self.tracer = tracer
        self.source = source
        self.last_report: Any = None
        self._own_sandbox: Any = None
        self._uploaded = False
        self._lock = threading.Lock()

    def sandbox(self) -> Any:
        proxy_tools = getattr(self.agent, "proxy_tools", None)
        if proxy_tools is not None:
            return proxy_tools.ensure_sandbox()
        if self._own_sandbox is None:
            from lllm.sandbox.docker import DockerSandbox

            sandbox = DockerSandbox(agent=self.agent.name, tracer=self.tracer)
            sandbox.start()
            self._own_sandbox = sandbox
        return self._own_sandbox

    def _upload_source(self, sandbox: Any) -> None:
        if self.source is None or self._uploaded:
            return
        from lllm.ci.runner import stage_project

        with tempfile.TemporaryDirectory(prefix="lllm-ci-tool-") as staging:
            staged = Path(staging) / "project"
            stage_project(self.source, staged)
            sandbox.upload(staged, self.config.path)
        self._uploaded = True

    def run(self, nodeid: str = "") -> str:
        """Run the tests (those of `nodeid`, when given) and return the summary the model reads."""
        from lllm.ci.render import render_summary
        from lllm.ci.runner import report_from_runs, run_in_sandbox
        from lllm.records import REPORT_CHARS, TestRunRecord, cap

        selection = [part for part in nodeid.split() if part]
        for part in selection:
            if part.startswith("-"):
                raise UsageError(f"run_tests: {part!r} is not a node id (node ids look like tests/test_x.py::test_y); "
                                 "options cannot be passed")
        cfg = self.config
        with self._lock:
            sandbox = self.sandbox()
            self._upload_source(sandbox)
            started = time.monotonic()
            deadline = started + cfg.timeout
            args = [*cfg.pytest_args, *selection]
            runs: list[Any] = [None] * cfg.shards

            def one(index: int) -> None:
                runs[index] = run_in_sandbox(sandbox, cwd=cfg.path, pytest_args=args, shard=index, shards=cfg.shards,
                                             test_timeout=cfg.test_timeout, deadline=deadline)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(cfg.shards)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report = report_from_runs(cfg.path, runs, image=getattr(sandbox, "image", "") or "", pytest_args=args,
                                      wall_s=time.monotonic() - started)
            self.last_report = report
        summary = render_summary(report, max_chars=cfg.max_output_chars, failures=cfg.failures)
        (self.tracer or (lambda record: None))(TestRunRecord(
            agent=self.agent.name, path=cfg.path, selection=nodeid or None, exit_code=report.exit_code,
            passed=report.totals.get("passed", 0), failed=report.totals.get("failed", 0),
            errors=report.totals.get("error", 0), total=report.totals.get("total", 0), duration_s=report.wall_s,
            summary=cap(summary), report=cap(report.model_dump_json(), REPORT_CHARS)))
        return summary

    def close(self) -> None:
        if self._own_sandbox is not None:
            self._own_sandbox.close()
            self._own_sandbox = None


def attach(agent: Any, block: dict[str, Any], ctx: Any = None) -> CITools:
    """Give `agent` the `run_tests` tool its `ci:` block asks for (see the module docstring).

    Raises:
        ConfigError: the block is invalid, or `source` is not a folder.
    """
    try:
        cfg = CIConfig.model_validate(block or {})
    except ValidationError as exc:
        problems = "; ".join(f"ci.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r:.80})"
                             for e in exc.errors()[:5])
        raise ConfigError(f"agent {agent.name!r}: bad ci block: {problems}", key="ci") from None
    source = None
    if cfg.source is not None:
        source = Path(cfg.source).expanduser().resolve()
        if not source.is_dir():
            raise ConfigError(f"agent {agent.name!r}: ci.source {cfg.source!r} is not a folder (looked at "
                              f"{str(source)!r}); give the folder of the project to copy into the sandbox",
                              key="ci.source")
    tracer = getattr(ctx, "tracer", None) or agent.tracer
    tools = CITools(cfg, agent, tracer=tracer, source=source)
    agent.ci_tools = tools
    agent.add_cleanup(tools.close)
    from lllm.core.prompt import Function

    def run_tests(nodeid: str = "") -> str:
        return tools.run(nodeid)

    agent.tools.append(Function.from_callable(
        run_tests,
        description=f"Run the project's pytest suite (folder {cfg.path!r} of your sandbox's workspace) and get the "
                    "totals and the first failures with their tracebacks. Give node ids to run only some tests.",
        prop_desc={"nodeid": "node ids or files to run, separated by spaces (tests/test_x.py::test_y); empty: all"}))
    return tools
