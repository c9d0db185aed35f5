"""The one error tree of lllm: every error lllm raises on purpose is an `LLLMError`.

```
LLLMError
├── ConfigError                 a config, prompt path or lllm.toml is wrong (names the file and key)
├── UsageError                  the API was misused (a wrong argument, a closed dialog, ...)
├── BudgetExceeded              a batch stopped starting tasks at its max_cost (carries what it finished)
├── ParseError                  a model's answer broke the prompt's format (the handler retries it)
├── AgentException              an agent gave up after its retries (carries the retry transcript)
├── InfrastructureError         MARKER: lllm's own machinery failed; ends the run, never handed to the model
│   ├── ToolBugError            one of lllm's own tools failed with an exception it did not mean (a bug in lllm)
│   └── LogWriterError          the log store's writer process died: writes were lost, so the run ends
├── InvokerError                anything between lllm and a model provider
│   ├── ModelAPIError           the provider answered with an error (status_code, model)
│   │   ├── RateLimitError
│   │   └── ModelTimeoutError
│   ├── ModelRequestsDisabled   a real provider call while LLLM_ALLOW_MODEL_REQUESTS=0
│   └── ScriptError             the scripted model was asked for a step it does not have, or has steps left
├── CassetteError               a cassette cannot record or replay this run (its file, its mode)   (infrastructure)
│   └── CassetteMismatch        a replayed request differs from the recorded one (with a diff), or was not recorded
├── SandboxError                anything about a sandbox
│   ├── SandboxStartError       the container or kernel did not come up                      (infrastructure)
│   ├── SandboxEngineError      the Docker engine failed or stopped answering mid-session     (infrastructure)
│   ├── SandboxClosed           the sandbox was used after close()
│   ├── SandboxFileError        upload/download refused (path escapes the workspace, missing file)
│   ├── SandboxForkError        a branch kernel could not be made (too many, a cell's state, a dead parent)
│   └── SnapshotError           a snapshot could not be saved or resumed (corrupt, other image, too large)
├── ProxyError                  anything about API proxies and the CALL_API gateway
│   ├── GatewayStartError       the CALL_API gateway (or a session on it) could not start     (infrastructure)
│   ├── GatewayAuthError        a bad or foreign session token
│   ├── ProxyNotActivated       the proxy is not in this session's activate_proxies
│   ├── EndpointNotFound        no such endpoint (lists the real ones)
│   ├── RateLimited             the session called too fast
│   ├── PayloadTooLarge         a request or response over the size limit
│   └── ApiBudgetExceeded       the session spent its budget for a proxy (calls or cost)
├── BrowserError                anything about the computer-use browser
│   ├── BrowserLaunchError      Playwright is missing or Chromium did not start               (infrastructure)
│   ├── BlockedNavigation       a URL outside the allowlist
│   ├── StaleRef                an element ref from an old snapshot
│   ├── ActionTimeout           a browser action ran past its timeout
│   └── ActionRefused           the confirmation hook refused a consequential action
└── ExecutorError               a batch could not run where it was sent (Ray)
    ├── ClusterUnavailable      no Ray cluster answers at the address, or Ray is missing     (infrastructure)
    ├── PackageShipError        the tactic's package cannot be shipped (too large, unreadable)
    ├── WorkerLost              a worker or node died running a task, retries used up        (infrastructure)
    └── RemoteTaskError         a task's exception that could not travel back (type, message, traceback)
```

The rule of the tool loop: an error marked `(infrastructure)` above also derives from `InfrastructureError`
(multiple inheritance, so `except SandboxError` still catches a `SandboxStartError`). It means lllm could not
provide what the model was promised (a sandbox, the gateway, a browser): the Agent re-raises it from a tool
call instead of returning "Error: ..." to the model, the tactic call ends with it and is logged as an error,
and `lllm run`/`lllm demo` exit non-zero with its message. What the model's own code did (an exception, a
timeout, running out of memory, a refused CALL_API) is not infrastructure: it goes back to the model.
`isinstance(exc, InfrastructureError)` is the test. One of lllm's own tools failing inside lllm with an
exception that is not an LLLMError (an AttributeError, a KeyError...) is a bug in lllm: `ToolBugError`, also
infrastructure. A user's tool that raises is the model's to read.

Rules: a message says what happened, shows the bad value with `!r` and says what to do next. Facts go in
attributes; errors stay picklable (every constructor argument is kept in `self.args`); constructors never log.
"""

from __future__ import annotations

from typing import Any


class LLLMError(Exception):
    """The root of every error lllm raises on purpose."""

    def __init__(self, message: str = "", **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts
        for key, value in facts.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.facts))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[LLLMError], message: str, facts: dict[str, Any]) -> LLLMError:
    return cls(message, **facts)


class InfrastructureError(LLLMError):
    """A marker base: lllm's own machinery failed (the Docker engine, the sandbox image or start, the CALL_API
    gateway, the browser launch). Such an error ends the agent call and the tactic call; it is never given to
    the model as a tool result (see the module docstring)."""


class ToolBugError(InfrastructureError):
    """One of lllm's own tools (run_python, the browser, ...) raised an exception that is not an `LLLMError`
    from lllm's own code: a bug in lllm, not something the model did, so it ends the run instead of asking the
    model to work around it. `tool` names the tool; the original exception is the `__cause__`."""


class LogWriterError(InfrastructureError):
    """The log store's writer process died or could not be reached, so writes were lost: the run ends rather
    than go on without a record. `path` is the log file, `exit_status` the process's (None if unknown)."""


class ConfigError(LLLMError):
    """A config, a prompt path or an lllm.toml is wrong; the message names the file and the key."""


class UsageError(LLLMError):
    """The developer misused the API."""


class BudgetExceeded(LLLMError):
    """A batch reached its `max_cost` and started no more tasks; `batch_id`, `spent`, `max_cost` and
    `not_started` (task indices) say where it stopped, and `bcall(..., resume=batch_id)` goes on."""


class ParseError(LLLMError):
    """A model's answer broke the prompt's format; the prompt's handler asks the model to try again."""


class AgentException(LLLMError):
    """An agent gave up after `max_exception_retry` retries; `retries` holds the transcript."""


class InvokerError(LLLMError):
    """Anything between lllm and a model provider."""


class ModelAPIError(InvokerError):
    """The provider answered with an error; `status_code` and `model` say which and where."""


class RateLimitError(ModelAPIError):
    """The provider refused for rate limits (retried with backoff, a bounded number of times)."""


class ModelTimeoutError(ModelAPIError):
    """The provider did not answer in time."""


class ModelRequestsDisabled(InvokerError):
    """A call would have reached a real provider while LLLM_ALLOW_MODEL_REQUESTS=0."""


class ScriptError(InvokerError):
    """The scripted model was asked for a step it does not have, or was closed with steps left."""


class CassetteError(InfrastructureError):
    """A cassette (`lllm.testing.cassette`) cannot record or replay this run: its file is missing or malformed,
    its mode is unknown, or recorded exchanges were never replayed."""


class CassetteMismatch(CassetteError):
    """A replayed run made a request the cassette did not record: it differs from the recorded one (the message
    holds a diff of the two) or comes past the recorded ones. Record again if the change was meant."""


class SandboxError(LLLMError):
    """Anything about a sandbox."""


class SandboxStartError(SandboxError, InfrastructureError):
    """The container or its kernel did not come up (no engine, no image, a start or restart that failed)."""


class SandboxEngineError(SandboxError, InfrastructureError):
    """The Docker engine failed or stopped answering after the sandbox started, or its container is gone."""


class SandboxClosed(SandboxError):
    """The sandbox was used after close()."""


class SandboxFileError(SandboxError):
    """An upload or download was refused or failed."""


class SandboxForkError(SandboxError):
    """`sb.fork()` could not make a branch kernel (more than `max_branches`, the kernel refused, it ended)."""


class SnapshotError(SandboxError):
    """`sb.save()` or `DockerSandbox.resume()` failed: a snapshot that is corrupt, from another image, too large
    for the sandbox's limits, or a sandbox that cannot be saved."""


class ProxyError(LLLMError):
    """Anything about API proxies and the CALL_API gateway."""


class GatewayStartError(ProxyError, InfrastructureError):
    """The CALL_API gateway, or a session of a sandbox on it, could not be started."""


class GatewayAuthError(ProxyError):
    """A CALL_API request carried a bad or foreign session token."""


class ProxyNotActivated(ProxyError):
    """The proxy is not activated for this session."""


class EndpointNotFound(ProxyError):
    """No such endpoint; the message lists the real ones."""


class RateLimited(ProxyError):
    """The session called the gateway faster than its rate limit."""


class PayloadTooLarge(ProxyError):
    """A CALL_API request or response is over the size limit."""


class ApiBudgetExceeded(ProxyError):
    """The session spent its budget for a proxy (`calls`, or `cost` in USD where the proxy has a price);
    `proxy`, `spent` and `limit` say which, and `proxy.budgets` in the agent config raises it."""


class BrowserError(LLLMError):
    """Anything about the computer-use browser."""


class BrowserLaunchError(BrowserError, InfrastructureError):
    """Playwright is not installed, or Chromium is missing or did not start."""


class BlockedNavigation(BrowserError):
    """A navigation or request to a URL outside the allowlist."""


class StaleRef(BrowserError):
    """An element ref that the current page no longer has."""


class ActionTimeout(BrowserError):
    """A browser action ran past its timeout."""


class ActionRefused(BrowserError):
    """The confirmation hook refused a consequential action (submit, upload, download, leaving the allowlist)."""


class ExecutorError(LLLMError):
    """A batch could not run on its executor (a Ray cluster): nothing of the model's doing."""


class ClusterUnavailable(ExecutorError, InfrastructureError):
    """No Ray cluster answers at `address` (or Ray is not installed, or lllm cannot start a local one)."""


class PackageShipError(ExecutorError):
    """The tactic's package cannot be shipped to the workers: too large (`size`, `limit`) or a file that cannot
    be read (`path`); the message says what to exclude or fix."""


class WorkerLost(ExecutorError, InfrastructureError):
    """The worker (or its node) running a task died and the task's retries are used up; `attempts` and
    `node` say how often and where. The records the lost attempts made are in the log, marked as theirs."""


class RemoteTaskError(ExecutorError):
    """A task raised an exception on a worker that could not be sent back as it was: `error_type`,
    `traceback` and `node` say what and where."""


__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, LLLMError)]
