"""The lllm pytest plugin: every test session of a project that installed lllm loads it (entry point `pytest11`,
name `lllm`; `-p no:lllm` turns it off).

What it does for every session:
- **No real model requests.** `LLLM_ALLOW_MODEL_REQUESTS=0` for the session (also in an invoker module that was
  imported before), so a test that would reach a provider fails with `ModelRequestsDisabled` instead of spending
  money. A test marked `@pytest.mark.allow_model_requests`, or the whole session with
  `--lllm-allow-model-requests`, may reach one. The previous setting is restored when the session ends.
- **Its sandboxes go away.** When `LLLM_TEST_RUN` is not set, the plugin sets it to a fresh id (every Docker
  sandbox carries it as the label `lllm.test_run`) and, at the end, removes every container with that label that
  a crashed or leaky test left behind.

Fixtures:
- `scripted_model(steps=None, *, responder=None, scripts=None, **options) -> ScriptedInvoker`: builds the scripted
  model (`lllm.invokers.scripted`) and installs it with `lllm.invokers.override` until the test ends, so every
  invoker a config or tactic builds is it. At teardown of a test that passed, steps never requested fail the test
  with what was left.
- `sandbox`: a started `DockerSandbox`, removed after the test. Another backend or options: the marker
  `@pytest.mark.lllm_sandbox("local", cell_timeout=10)` (a `LocalSandbox`: a kernel on the host, fast, not
  isolated), or indirect parametrisation `@pytest.mark.parametrize("sandbox", ["docker", "local"],
  indirect=True)` (a backend name or a dict of options with `backend`). Docker that is not there fails the test
  with the reason; it never skips.
- `log_store`: a `LogStore` in a temporary SQLite file, closed after the test (`log_store.path` is the file).

Marker `@pytest.mark.lllm_cassette("cassettes/name.yaml", mode=None, allow_unused=False)`: the test runs inside
`lllm.testing.cassette(...)`; the path is relative to the test file's folder; mode defaults to
`$LLLM_CASSETTE_MODE`, else "auto". A replay that differs, or stops early, fails the test at teardown. With
`$LLLM_CASSETTE` set, the whole session shares that cassette; it is saved (or checked) when the session ends, and
a replay that failed or stopped early fails the session.

Importing this module imports pytest and nothing heavy of lllm: fixtures import what they use when they run.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator

import pytest

if TYPE_CHECKING:
    from lllm.invokers.scripted import ScriptedInvoker
    from lllm.logging.store import LogStore
    from lllm.sandbox.base import BaseSandbox

__all__ = ["log_store", "sandbox", "scripted_model"]

GUARD_VAR = "LLLM_ALLOW_MODEL_REQUESTS"
TEST_RUN_VAR = "LLLM_TEST_RUN"
_MARKERS = (
    "allow_model_requests: this test may reach a real model provider (the lllm plugin blocks them otherwise)",
    "lllm_sandbox(backend='docker', **options): the backend and options of the `sandbox` fixture "
    "(e.g. lllm_sandbox('local'))",
    "lllm_cassette(path, mode=None, allow_unused=False): run the test inside lllm.testing.cassette(path, mode); "
    "path relative to the test file",
)

_saved_guard = pytest.StashKey[tuple[str | None, Any]]()
_owned_run = pytest.StashKey[str]()
_call_report = pytest.StashKey[pytest.TestReport]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lllm", "lllm (language-model agents)")
    group.addoption("--lllm-allow-model-requests", action="store_true", default=False,
                    help="let every test reach real model providers (blocked by default: LLLM_ALLOW_MODEL_REQUESTS=0; "
                         "one test: @pytest.mark.allow_model_requests)")


def _set_flag(allowed: bool) -> Any:
    """Set the guard of an invoker module that is already imported; return its previous value (None: not yet
    imported, it will read the environment)."""
    base = sys.modules.get("lllm.invokers.base")
    if base is None:
        return None
    before = getattr(base, "ALLOW_MODEL_REQUESTS")
    setattr(base, "ALLOW_MODEL_REQUESTS", allowed)
    return before


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    allowed = bool(config.getoption("lllm_allow_model_requests", default=False))
    config.stash[_saved_guard] = (os.environ.get(GUARD_VAR), _set_flag(allowed))
    os.environ[GUARD_VAR] = "1" if allowed else "0"
    if not os.environ.get(TEST_RUN_VAR):
        run = uuid.uuid4().hex[:12]
        os.environ[TEST_RUN_VAR] = run
        config.stash[_owned_run] = run


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_saved_guard, None)
    if saved is not None:
        env, flag = saved
        if env is None:
            os.environ.pop(GUARD_VAR, None)
        else:
            os.environ[GUARD_VAR] = env
        if flag is not None:
            _set_flag(flag)
    if config.stash.get(_owned_run, None) is not None:
        os.environ.pop(TEST_RUN_VAR, None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _close_env_cassette(session)
    run = session.config.stash.get(_owned_run, None)
    # only a run this plugin named, and only when a Docker sandbox was made in this process
    if run is None or "lllm.sandbox.docker" not in sys.modules:
        return
    from lllm.sandbox._docker import LABEL_TEST_RUN
    from lllm.sandbox.reaper import remove_labelled

    try:
        remove_labelled(LABEL_TEST_RUN, run)
    except Exception as exc:  # noqa: BLE001 - the engine went away: say so, the results stand
        print(f"lllm: could not remove this run's sandboxes (label {LABEL_TEST_RUN}={run}): {exc}", file=sys.stderr)


def _close_env_cassette(session: pytest.Session) -> None:
    """Save (or check) the `$LLLM_CASSETTE` cassette of this session now, not at exit: a replay that failed or
    stopped early fails the session."""
    cassettes = sys.modules.get("lllm.testing.cassettes")
    if cassettes is None:
        return
    from lllm.errors import LLLMError

    try:
        cassettes.close_env_cassette()
    except LLLMError as exc:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"lllm: $LLLM_CASSETTE: {exc}", red=True, bold=True)
        else:
            print(f"lllm: $LLLM_CASSETTE: {exc}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_call_report] = report
    return report


def _passed(request: pytest.FixtureRequest) -> bool:
    """Whether the test body passed (teardown checks only add a failure to a test that passed)."""
    report = request.node.stash.get(_call_report, None)
    return report is not None and report.passed


@pytest.fixture(autouse=True)
def _lllm_markers(request: pytest.FixtureRequest) -> Iterator[None]:
    """The markers `allow_model_requests` and `lllm_cassette` (a test without them pays two lookups)."""
    allow = request.node.get_closest_marker("allow_model_requests")
    taped = request.node.get_closest_marker("lllm_cassette")
    if allow is None and taped is None:
        yield
        return
    before = None
    if allow is not None:
        before = _set_flag(True)
        if before is None:  # not imported yet: import it, so that the flag exists to set
            import lllm.invokers.base  # noqa: F401

            before = _set_flag(True)
    try:
        if taped is None:
            yield
        else:
            yield from _in_cassette(request, taped)
    finally:
        if before is not None:
            _set_flag(before)


def _in_cassette(request: pytest.FixtureRequest, marker: pytest.Mark) -> Iterator[None]:
    from lllm.errors import CassetteError
    from lllm.invokers import wrap_invokers
    from lllm.proxies.hooks import hook_api_calls
    from lllm.testing.cassettes import Cassette

    if not marker.args and "path" not in marker.kwargs:
        pytest.fail("@pytest.mark.lllm_cassette needs the cassette's path, e.g. lllm_cassette('cassettes/x.yaml')",
                    pytrace=False)
    path = Path(marker.args[0] if marker.args else marker.kwargs["path"])
    if not path.is_absolute():
        path = Path(request.node.path).parent / path
    mode = marker.kwargs.get("mode") or os.environ.get("LLLM_CASSETTE_MODE", "").strip().lower() or "auto"
    try:
        tape = Cassette(path, mode=mode, allow_unused=bool(marker.kwargs.get("allow_unused", False)))
    except CassetteError as exc:
        pytest.fail(str(exc), pytrace=False)
    with wrap_invokers(tape.wrap), hook_api_calls(tape.api_hook):
        yield
    try:
        tape.close(check=_passed(request))
    except CassetteError as exc:
        pytest.fail(f"lllm_cassette: {exc}", pytrace=False)


@pytest.fixture
def scripted_model(request: pytest.FixtureRequest) -> Iterator[Callable[..., ScriptedInvoker]]:
    """A factory: `scripted_model(["Hi!", {"tool_calls": [...]}, ...])`, `scripted_model(responder=f)` or
    `scripted_model(scripts={task: steps})` (plus ScriptedInvoker options) returns the scripted model, installed
    with `lllm.invokers.override` until the test ends. A test that passed fails at teardown if steps are left."""
    from contextlib import ExitStack

    from lllm.errors import ScriptError
    from lllm.invokers import override
    from lllm.invokers.scripted import ScriptedInvoker

    made: list[ScriptedInvoker] = []
    with ExitStack() as stack:
        def make(steps: list[Any] | None = None, **options: Any) -> ScriptedInvoker:
            invoker = ScriptedInvoker(steps, **options)
            stack.enter_context(override(invoker))
            made.append(invoker)
            return invoker

        yield make
    if not _passed(request):
        return
    for i, invoker in enumerate(made):
        try:
            invoker.assert_complete()
        except ScriptError as exc:
            which = f" (the {_ordinal(i + 1)} one this test made)" if len(made) > 1 else ""
            pytest.fail(f"scripted_model{which} was not used up: {exc}", pytrace=False)


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _sandbox_choice(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend, options = "docker", {}
    marker = request.node.get_closest_marker("lllm_sandbox")
    if marker is not None:
        options = dict(marker.kwargs)
        backend = marker.args[0] if marker.args else options.pop("backend", backend)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        backend = param
    elif isinstance(param, dict):
        options.update(param)
        backend = options.pop("backend", backend)
    elif param is not None:
        pytest.fail(f"the `sandbox` fixture's parameter is a backend name or a dict of options, got {param!r}",
                    pytrace=False)
    return backend, options


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[BaseSandbox]:
    """A started sandbox (Docker unless the `lllm_sandbox` marker or an indirect parameter names another
    backend), closed and removed after the test."""
    from lllm.errors import LLLMError
    from lllm.sandbox.backends import create_sandbox

    backend, options = _sandbox_choice(request)
    try:
        box = create_sandbox(backend, **options)
    except LLLMError as exc:
        pytest.fail(f"the `sandbox` fixture: {exc}", pytrace=False)
    try:
        box.start()
    except LLLMError as exc:
        box.close()
        pytest.fail(f"the `sandbox` fixture could not start a {backend!r} sandbox: {exc}", pytrace=False)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def log_store(tmp_path: Path) -> Iterator[LogStore]:
    """A `LogStore` in a fresh SQLite file (`tmp_path/lllm-log.db`), closed after the test; pass it to a tactic
    (`build_tactic(config, log_store=log_store)`) and read it back (`load_session`, `query`)."""
    from lllm.logging import sqlite_store

    store = sqlite_store(tmp_path / "lllm-log.db")
    try:
        yield store
    finally:
        store.close()
