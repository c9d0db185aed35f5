"""Offline stand-ins for `fmp`, `fred` and `exa`: the same endpoints, served from `proxies/data/` (no key, no network).

Each class subclasses the live proxy and answers its HTTP requests from the bundled sample data, in the shape of
the real API, so the endpoints, parameters, docs and post-processing are the live ones. The data is a demo set
(see `data/generate_offline_data.py`): prices are a seeded random walk, other figures rounded approximations.
Dates count back from the data's last day, 2025-06-30, not from today. Registered as the "offline" variant:
`ProxyManager(activate_proxies=["fmp", "fred", "exa"], source="offline")`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from lllm.errors import ProxyError
from lllm.proxies.base import ProxyRegistrator
from proxies.exa import ExaProxy
from proxies.fmp import FMPProxy
from proxies.fred import FREDProxy

DATA_DIR = Path(__file__).parent / "data"
DATA_END = dt.date(2025, 6, 30)
_NOTE = " Offline: bundled sample data up to 2025-06-30 (not live market data)."


@functools.lru_cache(maxsize=None)
def load(name: str) -> Any:
    """A bundled data file, parsed once per process."""
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


class _Offline:
    api_key_env: ClassVar[str | None] = None
    cutoff_date: dt.datetime | None  # set by BaseProxy.__init__ (the class this one is mixed into)

    def _auth(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        pass

    def _today(self) -> dt.date:
        return min(DATA_END, self.cutoff_date.date()) if self.cutoff_date is not None else DATA_END

    def _post(self, path: str, json: dict[str, Any]) -> Any:
        return self._get(path, json)

    def _get(self, path: str, params: dict[str, Any]) -> Any:  # pragma: no cover - replaced below
        raise NotImplementedError


@ProxyRegistrator(path="fmp", name=FMPProxy._proxy_name, description=FMPProxy._proxy_description + _NOTE,
                  variant="offline")
class OfflineFMPProxy(_Offline, FMPProxy):
    """`fmp` over the bundled sample data (AAPL, MSFT, NVDA, GOOGL)."""

    def _company(self, symbol: Any) -> dict[str, Any]:
        companies = load("fmp_companies.json")
        if symbol not in companies:
            raise ProxyError(f"the offline data has no symbol {symbol!r}; it has {sorted(companies)!r}.")
        return companies[symbol]

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        symbol = params.get("symbol")
        if path == "historical-price-eod/full":
            self._company(symbol)
            cols = load("fmp_prices.json")[symbol]
            rows, prev = [], None
            for i, date in enumerate(cols["date"]):
                close = cols["close"][i]
                if params["from"] <= date <= params["to"]:
                    change = round(close - prev, 2) if prev else 0.0
                    rows.append({"symbol": symbol, "date": date, "open": cols["open"][i], "high": cols["high"][i],
                                 "low": cols["low"][i], "close": close, "volume": cols["volume"][i],
                                 "change": change,
                                 "changePercent": round(change / prev * 100, 4) if prev else 0.0,
                                 "vwap": round((cols["high"][i] + cols["low"][i] + close) / 3, 2)})
                prev = close
            return rows[::-1]  # the API sends newest first
        if path in ("quote", "profile"):
            return [self._company(symbol)[path]]
        if path == "earnings":
            return self._company(symbol)["earnings"]
        if path in ("balance-sheet-statement", "income-statement"):
            if params.get("period") == "quarter":
                raise ProxyError("the offline data has annual statements only; use period='annual'.")
            return self._company(symbol)["balance" if path.startswith("balance") else "income"]
        if path == "search-symbol":
            words = params["query"].lower()
            return [{"symbol": s, "name": c["profile"]["companyName"], "currency": "USD", "exchange": "NASDAQ",
                     "exchangeFullName": "NASDAQ Global Select"}
                    for s, c in load("fmp_companies.json").items()
                    if words in s.lower() or words in c["profile"]["companyName"].lower()]
        raise ProxyError(f"the offline fmp proxy does not serve {path!r}.")


@ProxyRegistrator(path="fred", name=FREDProxy._proxy_name, description=FREDProxy._proxy_description + _NOTE,
                  variant="offline")
class OfflineFREDProxy(_Offline, FREDProxy):
    """`fred` over the bundled sample data (GDP, UNRATE, FEDFUNDS, CPIAUCSL from 2019)."""

    def _series(self, sid: str) -> dict[str, Any]:
        series = load("fred_series.json")
        if sid not in series:
            raise ProxyError(f"the offline data has no series {sid!r}; it has {sorted(series)!r}.")
        return series[sid]

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        if path == "series/observations":
            s = self._series(params["series_id"])
            start = params.get("observation_start") or "0000"
            end = params.get("observation_end") or "9999"
            return {"observations": [{"realtime_start": "2025-06-30", "realtime_end": "2025-06-30", "date": d,
                                      "value": str(v)} for d, v in s["observations"] if start <= d <= end]}
        if path == "series":
            return {"seriess": [self._series(params["series_id"])["info"]]}
        if path == "series/search":
            words = [w for w in re.split(r"\W+", params["search_text"].lower()) if w]
            hits = []
            for s in load("fred_series.json").values():
                text = (s["info"]["id"] + " " + s["info"]["title"]).lower()
                score = sum(w in text for w in words)
                if score:
                    hits.append((score, s["info"]["popularity"], s["info"]))
            hits.sort(key=lambda h: (-h[0], -h[1]))
            return {"seriess": [h[2] for h in hits][: params.get("limit", 10)]}
        raise ProxyError(f"the offline fred proxy does not serve {path!r}.")


@ProxyRegistrator(path="exa", name=ExaProxy._proxy_name, description=ExaProxy._proxy_description + _NOTE,
                  variant="offline")
class OfflineExaProxy(_Offline, ExaProxy):
    """`exa` over ten bundled sample articles (ranked by the words they share with the query)."""

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        articles = load("exa_articles.json")
        chars = ((params.get("contents") or {}).get("text") or params.get("text") or {}).get("maxCharacters", 0)
        if path == "search":
            words = {w for w in re.split(r"\W+", params["query"].lower()) if len(w) > 2}
            since = params.get("startPublishedDate") or ""
            domains = params.get("includeDomains")
            scored = []
            for a in articles:
                if a["publishedDate"][:10] < since or (domains and not any(d in a["url"] for d in domains)):
                    continue
                text = f"{a['title']} {a['text']} {a['tag']}".lower()
                score = sum(w in text for w in words) + 2 * sum(w in a["title"].lower() for w in words)
                if score:
                    scored.append((score, a["publishedDate"], a))
            scored.sort(key=lambda s: (-s[0], s[1]))
            return {"results": [_with_text(a, chars) for _, _, a in scored[: params.get("numResults", 5)]]}
        if path == "contents":
            by_url = {a["url"]: a for a in articles}
            return {"results": [_with_text(by_url[u], chars) for u in params["urls"] if u in by_url]}
        raise ProxyError(f"the offline exa proxy does not serve {path!r}.")


def _with_text(article: dict[str, Any], chars: int) -> dict[str, Any]:
    out = {k: article[k] for k in ("id", "title", "url", "publishedDate", "author")}
    if chars:
        out["text"] = article["text"][:chars]
    return out
