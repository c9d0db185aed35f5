"""Keep the proxies' secrets (API keys) out of every text a proxy passes back or logs.

A proxy registers each secret it holds (`register_secret(value, name)`; `HTTPProxy` does it for its key).
`BaseProxy.call` passes every result and every error through `scrub_value` / `scrub_error`, the HTTP layer
scrubs an upstream's error page before it cuts an excerpt from it, and the `httpx`/`httpcore` loggers get a
filter that scrubs their records (httpx logs each request's URL at INFO). A secret is found in every form an
echo of the request could carry it:

- raw, or URL-encoded with any set of its characters percent-encoded (either hex case, `+` for a space),
  or JSON-escaped (`\\/`, `\\"`, `\\uXXXX`);
- base64, standard or URL-safe alphabet, at any alignment inside a larger blob (the characters that depend on
  the secret alone), of the secret and of its URL-encoded forms.

It is replaced by `[redacted NAME]`. Secrets shorter than 8 characters are not registered (they would match
ordinary text). A cheap substring check comes first, so text without any trace of a secret costs one scan.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import string
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["SecretLogFilter", "has_secrets", "register_secret", "scrub", "scrub_error", "scrub_value"]

MIN_SECRET_CHARS = 8
_UNRESERVED = set(string.ascii_letters + string.digits + "-_.")
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                 "\t": "\\t"}
_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy")


@dataclass(frozen=True)
class _Secret:
    value: str
    label: str
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]
    """Substrings, one of which any form of the secret contains; none of them in a text: nothing to do."""


_secrets: tuple[_Secret, ...] = ()
_lock = threading.Lock()


def _char_pattern(ch: str) -> str:
    forms = [re.escape(ch), "(?i:" + "".join(f"%{b:02x}" for b in ch.encode()) + ")"]
    if ch == " ":
        forms.append(r"\+")
    if ch in _JSON_ESCAPES:
        forms.append(re.escape(_JSON_ESCAPES[ch]))
    elif ord(ch) < 0x20 or ord(ch) > 0x7E:
        forms.append("(?i:" + re.escape(json.dumps(ch)[1:-1]) + ")")
    return forms[0] if ch in _UNRESERVED else "(?:" + "|".join(forms) + ")"


def _base64_cores(text: str) -> set[str]:
    """What base64 of any blob holding `text` must contain, whatever the offset of `text` in the blob."""
    cores = set()
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * pad + text.encode()).decode()
            core = encoded[4 if pad else 0:][:-4]  # drop the groups shared with the bytes around it
            if len(core) >= MIN_SECRET_CHARS:
                cores.add(core)
    return cores


def _compile(value: str, label: str) -> _Secret:
    cores: set[str] = set()
    for form in {value, quote(value, safe=""), quote_plus(value, safe="")}:
        cores |= _base64_cores(form)
    literal = "".join(_char_pattern(ch) for ch in value)
    pattern = re.compile("|".join([literal, *(re.escape(c) for c in sorted(cores, key=len, reverse=True))]))
    runs = [run for run in re.split(r"[^A-Za-z0-9_.\-]", value) if len(run) >= 4]
    anchors = (max(runs, key=len), *cores) if runs else ()
    return _Secret(value, label, pattern, anchors)


def register_secret(value: str | None, name: str = "secret") -> None:
    """Scrub `value` from everything proxies pass back or log, from now on, in this process.

    Args:
        value: the secret (an API key); None, empty or shorter than 8 characters: ignored.
        name: what replaces it reads `[redacted NAME]` (the environment variable, say).
    """
    global _secrets
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        if any(s.value == value for s in _secrets):
            return
        # longest first, so that a secret holding another one is replaced whole
        _secrets = tuple(sorted((*_secrets, _compile(value, name)), key=lambda s: len(s.value), reverse=True))
    _install_log_filter()


def has_secrets() -> bool:
    """Whether any secret is registered (when none is, scrubbing costs nothing)."""
    return bool(_secrets)


def scrub(text: str) -> str:
    """`text` with every registered secret, in any of its forms, replaced by `[redacted NAME]`."""
    if not text or not isinstance(text, str):
        return text
    for secret in _secrets:
        if secret.anchors and not any(anchor in text for anchor in secret.anchors):
            continue
        text = secret.pattern.sub(f"[redacted {secret.label}]", text)
    return text


def _needs_scrub(value: Any) -> bool:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return True
    return any(not s.anchors or any(a in text for a in s.anchors) for s in _secrets)


def scrub_value(value: Any) -> Any:
    """A JSON-like value (a proxy's result) with `scrub` applied to every string in it, dict keys included;
    the value itself when no secret can be in it."""
    if not _secrets or not _needs_scrub(value):
        return value
    return _walk(value, 0)


def _walk(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if depth > 200:
        return value
    if isinstance(value, dict):
        return {_walk(k, depth + 1): _walk(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, depth + 1) for v in value) if isinstance(value, tuple) else \
            [_walk(v, depth + 1) for v in value]
    return value


def scrub_error(exc: BaseException) -> BaseException:
    """An lllm error like `exc` with its message and facts scrubbed (the same object when nothing changed)."""
    from lllm.errors import LLLMError

    if not _secrets or not isinstance(exc, LLLMError):
        return exc
    message = scrub(exc.message)
    facts = {k: scrub_value(v) for k, v in exc.facts.items()}
    if message == exc.message and all(facts[k] is v for k, v in exc.facts.items()):
        return exc
    return type(exc)(message, **facts).with_traceback(exc.__traceback__)


class SecretLogFilter(logging.Filter):
    """Scrubs the registered secrets from a log record's message (httpx logs request URLs at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


_filter = SecretLogFilter()


def _install_log_filter() -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
