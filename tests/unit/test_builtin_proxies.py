"""The built-in proxies against local fakes of their APIs on loopback, and their offline variants."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lllm.errors import ProxyError
from lllm.proxies import ProxyManager
from proxies.exa import ExaProxy
from proxies.fmp import FMPProxy
from proxies.fred import FREDProxy

# ------------------------------------------------------------------------------------------------ FMP
def fmp_route(path: str, q: dict, h: dict, body: Any) -> tuple[int, Any]:
    if h.get("apikey") != "fmp-key" or "apikey" in q:  # the key travels in a header, never in the URL
        return 401, {"Error Message": "Invalid API KEY."}
    sym = q.get("symbol")
    if path == "/stable/historical-price-eod/full":  # newest first, as FMP sends it
        return 200, [{"symbol": sym, "date": d, "open": 1.0, "high": 2.0, "low": 0.5, "close": c, "volume": 10,
                      "change": 0.1, "changePercent": 1.0, "vwap": 1.2}
                     for d, c in (("2025-06-03", 3.0), ("2025-06-02", 2.0), ("2025-06-01", 1.0))]
    if path == "/stable/quote":
        return 200, [{"symbol": sym, "name": "Apple Inc.", "price": 201.08, "marketCap": 3e12}]
    if path == "/stable/profile":
        return 200, [] if sym == "NONE" else [{"symbol": sym, "companyName": "Apple Inc.", "sector": "Technology"}]
    if path == "/stable/earnings":
        return 200, [{"symbol": sym, "date": d, "epsActual": 1.0, "epsEstimated": 0.9} for d in
                     ("2024-01-01", "2025-05-01", "2024-10-31")]
    if path in ("/stable/balance-sheet-statement", "/stable/income-statement"):
        return 200, [{"date": "2024-09-28", "symbol": sym, "period": q["period"], "totalAssets": 1}]
    if path == "/stable/search-symbol":
        return 200, [{"symbol": "AAPL", "name": "Apple Inc."}, {"symbol": "APLE", "name": "Apple Hospitality"}]
    if path == "/stable/boom":
        return 500, "internal error"
    return 404, {"error": "not found"}


def test_fmp_against_a_fake(fake_api) -> None:
    api = fake_api(fmp_route)
    proxy = FMPProxy(api_key="fmp-key", base_url=api.url + "/stable")
    m = ProxyManager(proxies={"fmp": proxy})
    prices = m.call("fmp/price", {"symbol": "aapl", "period": "1y"})
    assert [p["close"] for p in prices] == [1.0, 2.0, 3.0]  # oldest first: prices[-1] is the latest
    req = api.requests[-1]
    assert req["path"] == "/stable/historical-price-eod/full" and req["query"]["symbol"] == "AAPL"
    assert req["query"]["from"] < req["query"]["to"] and req["headers"]["user-agent"].startswith("lllm-proxy")
    m.call("fmp/price", {"symbol": "AAPL", "start": "2025-01-01", "end": "2025-02-01"})
    assert (api.requests[-1]["query"]["from"], api.requests[-1]["query"]["to"]) == ("2025-01-01", "2025-02-01")
    assert m.call("fmp/quote", {"symbol": "AAPL"})["price"] == 201.08
    assert m.call("fmp/profile", {"symbol": "AAPL"})["sector"] == "Technology"
    assert [e["date"] for e in m.call("fmp/earnings", {"symbol": "AAPL", "limit": 2})] == ["2025-05-01", "2024-10-31"]
    assert m.call("fmp/balance-sheet", {"symbol": "AAPL", "period": "quarter"})[0]["period"] == "quarter"
    assert api.requests[-1]["path"] == "/stable/balance-sheet-statement"
    assert m.call("fmp/income-statement", {"symbol": "AAPL"})[0]["period"] == "annual"
    assert len(m.call("fmp/search", {"query": "apple", "limit": 1})) == 1
    with pytest.raises(ProxyError, match="no profile for 'NONE'"):
        m.call("fmp/profile", {"symbol": "NONE"})
    with pytest.raises(ProxyError, match="symbol must be a ticker"):
        m.call("fmp/quote", {"symbol": "AA PL; DROP"})
    with pytest.raises(ProxyError, match="'period' of 'fmp/price' must be one of"):
        m.call("fmp/price", {"symbol": "AAPL", "period": "7w"})
    with pytest.raises(ProxyError, match="start must be a date"):
        m.call("fmp/price", {"symbol": "AAPL", "start": "yesterday"})


def test_fmp_errors_name_the_env_var_never_the_key(fake_api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = fake_api(fmp_route)
    wrong = FMPProxy(api_key="wrong-key-123", base_url=api.url + "/stable")
    with pytest.raises(ProxyError) as err:
        wrong.call("quote", {"symbol": "AAPL"})
    assert "HTTP 401" in str(err.value) and "FMP_API_KEY" in str(err.value) and "wrong-key-123" not in str(err.value)
    assert err.value.status_code == 401
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    with pytest.raises(ProxyError, match="set FMP_API_KEY"):
        FMPProxy(base_url=api.url + "/stable").call("quote", {"symbol": "AAPL"})
    assert len(api.requests) == 1  # no request went out without a key
    monkeypatch.setenv("FMP_API_KEY", "fmp-key")
    monkeypatch.setenv("FMP_BASE_URL", api.url + "/stable")
    assert FMPProxy().call("quote", {"symbol": "AAPL"})["symbol"] == "AAPL"  # key and URL from the environment


def test_http_failures_become_proxy_errors(fake_api) -> None:
    api = fake_api(lambda path, q, h, b: (500, "boom: <html>") if path.endswith("quote") else
                   ((429, {}) if path.endswith("profile") else (200, "not json{")))
    proxy = FMPProxy(api_key="k", base_url=api.url)
    with pytest.raises(ProxyError, match="HTTP 500 for 'quote': boom"):
        proxy.call("quote", {"symbol": "A"})
    with pytest.raises(ProxyError, match="429"):
        proxy.call("profile", {"symbol": "A"})
    with pytest.raises(ProxyError, match="not JSON"):
        proxy.call("earnings", {"symbol": "A"})
    closed = FMPProxy(api_key="k", base_url="http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ProxyError, match="could not be reached"):
        closed.call("quote", {"symbol": "A"})


def test_http_timeouts(fake_api) -> None:
    import time

    api = fake_api(lambda path, q, h, b: (time.sleep(1.0), (200, [{}]))[1])
    with pytest.raises(ProxyError, match="did not answer within 0.2s"):
        FMPProxy(api_key="k", base_url=api.url, timeout=0.2).call("quote", {"symbol": "A"})


# ------------------------------------------------------------------------------------------------ FRED
def fred_route(path: str, q: dict, h: dict, body: Any) -> tuple[int, Any]:
    if q.get("api_key") != "fred-key" or q.get("file_type") != "json":
        return 400, {"error_code": 400, "error_message": "Bad Request. The value for variable api_key is not registered."}
    if path == "/fred/series/observations":
        obs = [("2024-10-01", "29374.914"), ("2025-01-01", "29962.047"), ("2024-07-01", "."), ("2024-04-01", "28624.069")]
        return 200, {"realtime_start": "2025-06-30", "count": 4, "observations": [
            {"realtime_start": "2025-06-30", "realtime_end": "2025-06-30", "date": d, "value": v} for d, v in obs]}
    if path == "/fred/series":
        if q["series_id"] == "NOPE":
            return 200, {"seriess": []}
        return 200, {"seriess": [{"id": q["series_id"], "title": "Unemployment Rate", "frequency": "Monthly",
                                  "units": "Percent", "notes": "long notes dropped"}]}
    if path == "/fred/series/search":
        return 200, {"seriess": [{"id": "CPIAUCSL", "title": "CPI", "popularity": 95, "notes": "x"},
                                 {"id": "CPILFESL", "title": "Core CPI", "popularity": 80}]}
    return 404, {}


def test_fred_against_a_fake(fake_api) -> None:
    api = fake_api(fred_route)
    m = ProxyManager(proxies={"fred": FREDProxy(api_key="fred-key", base_url=api.url + "/fred")})
    macro = m.call("fred/series", {"series_id": "gdp", "start": "2024-01-01"})
    assert macro[-1] == {"date": "2025-01-01", "value": 29962.047}  # the seed's macro[-1]['value']
    assert [r["value"] for r in macro] == [28624.069, None, 29374.914, 29962.047]
    q = api.requests[-1]["query"]
    assert (q["series_id"], q["observation_start"]) == ("GDP", "2024-01-01") and "observation_end" not in q
    assert len(m.call("fred/series", {"series_id": "GDP", "limit": 2})) == 2
    info = m.call("fred/info", {"series_id": "UNRATE"})
    assert info["title"] == "Unemployment Rate" and "notes" not in info
    found = m.call("fred/search", {"query": "consumer price index", "limit": 1})
    assert found == [{"id": "CPIAUCSL", "title": "CPI", "frequency": None, "units": None, "seasonal_adjustment": None,
                      "observation_start": None, "observation_end": None, "last_updated": None, "popularity": 95}]
    assert api.requests[-1]["query"]["search_text"] == "consumer price index"
    with pytest.raises(ProxyError, match="no series 'NOPE'"):
        m.call("fred/info", {"series_id": "NOPE"})
    with pytest.raises(ProxyError, match="series_id must be a FRED id"):
        m.call("fred/series", {"series_id": "GDP/../x"})
    bad = FREDProxy(api_key="other", base_url=api.url + "/fred")
    with pytest.raises(ProxyError, match="HTTP 400.*not registered"):
        bad.call("series", {"series_id": "GDP"})


# ------------------------------------------------------------------------------------------------ Exa
def exa_route(path: str, q: dict, h: dict, body: Any) -> tuple[int, Any]:
    if h.get("x-api-key") != "exa-key":
        return 401, {"error": "invalid api key"}
    if path == "/search":
        n = body["numResults"]
        return 200, {"requestId": "r1", "resolvedSearchType": "neural", "results": [
            {"id": f"https://example.com/{i}", "title": f"Apple earnings {i}", "url": f"https://example.com/{i}",
             "publishedDate": "2025-05-01T12:00:00.000Z", "author": "A. Writer", "score": 0.9,
             "text": "Apple reported strong results. " * 40} for i in range(n + 2)]}
    if path == "/contents":
        return 200, {"results": [{"id": u, "url": u, "title": "Page", "text": "full text " * 10} for u in body["urls"]]}
    return 404, {}


def test_exa_against_a_fake(fake_api) -> None:
    api = fake_api(exa_route)
    m = ProxyManager(proxies={"exa": ExaProxy(api_key="exa-key", base_url=api.url)})
    news = m.call("exa/search", {"query": "Apple earnings outlook 2025", "num_results": 5, "text_chars": 50,
                                 "include_domains": ["example.com"], "start_published_date": "2025-01-01"})
    assert len(news) == 5
    for article in news:  # the seed's loop: article["title"], article["url"]
        assert article["title"].startswith("Apple earnings") and article["url"].startswith("https://example.com/")
        assert article["published_date"] == "2025-05-01" and len(article["text"]) == 50
    sent = api.requests[-1]
    assert sent["method"] == "POST" and sent["path"] == "/search" and "exa-key" not in json.dumps(sent["json"])
    assert sent["json"] == {"query": "Apple earnings outlook 2025", "numResults": 5, "type": "auto",
                            "startPublishedDate": "2025-01-01", "includeDomains": ["example.com"],
                            "contents": {"text": {"maxCharacters": 50}}}
    pages = m.call("exa/contents", {"urls": ["https://example.com/1"], "text_chars": 20})
    assert pages[0]["text"] == "full text full text "
    with pytest.raises(ProxyError, match="num_results must be between 1 and 25"):
        m.call("exa/search", {"query": "x", "num_results": 500})
    with pytest.raises(ProxyError, match="urls must be a list"):
        m.call("exa/contents", {"urls": []})
    with pytest.raises(ProxyError, match="EXA_API_KEY"):
        ExaProxy(api_key="nope", base_url=api.url).call("search", {"query": "x"})


# ------------------------------------------------------------------------------------------------ offline
def test_offline_proxies_answer_the_seed_calls_with_no_key_and_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FMP_API_KEY", "FRED_API_KEY", "EXA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FMP_BASE_URL", "http://127.0.0.1:9")  # would fail if anything went to the network
    m = ProxyManager(["fmp", "fred", "exa"], source="offline")
    prices = m.call("fmp/price", {"symbol": "AAPL", "period": "1y"})
    assert 240 <= len(prices) <= 262 and prices[-1]["date"] == "2025-06-30"
    assert prices[0]["date"] >= "2024-06-29" and all(a["date"] < b["date"] for a, b in zip(prices, prices[1:]))
    macro = m.call("fred/series", {"series_id": "GDP"})
    assert isinstance(macro[-1]["value"], float) and macro[-1]["date"] == "2025-01-01"
    news = m.call("exa/search", {"query": "Apple earnings outlook 2025", "num_results": 5})
    assert len(news) == 5 and "Apple" in news[0]["title"] and news[0]["url"].startswith("https://")
    assert m.call("fmp/quote", {"symbol": "MSFT"})["price"] == m.call("fmp/price", {"symbol": "MSFT", "period": "1m"})[-1]["close"]
    assert m.call("fred/search", {"query": "unemployment rate"})[0]["id"] == "UNRATE"
    assert m.call("fmp/search", {"query": "nvidia"})[0]["symbol"] == "NVDA"
    with pytest.raises(ProxyError, match="offline data has no symbol 'TSLA'"):
        m.call("fmp/price", {"symbol": "TSLA"})
    assert "Offline: bundled sample data" in m.api_doc("fmp")
    assert m.directory().count("offline sample data") == 3


def test_cutoff_date_for_backtests() -> None:
    m = ProxyManager(["fmp", "fred", "exa"], source="offline", cutoff_date="2024-12-31")
    prices = m.call("fmp/price", {"symbol": "AAPL", "period": "1m"})
    assert prices[-1]["date"] <= "2024-12-31" and prices[0]["date"] >= "2024-11-30"
    assert m.call("fred/series", {"series_id": "UNRATE"})[-1]["date"] == "2024-12-01"
    assert all(e["date"] <= "2024-12-31" for e in m.call("fmp/earnings", {"symbol": "MSFT"}))
    assert m.call("exa/search", {"query": "Apple earnings", "num_results": 5}) == []  # all articles are 2025


def test_exa_sends_the_cutoff_as_end_date(fake_api) -> None:
    api = fake_api(exa_route)
    ExaProxy(api_key="exa-key", base_url=api.url, cutoff_date="2025-03-01").call("search", {"query": "x"})
    assert api.requests[-1]["json"]["endPublishedDate"] == "2025-03-01"
