"""Browser safety: the URL policy (allowlist, private addresses, schemes), secrets placeholders and the
confirmation hook asked before consequential actions.

The policy is enforced twice, by the same `UrlPolicy`: by a Playwright route on the browser context (every
request a page makes, with a clear reason reported to the model) and by the session's egress proxy
(`_proxy.py`), which every byte of the context's traffic goes through, so redirects, pop-ups, iframes and
WebSockets that Playwright routing never sees are held to it too. The proxy connects to the very address it
checked, so a hostname cannot be re-pointed at a private address between the check and the connection.

No playwright import here: this module is pure Python and unit-tested without a browser.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal
from urllib.parse import quote, quote_plus, urlsplit

from lllm.errors import ConfigError, UsageError

__all__ = [
    "ConfirmHook",
    "ConfirmRequest",
    "Secrets",
    "UrlPolicy",
    "Verdict",
    "allow_all_but_leaving",
    "load_confirm_hook",
]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one URL or host."""

    allowed: bool
    """True when the request may go ahead."""
    reason: str = ""
    """Why it was refused (empty when allowed)."""
    off_allowlist: bool = False
    """Refused only because the host is not on the allowlist (a confirmation hook may allow it)."""
    addresses: tuple[str, ...] = ()
    """The addresses the host resolved to and that were checked (the proxy connects to these)."""


def _split_hostport(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


class UrlPolicy:
    """Decides which URLs and hosts a browser session may reach.

    Args:
        allowed_domains: Allowlist entries (`example.com`, `*.example.com`, `127.0.0.1:8080`); None for any
            public host.
        allow_private: Allow non-public addresses everywhere.
        allow_file: Allow `file://` URLs.
        allowed_schemes: Schemes allowed besides `about:blank`.
        resolver: `host -> list of addresses` (default: the system resolver, cached per policy).
    """

    def __init__(
        self,
        *,
        allowed_domains: list[str] | None = None,
        allow_private: bool = False,
        allow_file: bool = False,
        allowed_schemes: list[str] | tuple[str, ...] = ("http", "https"),
        resolver: Callable[[str], list[str]] | None = None,
    ) -> None:
        # (host, port, wildcard: subdomains only, explicit: from the config, may name a private host)
        self._entries: list[tuple[str, int | None, bool, bool]] = []
        self.allowlist_given = allowed_domains is not None
        for entry in allowed_domains or []:
            self._add_entry(entry)
        self.allow_private = allow_private
        self.allow_file = allow_file
        self.schemes = {s.lower() for s in allowed_schemes}
        if "http" in self.schemes:
            self.schemes.add("ws")
        if "https" in self.schemes:
            self.schemes.add("wss")
        self._resolver = resolver or _system_resolve
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any) -> UrlPolicy:
        """Build the policy of a `BrowserConfig`."""
        return cls(
            allowed_domains=config.allowed_domains,
            allow_private=config.allow_private,
            allow_file=config.allow_file,
            allowed_schemes=config.allowed_schemes,
        )

    def _add_entry(self, entry: str) -> None:
        entry = entry.strip().lower()
        wildcard = entry.startswith("*.")
        host, port = _split_hostport(entry[2:] if wildcard else entry)
        self._entries.append((host.rstrip("."), port, wildcard, True))

    def allow_host(self, host: str, port: int | None = None) -> None:
        """Add one exact host (and port) to the allowlist for the rest of the session (after a confirmation).

        Unlike a configured entry, an added host does not lift the private-address block.
        """
        self._entries.append((host.lower().strip("[]").rstrip("."), port, False, False))

    def _match(self, host: str, port: int) -> tuple[bool, bool]:
        """(on the allowlist, matched by an exact entry that names this host)."""
        if not self.allowlist_given:
            return True, False
        for e_host, e_port, wildcard, explicit in self._entries:
            if e_port is not None and e_port != port:
                continue
            if host == e_host and not wildcard:
                return True, explicit
            if host.endswith("." + e_host):
                return True, False
        return False, False

    def resolve(self, host: str) -> tuple[str, ...]:
        """The addresses of `host` (an IP literal is its own address); cached. Empty when it does not resolve."""
        ip = _ip(host)
        if ip is not None:
            return (str(ip),)
        with self._lock:
            if host in self._cache:
                return self._cache[host]
        try:
            addrs = tuple(dict.fromkeys(self._resolver(host)))
        except (OSError, UnicodeError):
            addrs = ()
        with self._lock:
            self._cache[host] = addrs
        return addrs

    def check_host(self, host: str, port: int, *, scheme: str = "https") -> Verdict:
        """Check a host and port (what the egress proxy sees for a CONNECT or a plain request).

        Returns:
            The verdict; when allowed, `addresses` are the checked addresses to connect to.
        """
        host = host.lower().strip("[]").rstrip(".")
        if not host:
            return Verdict(False, "the URL has no host")
        listed, exact = self._match(host, port)
        if not listed:
            return Verdict(
                False,
                f"{host}:{port} is not on the allowlist ({', '.join(self.allowlist()) or 'empty'})",
                off_allowlist=True,
            )
        addrs = self.resolve(host)
        if not addrs:
            return Verdict(False, f"{host!r} does not resolve")
        if not (self.allow_private or exact):
            private = [a for a in addrs if not _is_public(a)]
            if private:
                return Verdict(
                    False,
                    f"{host} is a private address ({private[0]}); private, loopback and link-local addresses are "
                    "blocked unless computer_use.allow_private is set or allowed_domains names the host exactly",
                )
        return Verdict(True, addresses=addrs)

    def check_url(self, url: str) -> Verdict:
        """Check a full URL: scheme, then host and port (see `check_host`)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return Verdict(False, f"malformed URL {url!r}: {exc}")
        scheme = parts.scheme.lower()
        if scheme == "about":
            ok = url in ("about:blank", "about:srcdoc")
            return Verdict(ok, "" if ok else f"{url!r}: only about:blank is allowed")
        if scheme in ("data", "blob"):
            ok = scheme in self.schemes
            return Verdict(ok, "" if ok else f"{scheme}: URLs are blocked (add {scheme!r} to allowed_schemes)")
        if scheme == "file":
            return Verdict(self.allow_file, "" if self.allow_file else "file:// URLs are blocked (allow_file is off)")
        if scheme not in self.schemes:
            return Verdict(False, f"the scheme {scheme + ':' if scheme else '(none)'} is blocked in {url!r}; allowed: "
                           f"{', '.join(sorted(self.schemes))}")
        host = parts.hostname or ""
        return self.check_host(host, port or _DEFAULT_PORTS.get(scheme, 80), scheme=scheme)

    def allowlist(self) -> list[str]:
        """The allowlist entries as written (for messages)."""
        out = []
        for host, port, wildcard, _ in self._entries:
            text = ("*." if wildcard else "") + (f"[{host}]" if ":" in host else host)
            out.append(f"{text}:{port}" if port is not None else text)
        return out


def _system_resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


_PLACEHOLDER = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Secrets:
    """Secrets the model names as `{{secret:NAME}}`: filled in on the host, never shown back.

    Args:
        values: NAME -> value.
    """

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self._values = {k: v for k, v in (values or {}).items()}
        forms: list[tuple[str, str]] = []
        for name, value in self._values.items():
            if not value:
                continue
            for form in {value, quote(value, safe=""), quote_plus(value)}:
                forms.append((form, "{{secret:%s}}" % name))
        self._forms = sorted(forms, key=lambda f: -len(f[0]))

    @property
    def names(self) -> list[str]:
        """The secret names (never the values)."""
        return sorted(self._values)

    def has_placeholder(self, text: str) -> bool:
        """True when `text` names a secret."""
        return bool(_PLACEHOLDER.search(text))

    def fill(self, text: str) -> str:
        """Replace every `{{secret:NAME}}` with its value.

        Raises:
            UsageError: A placeholder names an unknown secret (the message lists the known names).
        """

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._values:
                raise UsageError(
                    f"unknown secret {name!r} in {match.group(0)!r}; known secrets: {self.names or 'none'}. "
                    "Add it under computer_use.secrets.",
                    secret=name,
                )
            return self._values[name]

        return _PLACEHOLDER.sub(sub, text)

    def redact(self, text: str) -> str:
        """Replace every secret value (also URL-encoded) in `text` with its placeholder."""
        for form, placeholder in self._forms:
            if form in text:
                text = text.replace(form, placeholder)
        return text


@dataclass(frozen=True)
class ConfirmRequest:
    """What the confirmation hook is asked about."""

    kind: Literal["submit", "upload", "download", "navigation"]
    """The kind of consequential action."""
    action: str
    """The browser action (click, press, upload, navigate, ...)."""
    target: str | None = None
    """The element (ref, selector or coordinates) or file."""
    url: str | None = None
    """The page URL, or the destination for a navigation or a download."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Extra facts (the form action, the file name, the policy's reason)."""


ConfirmHook = Callable[[ConfirmRequest], bool]
"""A callable asked before consequential actions; False refuses the action (`ActionRefused`)."""


def allow_all_but_leaving(request: ConfirmRequest) -> bool:
    """The default hook: allow submits, uploads and downloads; refuse navigation off the allowlist."""
    return request.kind != "navigation"


def load_confirm_hook(spec: str | ConfirmHook | None) -> ConfirmHook:
    """Turn a `module:function` path (from YAML) or a callable into a hook; None gives the default.

    Raises:
        ConfigError: The path does not name an importable callable.
    """
    if spec is None:
        return allow_all_but_leaving
    if callable(spec):
        return spec
    module, sep, name = spec.partition(":")
    if not sep:
        module, _, name = spec.rpartition(".")
    try:
        hook = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"computer_use.confirm {spec!r} does not name an importable function ({exc}); write "
            "`package.module:function`.",
            key="computer_use.confirm",
        ) from exc
    if not callable(hook):
        raise ConfigError(f"computer_use.confirm {spec!r} is not callable", key="computer_use.confirm")
    return hook
