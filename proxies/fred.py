"""The `fred` proxy: FRED, the St. Louis Fed's economic data (series observations, search, series info).

Docs of the API behind it: https://fred.stlouisfed.org/docs/api/fred/. Key: `FRED_API_KEY` (the `api_key` query
parameter: FRED accepts it nowhere else, so the URL carries it and is scrubbed wherever it is shown); base URL:
`FRED_BASE_URL` (default https://api.stlouisfed.org/fred).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lllm.errors import ProxyError
from lllm.proxies.base import BaseProxy, ProxyRegistrator
from proxies._http import HTTPProxy

_INFO_KEYS = ("id", "title", "frequency", "units", "seasonal_adjustment", "observation_start",
              "observation_end", "last_updated", "popularity")


@ProxyRegistrator(
    path="fred",
    name="FRED (Federal Reserve Economic Data)",
    description="Macroeconomic time series from the St. Louis Fed: GDP, unemployment, inflation, interest rates "
                "and some 800,000 more, by series id (GDP, UNRATE, CPIAUCSL, FEDFUNDS, DGS10).",
)
class FREDProxy(HTTPProxy):
    """FRED (https://fred.stlouisfed.org)."""

    api_key_env: ClassVar[str | None] = "FRED_API_KEY"
    base_url_env: ClassVar[str] = "FRED_BASE_URL"
    default_base_url: ClassVar[str] = "https://api.stlouisfed.org/fred"
    service: ClassVar[str] = "FRED"

    def _auth(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        params["api_key"] = self._require_key()
        params["file_type"] = "json"

    @staticmethod
    def _series_id(series_id: str) -> str:
        sid = series_id.strip().upper()
        if not sid or len(sid) > 40 or not all(c.isalnum() or c == "_" for c in sid):
            raise ProxyError(f"series_id must be a FRED id like 'GDP' or 'UNRATE', got {series_id!r}; "
                             "find ids with fred/search.")
        return sid

    @BaseProxy.endpoint(
        category="Series", endpoint="series", dt_cutoff=("date", "%Y-%m-%d"),
        description="Observations of one series, oldest first (so series[-1] is the latest). Values are floats; "
                    "None where FRED has no value ('.').",
        params={"series_id*": (str, "GDP", "FRED series id"),
                "start": (str, "2015-01-01", "first date, YYYY-MM-DD"),
                "end": (str, "2025-06-30", "last date, YYYY-MM-DD"),
                "limit": {"type": int, "example": 100, "description": "keep only the latest N observations"}},
        response=[{"date": "2025-01-01", "value": 29962.047}],
    )
    def series(self, series_id: str, start: str | None = None, end: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
        if limit is not None and not 1 <= limit <= 100000:
            raise ProxyError(f"limit must be between 1 and 100000, got {limit!r}.")
        body = self._get("series/observations", {"series_id": self._series_id(series_id),
                                                 "observation_start": start, "observation_end": end})
        rows = [{"date": o["date"], "value": _number(o.get("value"))} for o in body.get("observations", [])]
        rows.sort(key=lambda r: r["date"])
        return rows[-limit:] if limit else rows

    @BaseProxy.endpoint(
        category="Series", endpoint="info",
        description="Metadata of one series: title, frequency, units, seasonal adjustment, date range.",
        params={"series_id*": (str, "UNRATE", "FRED series id")},
        response={"id": "UNRATE", "title": "Unemployment Rate", "frequency": "Monthly", "units": "Percent",
                  "seasonal_adjustment": "Seasonally Adjusted", "observation_start": "1948-01-01",
                  "observation_end": "2025-05-01", "last_updated": "2025-06-06 07:44:02-05", "popularity": 94},
    )
    def info(self, series_id: str) -> dict[str, Any]:
        body = self._get("series", {"series_id": self._series_id(series_id)})
        seriess = body.get("seriess") or []
        if not seriess:
            raise ProxyError(f"FRED has no series {series_id!r}; find ids with fred/search.")
        return {k: seriess[0].get(k) for k in _INFO_KEYS}

    @BaseProxy.endpoint(
        category="Search", endpoint="search",
        description="Find series by words in their title or notes, most popular first.",
        params={"query*": (str, "consumer price index", "search words"),
                "limit": {"type": int, "example": 10, "default": 10}},
        response=[{"id": "CPIAUCSL", "title": "Consumer Price Index for All Urban Consumers: All Items in U.S. "
                   "City Average", "frequency": "Monthly", "units": "Index 1982-1984=100",
                   "seasonal_adjustment": "Seasonally Adjusted", "observation_start": "1947-01-01",
                   "observation_end": "2025-05-01", "last_updated": "2025-06-11 07:38:02-05", "popularity": 95}],
    )
    def search(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise ProxyError(f"limit must be between 1 and 1000, got {limit!r}.")
        body = self._get("series/search", {"search_text": query, "limit": limit,
                                           "order_by": "popularity", "sort_order": "desc"})
        return [{k: s.get(k) for k in _INFO_KEYS} for s in (body.get("seriess") or [])][:limit]


def _number(value: Any) -> float | None:
    if value in (None, ".", ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
