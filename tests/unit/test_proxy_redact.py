"""Secrets of proxies are scrubbed from every text a proxy passes back or logs (lllm.proxies.redact)."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus, urlencode

import pytest

from lllm.errors import ProxyError
from lllm.proxies import BaseProxy, ProxyManager
from lllm.proxies.redact import register_secret, scrub, scrub_value

KEY = "unit-SECRET/key+x=y&z_20250101"
register_secret(KEY, "UNIT_API_KEY")
register_secret("short", "TOO_SHORT")  # under 8 characters: not registered (it would match ordinary words)


@pytest.mark.parametrize("form", [
    KEY, quote(KEY, safe=""), quote(KEY), quote_plus(KEY), re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(KEY, safe="")), urlencode({"k": KEY})[2:],
    json.dumps(KEY)[1:-1], KEY.replace("/", "\\/"),
])
def test_every_text_form_is_scrubbed(form: str) -> None:
    text = f"GET /v1/quote?symbol=AAPL&apikey={form} HTTP/1.1"
    assert scrub(text) == "GET /v1/quote?symbol=AAPL&apikey=[redacted UNIT_API_KEY] HTTP/1.1"


@pytest.mark.parametrize("prefix", ["", "x", "xy", "GET /?k=", "Authorization: Basic user:"])
def test_base64_at_any_alignment_is_scrubbed(prefix: str) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for inner in (KEY, quote(KEY, safe="")):
            blob = encode((prefix + inner + " trailing bytes").encode()).decode()
            clean = scrub(f"dump: {blob}")
            assert "[redacted UNIT_API_KEY]" in clean
            for pad in range(3):  # no stretch that decodes to the key is left
                core = encode(b"\0" * pad + KEY.encode()).decode()[4 if pad else 0:][:-4]
                assert core not in clean


def test_ordinary_text_and_short_values_are_left_alone() -> None:
    text = "short answer: shortly, the unit-SECRET rose 3% (no key here)"
    assert scrub(text) is text or scrub(text) == text
    assert scrub_value({"a": [1, 2.5, None, "x"]}) == {"a": [1, 2.5, None, "x"]}


def test_results_keys_and_nested_values_are_scrubbed() -> None:
    value = {"rows": [{"url": f"https://api.example.com/q?apikey={quote_plus(KEY)}"}], KEY: ("t", KEY)}
    clean = scrub_value(value)
    assert KEY not in json.dumps(clean) and quote_plus(KEY) not in json.dumps(clean)
    assert clean["[redacted UNIT_API_KEY]"] == ("t", "[redacted UNIT_API_KEY]")


class Leaky(BaseProxy):
    @BaseProxy.endpoint(category="t", endpoint="echo", description="Echoes the request line.")
    def echo(self) -> dict:
        return {"request": f"GET /x?apikey={KEY}"}

    @BaseProxy.endpoint(category="t", endpoint="fail", description="An upstream error page.")
    def fail(self) -> None:
        try:
            raise ConnectionError(f"cannot reach https://api.example.com/x?apikey={quote(KEY, safe='')}")
        except ConnectionError as exc:
            raise ProxyError(f"upstream said: GET /x?apikey={KEY}", url=f"/x?apikey={KEY}") from exc

    @BaseProxy.endpoint(category="t", endpoint="crash", description="A bug that prints the key.")
    def crash(self) -> None:
        raise ValueError(f"bad key {KEY}")


def test_proxy_results_and_errors_are_scrubbed_at_the_one_dispatch_point() -> None:
    m = ProxyManager(proxies={"leaky": Leaky()})
    assert m.call("leaky/echo") == {"request": "GET /x?apikey=[redacted UNIT_API_KEY]"}
    with pytest.raises(ProxyError) as err:
        m.call("leaky/fail")
    assert KEY not in str(err.value) and KEY not in err.value.url and err.value.__cause__ is None
    assert err.value.__suppress_context__  # the chain held the key URL-encoded: it stays behind
    with pytest.raises(ProxyError) as err:
        m.call("leaky/crash")
    assert "ValueError: bad key [redacted UNIT_API_KEY]" in str(err.value) and err.value.__cause__ is None


def test_http_client_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "GET",
                                        f"https://api.example.com/fred?api_key={quote(KEY, safe='')}", "HTTP/1.1 200")
    # (litellm, once imported, adds a filter of its own that may redact the whole query string first)
    [line] = caplog.messages
    assert line.startswith("HTTP Request: GET https://api.example.com/fred?") and line.endswith('"HTTP/1.1 200"')
    assert KEY not in line and quote(KEY, safe="") not in line


def test_the_log_filter_itself_scrubs_message_and_arguments() -> None:
    from lllm.proxies.redact import SecretLogFilter

    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request: %s %s", ("GET", f"/f?k={KEY}"), None)
    assert SecretLogFilter().filter(record) is True
    assert record.getMessage() == "HTTP Request: GET /f?k=[redacted UNIT_API_KEY]"
    assert any(isinstance(f, SecretLogFilter) for f in logging.getLogger("httpx").filters)
