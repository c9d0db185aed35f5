"""The report of a test run: one `TestResult` per test, one `ShardReport` per sandbox, and the `TestReport`
that holds them (what `lllm.ci.run_tests` returns and `lllm test --json` writes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Outcome = Literal["passed", "failed", "error", "skipped", "xfail", "xpass"]
ShardStatus = Literal["ok", "timeout", "oom", "died", "error"]

TRACEBACK_CHARS = 4000
"""The most of a test's traceback a report keeps (the middle is cut)."""
MESSAGE_CHARS = 1000
BAD_OUTCOMES = ("failed", "error")
"""Outcomes that make a run fail (an xpass is a surprise, not a failure, as in pytest)."""


class TestResult(BaseModel):
    """One test: how it ended."""

    __test__ = False  # a pydantic model, not a test class

    nodeid: str
    outcome: Outcome
    duration_s: float = 0.0
    """Setup, call and teardown together."""
    message: str = ""
    """The one line that says why it failed, errored or was skipped (with the network note when it tried)."""
    traceback: str = ""
    """pytest's report of the failure, capped at `TRACEBACK_CHARS` (the middle cut)."""
    shard: int = 0


class NetworkAttempt(BaseModel):
    nodeid: str
    target: str
    """`host:port` the test tried to reach (the sandbox has no network, so it failed)."""


class ShardReport(BaseModel):
    """One sandbox of the run."""

    index: int
    status: ShardStatus = "ok"
    """`ok` (pytest ended by itself, whatever the tests did); `timeout` (the whole-run timeout ended it); `oom`
    (pytest was killed for memory at least once); `died` (the sandbox went away); `error` (pytest could not run)."""
    reason: str = ""
    """What happened to it, in words, when `status` is not `ok`."""
    exit_code: int | None = None
    """pytest's exit code (of its last run in this sandbox); None when it never ended by itself."""
    assigned: int = 0
    """How many tests this shard was given."""
    interrupted: list[str] = Field(default_factory=list)
    """The tests that were running when pytest was killed (timeout, memory, a test that would not stop)."""
    not_run: list[str] = Field(default_factory=list)
    """Tests given to this shard that never ran because it ended early."""
    restarts: int = 0
    """How many times pytest was started again in the same sandbox for the tests left after a kill."""
    wall_s: float = 0.0
    """From the sandbox's start to its removal."""
    cpu_s: float | None = None
    """CPU time of pytest and its children, as pytest's process reported it (None: it never said)."""
    max_rss_mb: float | None = None
    """The largest resident set of pytest or a child, as reported from inside."""
    memory_peak_mb: float | None = None
    """The sandbox's peak memory, read by the host from the container's cgroup (None where it cannot)."""


class TestReport(BaseModel):
    """A whole test run: the same data as `lllm test --json`."""

    __test__ = False

    path: str
    image: str = ""
    pytest_args: list[str] = Field(default_factory=list)
    exit_code: int = 0
    """0 only when every test passed (or was skipped/xfail/xpass) and the run itself went well; otherwise
    pytest's own code: 1 tests failed, 2 interrupted (a timeout, a sandbox that died), 3 internal error
    (setup failed), 4 usage error, 5 no tests collected."""
    reason: str = ""
    """Why the run did not pass, in one line, when it is not about single tests (no tests, a timeout, ...)."""
    tests: list[TestResult] = Field(default_factory=list)
    totals: dict[str, int] = Field(default_factory=dict)
    """Count per outcome, and `total`."""
    wall_s: float = 0.0
    shards: list[ShardReport] = Field(default_factory=list)
    setup_problems: list[str] = Field(default_factory=list)
    """What the run could not prepare (a requirement that cannot be installed, ...): the tests ran anyway."""
    network_attempts: list[NetworkAttempt] = Field(default_factory=list)
    tried_network: bool = False
    """True when any test tried to reach another host (it could not: the sandboxes have no network)."""
    output_tail: str = ""
    """The end of pytest's own output when it ended without results (a usage error, a crash)."""
    notes: list[str] = Field(default_factory=list)
    """What the host did besides running the tests: records dropped over caps, unreadable lines."""

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def failures(self) -> list[TestResult]:
        return [t for t in self.tests if t.outcome in BAD_OUTCOMES]

    def slowest(self, n: int = 5) -> list[TestResult]:
        return sorted(self.tests, key=lambda t: -t.duration_s)[:n]

    def durations(self) -> dict[str, float]:
        """{nodeid: seconds}: what `--shards` splits by on the next run."""
        return {t.nodeid: t.duration_s for t in self.tests}
