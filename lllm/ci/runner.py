"""Running a project's tests in sandboxes: `run_tests` (fresh sandboxes, one per shard) and `run_in_sandbox`
(the workspace of a sandbox you already have, for the `run_tests` tool).

In each sandbox pytest runs as a command beside the kernel (`Sandbox.run_command`), as
`python3 -c <the guest plugin> PYTEST_ARGS`; the plugin reports every test on the command's stdout
(`lllm.ci._guest_plugin`), read as it arrives (`lllm.ci._intake`). When pytest is killed before the end (the
sandbox's memory limit, a test that would not stop at its timeout) the tests it had not run yet are started
again in the same sandbox, so one bad test costs only itself; the whole-run timeout ends a shard for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lllm.ci import install
from lllm.ci._intake import GuestReader, GuestReport
from lllm.ci.report import NetworkAttempt, ShardReport, TestReport, TestResult
from lllm.errors import UsageError

__all__ = ["run_tests", "run_in_sandbox", "report_from_runs", "DEFAULT_TIMEOUT", "load_previous"]

DEFAULT_TIMEOUT = 900.0
"""Seconds for the whole run (sandboxes started, tests run) unless `timeout=` says otherwise."""
PROJECT_DIR = "project"
"""Where the project is copied in each sandbox's workspace."""
HUNG_EXIT = 70  # the guest plugin's exit code when a test ignored its timeout
MAX_RESTARTS = 50
SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox",
                "node_modules", ".eggs", ".venv", ".lllm-ci"}
DEFAULT_PYTEST_ARGS = ("--continue-on-collection-errors", "-p", "no:cacheprovider", "-q", "--tb=short")
"""Given before yours (yours win): a module that fails to import costs its own tests, not the run's; nothing is
written back into the project; short tracebacks."""


def _guest_source() -> str:
    return (Path(__file__).parent / "_guest_plugin.py").read_text(encoding="utf-8")


# -- the project, staged once for every shard -------------------------------------------------------------------
def stage_project(path: Path, dest: Path) -> list[str]:
    """Copy the project into `dest` without version-control folders, caches and virtual environments (a folder
    with `pyvenv.cfg`); links are left out (a sandbox takes only files and folders). Returns notes."""
    skipped_links: list[str] = []

    def ignore(folder: str, names: list[str]) -> set[str]:
        out = set()
        for name in names:
            full = os.path.join(folder, name)
            if os.path.islink(full):
                skipped_links.append(os.path.relpath(full, path))
                out.add(name)
            elif name in SKIPPED_DIRS or name.endswith(".pyc") or (
                    os.path.isdir(full) and os.path.exists(os.path.join(full, "pyvenv.cfg"))):
                out.add(name)
            elif not (os.path.isdir(full) or os.path.isfile(full)):
                out.add(name)
        return out

    shutil.copytree(path, dest, ignore=ignore, symlinks=True)
    if skipped_links:
        shown = ", ".join(skipped_links[:5]) + (" ..." if len(skipped_links) > 5 else "")
        return [f"{len(skipped_links)} symbolic link(s) were not copied into the sandbox: {shown}"]
    return []


# -- one shard ----------------------------------------------------------------------------------------------------
@dataclass
class ShardRun:
    """What running pytest in one sandbox gave (possibly over several pytest processes)."""

    shard: ShardReport
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    collect_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    network: list[tuple[str, str]] = field(default_factory=list)
    collected: int | None = None
    tail: str = ""
    dropped: int = 0
    end_codes: list[int] = field(default_factory=list)
    skipped_by_pytest: int = 0
    """Tests collected for this shard that pytest itself did not run (`-x` after a failure, `--collect-only`)."""


def _alive(sandbox: Any) -> bool:
    status = getattr(sandbox, "exit_status", None)
    try:
        return status is None or status() is None
    except Exception:  # noqa: BLE001 - cannot tell: take it as gone
        return False


def run_in_sandbox(sandbox: Any, *, cwd: str = ".", pytest_args: Sequence[str] = (), shard: int = 0,
                   shards: int = 1, durations: dict[str, float] | None = None, test_timeout: float | None = None,
                   deadline: float | None = None) -> ShardRun:
    """Run pytest in `sandbox` (started), in `cwd` under its workspace, as shard `shard` of `shards`.

    The sandbox is left as it is (running) for the caller to close. Never raises for what the tests did.
    """
    run = ShardRun(ShardReport(index=shard))
    source = _guest_source()
    argv = ["python3", "-c", source, *DEFAULT_PYTEST_ARGS, *pytest_args]
    keep: list[str] | None = None
    assigned: list[str] | None = None
    ended_by_itself = False
    started_at = time.monotonic()
    while True:
        nonce = secrets.token_hex(8)
        settings = {"nonce": nonce, "shard": shard, "shards": shards, "durations": durations or {},
                    "keep": keep, "test_timeout": test_timeout}
        reader = GuestReader(nonce)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            result = None
        else:
            result = sandbox.run_command(argv, cwd=cwd, timeout=remaining, stdin=json.dumps(settings),
                                         env={"PYTHONDONTWRITEBYTECODE": "1"}, on_stdout=reader.feed)
        got = reader.close()
        if assigned is None and got.assigned is not None:
            assigned, run.collected = got.assigned, got.collected
        _merge(run, got)
        running = got.hung or got.running
        if result is None or result.status == "timeout":
            run.shard.status = "timeout"
            run.shard.reason = "the whole-run timeout ended this shard"
            if running:
                run.shard.interrupted.append(running)
                _set(run, running, "error", "interrupted: it was running when the whole-run timeout ended the shard")
            break
        if got.end is not None and not (result.status == "oom" or got.hung):
            ended_by_itself = True
            run.end_codes.append(got.end["exitstatus"])
            run.shard.exit_code = got.end["exitstatus"]
            if got.end.get("cpu_s") is not None:
                run.shard.cpu_s = round((run.shard.cpu_s or 0.0) + got.end["cpu_s"], 3)
            if got.end.get("max_rss_kb") is not None:
                rss = got.end["max_rss_kb"] / 1024
                run.shard.max_rss_mb = round(max(run.shard.max_rss_mb or 0.0, rss), 1)
            break
        if assigned is None:  # pytest ended before it had collected anything
            if result.status != "oom" and result.exit_code in (3, 4):  # pytest's internal and usage errors
                run.shard.exit_code = result.exit_code
            else:
                run.shard.status = "oom" if result.status == "oom" else "error"
                run.shard.reason = _ended(result, got, test_timeout, sandbox)
            run.tail = (run.tail + got.tail + result.stderr[-2000:])[-4000:]
            break
        # pytest was killed mid-run: the test it was running pays, the rest run again in the same sandbox
        reason = _ended(result, got, test_timeout, sandbox)
        if result.status == "oom":
            run.shard.status = "oom"
            run.shard.reason = "pytest was killed for memory (the sandbox's limit); the tests after it ran again"
        if running:
            run.shard.interrupted.append(running)
            _set(run, running, "failed" if got.hung else "error", reason)
        left = [n for n in assigned if n not in run.results]
        if not left:
            break
        if not _alive(sandbox) or run.shard.restarts >= MAX_RESTARTS or (not running and not got.results):
            run.shard.status = "died" if not _alive(sandbox) else "error"
            run.shard.reason = reason if _alive(sandbox) else f"the sandbox went away: {reason}"
            break
        run.shard.restarts += 1
        keep = left
    if assigned is not None:
        run.shard.assigned = len(assigned)
        left = [n for n in assigned if n not in run.results]
        if ended_by_itself:  # pytest chose not to run them (-x, --collect-only, ...): as in its own report
            run.skipped_by_pytest = len(left)
        else:
            run.shard.not_run = left
            for nodeid in left:
                _set(run, nodeid, "error", f"not run: {run.shard.reason or 'the shard ended before it'}")
    run.shard.wall_s = round(time.monotonic() - started_at, 3)
    return run


def _ended(result: Any, got: GuestReport, test_timeout: float | None, sandbox: Any) -> str:
    if got.hung:
        return (f"timed out: it ran past the per-test timeout of {test_timeout:g} s and did not stop, so its "
                "pytest process was ended" if test_timeout else "it did not stop")
    if result.status == "oom":
        limit = getattr(getattr(sandbox, "limits", None), "memory", None)
        return f"killed: the sandbox ran out of memory{f' (limit {limit})' if limit else ''} while it ran"
    tail = (result.stderr or "").strip().splitlines()
    last = tail[-1][:300] if tail else ""
    if "No module named 'pytest'" in last:
        return f"the image {getattr(sandbox, 'image', '')!r} has no pytest: give an image with pytest installed"
    return f"pytest ended early (exit code {result.exit_code}){': ' + last if last else ''}"


def _set(run: ShardRun, nodeid: str, outcome: str, message: str) -> None:
    run.results[nodeid] = {"outcome": outcome, "duration_s": run.results.get(nodeid, {}).get("duration_s", 0.0),
                           "message": message, "traceback": ""}


def _merge(run: ShardRun, got: GuestReport) -> None:
    run.results.update(got.results)
    run.collect_errors.update(got.collect_errors)
    for attempt in got.network:
        if attempt not in run.network:
            run.network.append(attempt)
    run.dropped += got.dropped
    if got.tail:
        run.tail = (run.tail + got.tail)[-4000:]


# -- whole runs ---------------------------------------------------------------------------------------------------
def _cache_file(path: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lllm" / "ci"
    return base / (hashlib.sha256(str(path).encode()).hexdigest()[:16] + ".json")


def load_previous(path: str | Path) -> dict[str, float]:
    """Recorded durations {nodeid: seconds} of a report file (`--json` of an earlier run); {} when unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        report = TestReport.model_validate(data)
    except (OSError, ValueError):
        return {}
    return report.durations()


def _memory_peak_mb(sandbox: Any) -> float | None:
    container = getattr(sandbox, "container", None)
    cid = getattr(container, "id", None)
    if not cid:
        return None
    for name in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes",
                 f"/sys/fs/cgroup/memory/system.slice/docker-{cid}.scope/memory.max_usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.peak"):
        try:
            return round(int(Path(name).read_text().strip()) / (1 << 20), 1)
        except (OSError, ValueError):
            continue
    return None


def run_tests(path: str | Path, *, shards: int = 1, image: str | None = None,
              requirements: str | Path | None = None, pytest_args: Sequence[str] = (),
              timeout: float = DEFAULT_TIMEOUT, test_timeout: float | None = None,
              previous: str | Path | dict[str, float] | None = None, limits: Any = None,
              log: Callable[[str], None] | None = None) -> TestReport:
    """Run the pytest suite of the project at `path` in fresh sandboxes with no network, and report.

    Args:
        path: the project's folder (copied into each sandbox, without .git, caches and virtualenvs).
        shards: how many sandboxes share the tests (by recorded durations when there are some, else evenly).
        image: the image to run in (default: the sandbox image, with the project's requirements where they
            can be installed; see `lllm.ci.install`).
        requirements: a requirements file to install instead of the project's own.
        pytest_args: more arguments for pytest (`-k expr`, `-x`, test paths relative to the project).
        timeout: seconds for the whole run; a shard still running then is ended and reported as such.
        test_timeout: seconds one test may take (None: no limit but `timeout`).
        previous: a report file or {nodeid: seconds} to split by; default: the last run of this path.
        limits: `SandboxLimits` of each sandbox (default: the sandbox's own defaults).
        log: receives progress lines.

    Returns:
        A `TestReport`; it never raises for what the tests did.

    Raises:
        UsageError: `path` is not a folder, or an argument is out of range.
        SandboxStartError: no sandbox could be started (no Docker engine, no image).
    """
    from lllm.ci._sandbox import TestSandbox

    project = Path(path).expanduser().resolve()
    if not project.is_dir():
        raise UsageError(f"lllm test: {str(path)!r} is not a folder; give the folder of a project with tests")
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 64:
        raise UsageError(f"shards={shards!r}: give a whole number from 1 to 64")
    if not timeout or timeout <= 0:
        raise UsageError(f"timeout={timeout!r}: give a number of seconds above 0")
    if test_timeout is not None and test_timeout <= 0:
        raise UsageError(f"test_timeout={test_timeout!r}: give a number of seconds above 0, or None")
    say = log or (lambda line: None)
    started = time.monotonic()
    deadline = started + timeout
    if isinstance(previous, dict):
        durations = dict(previous)
    else:
        durations = load_previous(previous if previous is not None else _cache_file(project))
    wanted = install.project_requirements(project, requirements)
    prepared = install.prepare_image(wanted, image=image, log=say)
    report = TestReport(path=str(project), image=prepared.image or "", pytest_args=list(pytest_args))
    report.setup_problems += prepared.problems
    runs: list[ShardRun | None] = [None] * shards
    errors: list[BaseException | None] = [None] * shards
    images: list[str] = [""] * shards
    live: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="lllm-ci-") as staging:
        report.notes += stage_project(project, Path(staging) / PROJECT_DIR)

        def one(index: int) -> None:
            begun = time.monotonic()
            sandbox = TestSandbox(image=prepared.image, limits=limits, network=False, cell_timeout=None,
                                  max_stored_chars=64 * 1024, labels={"lllm.ci": "1"})
            live.append(sandbox)
            try:
                sandbox.start()
                images[index] = sandbox.image or ""
                sandbox.upload(Path(staging) / PROJECT_DIR, PROJECT_DIR)
                if index == 0 and prepared.unchecked:
                    answer = sandbox.run_command(["python3", "-c", install.CHECK_SCRIPT], timeout=30,
                                                 stdin=json.dumps([r.line for r in prepared.unchecked]))
                    report.setup_problems.extend(install.unsatisfied_problems(prepared.unchecked, answer.stdout))
                say(f"shard {index}: sandbox {sandbox.sandbox_id} ready in {time.monotonic() - begun:.1f} s, running "
                    "pytest")
                run = run_in_sandbox(sandbox, cwd=PROJECT_DIR, pytest_args=pytest_args, shard=index, shards=shards,
                                     durations=durations, test_timeout=test_timeout, deadline=deadline)
                bad = sum(1 for r in run.results.values() if r["outcome"] in ("failed", "error"))
                say(f"shard {index}: {len(run.results)} tests, {bad} failed or errored, {run.shard.status} "
                    f"({time.monotonic() - begun:.1f} s)")
                run.shard.memory_peak_mb = _memory_peak_mb(sandbox)
                run.shard.wall_s = round(time.monotonic() - begun, 3)
                runs[index] = run
            except BaseException as exc:  # noqa: BLE001 - reported below; the other shards still count
                errors[index] = exc
            finally:
                sandbox.close()

        threads = [threading.Thread(target=one, args=(i,), name=f"lllm-ci-shard-{i}", daemon=True)
                   for i in range(shards)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C: remove the sandboxes now (their commands end with them), then go
            for sandbox in list(live):
                sandbox.close()
            for thread in threads:
                thread.join(timeout=30)
            raise
    from lllm.errors import SandboxStartError

    if all(isinstance(e, SandboxStartError) for e in errors):
        raise errors[0]  # type: ignore[misc]
    for index, exc in enumerate(errors):
        if exc is not None:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise exc
            runs[index] = ShardRun(ShardReport(index=index, status="error",
                                               reason=f"{type(exc).__name__}: {exc}"[:1000]))
    report.image = report.image or next((i for i in images if i), "")
    _assemble(report, [r for r in runs if r is not None], shards)
    report.wall_s = round(time.monotonic() - started, 3)
    if report.tests:
        try:
            cache = _cache_file(project)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"path": str(project), "tests": [
                {"nodeid": t.nodeid, "outcome": t.outcome, "duration_s": t.duration_s} for t in report.tests]}))
        except OSError:
            pass  # a cache that cannot be written only costs the next split
    return report


def report_from_runs(path: str, runs: Sequence[ShardRun], *, image: str = "", pytest_args: Sequence[str] = (),
                     wall_s: float = 0.0) -> TestReport:
    """A `TestReport` of `run_in_sandbox` runs (the shards of one run; what the agent tool keeps)."""
    report = TestReport(path=path, image=image, pytest_args=list(pytest_args))
    _assemble(report, list(runs), len(runs))
    report.wall_s = round(wall_s, 3)
    return report


def _assemble(report: TestReport, runs: list[ShardRun], shards: int) -> None:
    """Merge the shards' results into `report` and decide the exit code and reason."""
    seen_errors: set[str] = set()
    for run in sorted(runs, key=lambda r: r.shard.index):
        report.shards.append(run.shard)
        for nodeid, error in run.collect_errors.items():
            if nodeid in seen_errors:
                continue  # every shard collects everything: one report of each collection error
            seen_errors.add(nodeid)
            report.tests.append(TestResult(nodeid=nodeid, outcome="error", shard=run.shard.index,
                                           message=f"collection failed: {error['message']}",
                                           traceback=error["traceback"]))
        net: dict[str, list[str]] = {}
        for nodeid, target in run.network:
            net.setdefault(nodeid, []).append(target)
            report.network_attempts.append(NetworkAttempt(nodeid=nodeid, target=target))
        for nodeid, data in run.results.items():
            message = data["message"]
            if nodeid in net:
                message = (f"{message} " if message else "") + (
                    f"[it tried to reach {', '.join(net[nodeid][:3])}: the sandbox has no network]")
            report.tests.append(TestResult(nodeid=nodeid, outcome=data["outcome"], duration_s=data["duration_s"],
                                           message=message, traceback=data["traceback"], shard=run.shard.index))
        if run.skipped_by_pytest:
            report.notes.append(f"shard {run.shard.index}: pytest did not run {run.skipped_by_pytest} collected "
                                "test(s) (it was told to stop early: -x, --maxfail, --collect-only)")
        if run.dropped:
            report.notes.append(f"shard {run.shard.index}: {run.dropped} unreadable report line(s) were dropped")
    report.tried_network = bool(report.network_attempts)
    totals = {name: 0 for name in ("passed", "failed", "error", "skipped", "xfail", "xpass")}
    for test in report.tests:
        totals[test.outcome] += 1
    totals["total"] = len(report.tests)
    report.totals = totals
    shard_exits = [run.shard.exit_code for run in runs if run.shard.exit_code is not None]
    bad_shards = [s for s in report.shards if s.status in ("timeout", "died", "error")]
    if any(c == 4 for c in shard_exits):
        report.exit_code, report.reason = 4, "pytest refused its arguments (usage error)"
    elif any(c == 3 for c in shard_exits):
        report.exit_code, report.reason = 3, "pytest hit an internal error"
    elif bad_shards:
        report.exit_code = 2
        report.reason = "; ".join(f"shard {s.index}: {s.reason}" for s in bad_shards)
    elif totals["failed"] or totals["error"]:
        report.exit_code = 1
    elif not report.tests:
        report.exit_code = 5
        report.reason = ("no tests were collected: is this the folder of a project with tests (test_*.py files "
                         "holding test_ functions)?")
    elif report.setup_problems:
        report.exit_code, report.reason = 3, "the tests passed, but the run could not install what the project needs"
    else:
        report.exit_code = 0
    if report.exit_code and not report.tests:
        report.output_tail = "".join(run.tail for run in runs)[-4000:]
