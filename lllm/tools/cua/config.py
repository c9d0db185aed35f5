"""The `computer_use:` config block: `BrowserConfig`, validated once at the boundary.

An agent config gets a browser with a block like::

    computer_use:
      start_url: https://shop.example.com/
      allowed_domains: [shop.example.com, "*.cdn.example.com"]
      viewport: {width: 1280, height: 800}
      action_timeout_s: 10
      snapshot_tokens: 4000
      screenshots_kept: 2
      dialogs: dismiss
      secrets: {SHOP_PASSWORD: "env:SHOP_PASSWORD"}
      max_steps: 30

`BrowserConfig.from_block(block)` turns a bad block into a `ConfigError` that names the key.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from lllm.errors import ConfigError

__all__ = ["DEFAULT_CHROMIUM", "LAUNCH_ARGS", "BrowserConfig", "Viewport"]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
"""Where Debian's Chromium lives; `LLLM_CHROMIUM` or `executable_path` override it."""

LAUNCH_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-features=AutofillServerCommunication,OptimizationHints,MediaRouter,Translate",
)
"""Chromium flags every launch uses. `--no-sandbox`: Chromium does not start as root without it (CI and these
machines run as root); what a page may reach is bounded by the session's egress proxy and URL policy. QUIC is off and WebRTC may not send UDP around the proxy, so all traffic goes through the proxy;
the features that call Google's servers in the background are off."""


class Viewport(BaseModel):
    """The page size in CSS pixels (what screenshots and coordinates refer to)."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(1280, ge=200, le=7680)
    """Width in CSS pixels."""
    height: int = Field(800, ge=200, le=4320)
    """Height in CSS pixels."""


class BrowserConfig(BaseModel):
    """Everything a browser session needs: where it starts, where it may go, and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_url: str | None = None
    """The page opened when the session starts (checked against the allowlist like any other URL)."""
    viewport: Viewport = Field(default_factory=Viewport)
    """The page size."""
    allowed_domains: list[str] | None = None
    """Hosts the browser may reach: `example.com` (and its subdomains), `*.example.com` (subdomains only),
    `127.0.0.1:8080` (that host and port only). None allows any public host; private addresses, `file://`
    and other schemes stay blocked unless allowed below. An entry that names a private host or IP allows it."""
    allow_private: bool = False
    """Allow loopback, private, link-local and other non-public addresses (resolved hostnames included)."""
    allow_file: bool = False
    """Allow `file://` URLs."""
    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
    """URL schemes the browser may use (`about:blank` is always allowed)."""
    headless: bool = True
    """Run Chromium without a window."""
    executable_path: str | None = None
    """The Chromium binary (default: `$LLLM_CHROMIUM` or /usr/bin/chromium). `playwright install` is never used."""
    action_timeout_s: float = Field(10.0, gt=0, le=600)
    """How long one action (click, type, wait for an element) may take."""
    navigation_timeout_s: float = Field(20.0, gt=0, le=600)
    """How long a navigation may take before it fails with `ActionTimeout` (the session stays usable)."""
    snapshot_tokens: int = Field(4000, ge=200, le=200_000)
    """The budget for the page snapshot the model sees after each action (about 4 characters a token)."""
    screenshots_kept: int = Field(2, ge=0, le=50)
    """Only the last N screenshots stay in the model's context; older ones are replaced by a note."""
    screenshot_every_step: bool = False
    """Attach a screenshot to every observation, not only when the model asks for one."""
    record_screenshots: bool = True
    """Keep a JPEG of the viewport after every action in its log record (`BrowserActionRecord.screenshot`, for
    the explorer), with elements showing a secret blacked out. About 40 ms and 15-150 KB an action; only taken
    when the session has a tracer."""
    dialogs: Literal["accept", "dismiss"] = "dismiss"
    """What to do with `alert`/`confirm`/`prompt`/`beforeunload` dialogs (each one is reported to the model)."""
    prompt_text: str = ""
    """The answer given to `window.prompt()` when dialogs are accepted."""
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """Values the model refers to as `{{secret:NAME}}`; filled in on the host, redacted from snapshots and
    logs. A value `env:VAR` is read from the environment when the session starts."""
    confirm: str | None = None
    """Dotted path (`module:function`) of a hook `fn(ConfirmRequest) -> bool` asked before consequential
    actions (submit, upload, download, navigation off the allowlist). Without one, everything is allowed
    except leaving the allowlist."""
    max_steps: int = Field(30, ge=1, le=1000)
    """The step limit of `ComputerUseTactic`'s observe-act loop."""
    max_download_bytes: int = Field(100 * 1024 * 1024, ge=1)
    """Downloads larger than this are cancelled."""

    @field_validator("allowed_domains")
    @classmethod
    def _check_domains(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = []
        for entry in value:
            item = entry.strip().lower()
            if not item or "/" in item or " " in item:
                raise ValueError(
                    f"allowed_domains entry {entry!r} is not a host: write `example.com`, `*.example.com` or "
                    "`127.0.0.1:8080` (no scheme, no path)"
                )
            cleaned.append(item)
        return cleaned

    @field_validator("allowed_schemes")
    @classmethod
    def _check_schemes(cls, value: list[str]) -> list[str]:
        return [s.strip().lower().rstrip(":/") for s in value]

    @property
    def chromium(self) -> str:
        """The Chromium executable this config launches."""
        return self.executable_path or os.environ.get("LLLM_CHROMIUM", DEFAULT_CHROMIUM)

    def secret_values(self) -> dict[str, str]:
        """The secrets with `env:VAR` values read from the environment.

        Raises:
            ConfigError: A secret names an environment variable that is not set.
        """
        out: dict[str, str] = {}
        for name, secret in self.secrets.items():
            raw = secret.get_secret_value()
            if raw.startswith("env:"):
                var = raw[4:]
                if var not in os.environ:
                    raise ConfigError(
                        f"computer_use.secrets.{name} reads the environment variable {var!r}, which is not set; "
                        "export it before the run or give the value directly.",
                        key=f"computer_use.secrets.{name}",
                    )
                raw = os.environ[var]
            out[name] = raw
        return out

    @classmethod
    def from_block(cls, block: dict[str, Any] | BrowserConfig | None, *, source: str = "computer_use") -> BrowserConfig:
        """Validate a `computer_use:` block.

        Args:
            block: The block as loaded from YAML (or an existing config, returned as is).
            source: Where the block came from, for error messages (a file name and key).

        Returns:
            The validated config.

        Raises:
            ConfigError: A key is unknown or has a bad value; the message names it.
        """
        if isinstance(block, BrowserConfig):
            return block
        if block is None:
            block = {}
        if not isinstance(block, dict):
            raise ConfigError(f"{source} must be a mapping of options, got {block!r}", key=source)
        try:
            return cls.model_validate(block)
        except ValidationError as exc:
            problems = "; ".join(
                f"{source}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']} "
                f"(got {'<hidden>' if err['loc'][:1] == ('secrets',) else repr(err.get('input'))})"
                for err in exc.errors()
            )
            raise ConfigError(
                f"bad computer_use config: {problems}. See lllm.tools.cua.BrowserConfig for the options.",
                key=source,
            ) from exc
