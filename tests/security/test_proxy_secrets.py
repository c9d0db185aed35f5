"""Issue 9, item 6: an upstream that echoes the request must not hand a proxy's API key to model code.

The built-in proxies run on the host behind a real gateway; kernel code in a real container calls them. The
fake upstream (loopback) echoes the request line, the key headers and a base64 dump of both, in its error pages
and inside 200 answers. Nothing the kernel sees (errors, results, cell output), nothing recorded (API call
records, the notebook) and nothing httpx logs may hold a key, raw, URL-encoded or base64-encoded.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import pytest

from lllm.proxies import ProxyManager
from lllm.proxies.gateway import Gateway
from lllm.sandbox import DockerSandbox
from lllm.sandbox._rundir import container_user
from lllm.sandbox.notebook import JupyterSession
from proxies.exa import ExaProxy
from proxies.fmp import FMPProxy
from proxies.fred import FREDProxy

pytestmark = pytest.mark.docker

KEYS = {"fmp": "fmpSECRET/key+1=2&x_0123456789", "fred": "fred/SECRET+key=99&zz_abcdef0123",
        "exa": "exa-SECRET/key+7=8&q_9876543210"}


def leaked_forms(key: str) -> list[str]:
    """The key as an echo could carry it: raw, URL-encoded (several ways) and base64 at any alignment."""
    forms = {key, quote(key, safe=""), quote(key), quote_plus(key), quote(key, safe="").lower()}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + key.encode()).decode()
            forms.add(text[4 * ((pad + 2) // 3):][:-4])  # the characters that depend on the key alone
    return sorted(forms)


def echo(method: str, path: str, query: dict, headers: dict) -> str:
    """What a debugging proxy or a careless API puts in its error page."""
    raw_query = "&".join(f"{k}={v}" for k, v in query.items())
    lines = [f"{method} {path}?{urlencode(query)} HTTP/1.1", f"raw: {path}?{raw_query}",
             f"x-api-key: {headers.get('x-api-key')}", f"apikey: {headers.get('apikey')}"]
    dump = "\n".join(lines)
    return dump + "\nbase64: " + base64.b64encode(dump.encode()).decode()


def route(path: str, query: dict, headers: dict, body: Any) -> tuple[int, Any]:
    text = echo("POST" if body is not None else "GET", path, query, headers)
    if path.endswith(("/quote", "/series/observations", "/search")):
        return 500, f"<html><body><h1>500 Internal Server Error</h1><pre>{text}</pre></body></html>"
    if path.endswith("/profile"):
        return 200, [{"symbol": "AAPL", "companyName": "Apple", "debug": text}]
    if path.endswith("/series"):
        return 200, {"seriess": [{"id": "GDP", "title": text}]}
    return 200, {"results": [{"url": "https://example.com", "title": "Page", "text": text}]}


CELL = """
import json
out = {}
for key, path, params in [("fmp_err", "fmp/quote", {"symbol": "AAPL"}), ("fmp_ok", "fmp/profile", {"symbol": "AAPL"}),
                          ("fred_err", "fred/series", {"series_id": "GDP"}), ("fred_ok", "fred/info", {"series_id": "GDP"}),
                          ("exa_err", "exa/search", {"query": "x"}), ("exa_ok", "exa/contents", {"urls": ["https://example.com"]})]:
    try:
        out[key] = CALL_API(path, params)
    except CallAPIError as e:
        out[key] = [e.type, e.message, str(e), repr(e)]
print(json.dumps(out))
print(out)
"""


def test_no_key_reaches_the_kernel_the_records_the_notebook_or_the_http_log(sandbox_image: str, fake_api,
                                                                            tmp_path: Path) -> None:
    api = fake_api(route)
    manager = ProxyManager(proxies={
        "fmp": FMPProxy(api_key=KEYS["fmp"], base_url=api.url + "/stable"),
        "fred": FREDProxy(api_key=KEYS["fred"], base_url=api.url + "/fred"),
        "exa": ExaProxy(api_key=KEYS["exa"], base_url=api.url)})
    records: list = []
    http_log: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            http_log.append(self.format(record))

    handler = Capture(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        with Gateway() as gateway, DockerSandbox(image=sandbox_image, cell_timeout=60) as sb:
            with gateway.open_session(sb.session_dir, manager, session_id="keys", tracer=records.append,
                                      token_owner=container_user()[0]) as session:
                notebook = JupyterSession(sb, path=tmp_path / "keys.ipynb", autosave=True)
                result = notebook.run(CELL)
                session.flush()
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    assert result.status == "ok", result.text
    out = json.loads(result.stdout.strip().splitlines()[0])
    # the calls did reach the upstream and its echo came back (scrubbed), so the test saw real leaks to stop
    assert out["fmp_err"][0] == "ProxyError" and "HTTP 500" in out["fmp_err"][1] and "GET /stable/quote" in out["fmp_err"][1]
    assert "raw: /fred/series/observations" in out["fred_err"][1]
    assert "x-api-key:" in out["exa_err"][1] and "POST /search" in out["exa_err"][1]
    assert "debug" in out["fmp_ok"] and out["fred_ok"]["title"] and out["exa_ok"][0]["text"]
    assert any("HTTP Request" in line for line in http_log)
    seen = {
        "kernel": result.text + result.stdout + result.stderr,
        "records": json.dumps([r.model_dump() for r in records]),
        "notebook": (tmp_path / "keys.ipynb").read_text(),
        "http log": "\n".join(http_log),
    }
    for where, text in seen.items():
        for name, key in KEYS.items():
            for form in leaked_forms(key):
                assert form not in text, f"{name}'s key leaked into the {where} as {form!r}"
    # keys travel in headers where the API allows it (FMP's `apikey` header, Exa's `x-api-key`); FRED has only
    # the `api_key` query parameter
    by_path = {r["path"]: r for r in api.requests}
    fmp_req, exa_req = by_path["/stable/quote"], by_path["/search"]
    assert "apikey" not in fmp_req["query"] and fmp_req["headers"]["apikey"] == KEYS["fmp"]
    assert exa_req["headers"]["x-api-key"] == KEYS["exa"] and not exa_req["query"]
    assert by_path["/fred/series/observations"]["query"]["api_key"] == KEYS["fred"]
