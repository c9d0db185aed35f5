"""What a browser session keeps of its actions: `ActionOutcome` (what an action did) and `ActionLog` (one logged
action, for the replay script). Shared by the session, the actions and the replay writer, which import it and
not each other."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ActionLog", "ActionOutcome"]


@dataclass
class ActionLog:
    """One action the session ran, as kept for the replay script and the log."""

    action: str
    """The action's name (click, type, navigate, ...)."""
    target: str | None
    """The element (ref, selector, coordinates), URL or file it acted on."""
    status: str
    """ok, error, blocked or timeout."""
    duration_s: float
    """How long it took."""
    code: list[str] = field(default_factory=list)
    """The Playwright (sync API) lines it ran; secrets appear as `os.environ[...]` lookups."""
    message: str = ""
    """What the model was told."""
    error: str | None = None
    """The error, when it failed (secrets redacted)."""


@dataclass
class ActionOutcome:
    """The result of one action (before the observation)."""

    message: str
    """A one-line account of what happened."""
    code: list[str] = field(default_factory=list)
    """The Playwright lines it ran."""
    target: str | None = None
    """What it acted on (for the log)."""
