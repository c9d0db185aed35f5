"""The `fmp` proxy: Financial Modeling Prep's stable API (prices, quotes, profiles, earnings, statements).

Docs of the API behind it: https://site.financialmodelingprep.com/developer/docs/stable. Key: `FMP_API_KEY`
(sent in the `apikey` header, which the stable API accepts as well as the query parameter, so that URLs in
logs and echoes carry no key); base URL: `FMP_BASE_URL` (default https://financialmodelingprep.com/stable).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lllm.errors import ProxyError
from lllm.proxies.base import BaseProxy, ProxyRegistrator
from proxies._http import PERIODS, HTTPProxy

_PRICE_EXAMPLE = [{"symbol": "AAPL", "date": "2025-06-27", "open": 201.89, "high": 203.22, "low": 200.0,
                   "close": 201.08, "volume": 73114100, "change": -0.81, "changePercent": -0.4, "vwap": 201.55}]
_STATEMENT_PERIODS = ["annual", "quarter"]


@ProxyRegistrator(
    path="fmp",
    name="Financial Modeling Prep",
    description="Market data: daily prices, quotes, company profiles, earnings and financial statements of listed "
                "companies. Symbols are tickers such as AAPL.",
)
class FMPProxy(HTTPProxy):
    """Financial Modeling Prep (https://financialmodelingprep.com)."""

    api_key_env: ClassVar[str | None] = "FMP_API_KEY"
    base_url_env: ClassVar[str] = "FMP_BASE_URL"
    default_base_url: ClassVar[str] = "https://financialmodelingprep.com/stable"
    service: ClassVar[str] = "Financial Modeling Prep"

    def _auth(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        headers["apikey"] = self._require_key()

    @staticmethod
    def _symbol(symbol: str) -> str:
        symbol = symbol.strip().upper()
        if not symbol or len(symbol) > 20 or not all(c.isalnum() or c in ".-^=" for c in symbol):
            raise ProxyError(f"symbol must be a ticker like 'AAPL', got {symbol!r}.")
        return symbol

    @BaseProxy.endpoint(
        category="Prices", endpoint="price", dt_cutoff=("date", "%Y-%m-%d"),
        description="Daily end-of-day prices of one symbol, oldest first (so prices[-1] is the latest day).",
        params={
            "symbol*": (str, "AAPL", "ticker"),
            "period": {"type": str, "example": "1y", "default": "1y", "enum": list(PERIODS),
                       "description": "how far back from the latest day (ignored when start is given)"},
            "start": (str, "2025-01-01", "first date, YYYY-MM-DD"),
            "end": (str, "2025-06-30", "last date, YYYY-MM-DD (default: today)"),
        },
        response=_PRICE_EXAMPLE, method="GET",
    )
    def price(self, symbol: str, period: str = "1y", start: str | None = None,
              end: str | None = None) -> list[dict[str, Any]]:
        frm, to = self._date_range(period, start, end)
        rows = self._get("historical-price-eod/full", {"symbol": self._symbol(symbol), "from": frm, "to": to})
        if isinstance(rows, dict):  # older API versions wrap the rows
            rows = rows.get("historical", [])
        return sorted(rows, key=lambda r: r.get("date", ""))

    @BaseProxy.endpoint(
        category="Prices", endpoint="quote",
        description="The latest quote of one symbol: price, change, day and year range, market cap, volume.",
        params={"symbol*": (str, "AAPL", "ticker")},
        response={"symbol": "AAPL", "name": "Apple Inc.", "price": 201.08, "changePercentage": -0.4,
                  "change": -0.81, "volume": 73114100, "dayLow": 200.0, "dayHigh": 203.22, "yearHigh": 260.1,
                  "yearLow": 169.21, "marketCap": 3003290000000, "priceAvg50": 200.4, "priceAvg200": 222.9,
                  "exchange": "NASDAQ", "open": 201.89, "previousClose": 201.89, "timestamp": 1751054400},
    )
    def quote(self, symbol: str) -> dict[str, Any]:
        rows = self._get("quote", {"symbol": self._symbol(symbol)})
        return _first(rows, f"no quote for {symbol!r}")

    @BaseProxy.endpoint(
        category="Company", endpoint="profile",
        description="Company profile: name, sector, industry, CEO, employees, description, market cap.",
        params={"symbol*": (str, "AAPL", "ticker")},
        response={"symbol": "AAPL", "companyName": "Apple Inc.", "price": 201.08, "marketCap": 3003290000000,
                  "currency": "USD", "exchange": "NASDAQ", "industry": "Consumer Electronics",
                  "sector": "Technology", "ceo": "Timothy D. Cook", "fullTimeEmployees": "164000",
                  "website": "https://www.apple.com", "description": "Apple Inc. designs, manufactures ..."},
    )
    def profile(self, symbol: str) -> dict[str, Any]:
        rows = self._get("profile", {"symbol": self._symbol(symbol)})
        return _first(rows, f"no profile for {symbol!r}")

    @BaseProxy.endpoint(
        category="Fundamentals", endpoint="earnings", dt_cutoff=("date", "%Y-%m-%d"),
        description="Earnings reports (actual and estimated EPS and revenue), newest first.",
        params={"symbol*": (str, "AAPL", "ticker"), "limit": {"type": int, "example": 8, "default": 8}},
        response=[{"symbol": "AAPL", "date": "2025-05-01", "epsActual": 1.65, "epsEstimated": 1.63,
                   "revenueActual": 95359000000, "revenueEstimated": 94536000000, "lastUpdated": "2025-05-02"}],
    )
    def earnings(self, symbol: str, limit: int = 8) -> list[dict[str, Any]]:
        rows = self._get("earnings", {"symbol": self._symbol(symbol), "limit": _bounded(limit, 1, 100)})
        return sorted(rows, key=lambda r: r.get("date", ""), reverse=True)[:limit]

    @BaseProxy.endpoint(
        category="Fundamentals", endpoint="balance-sheet", dt_cutoff=("date", "%Y-%m-%d"),
        description="Balance sheet statements, newest first: assets, liabilities, equity, cash, debt.",
        params={"symbol*": (str, "AAPL", "ticker"),
                "period": {"type": str, "example": "annual", "default": "annual", "enum": _STATEMENT_PERIODS},
                "limit": {"type": int, "example": 4, "default": 4}},
        response=[{"date": "2024-09-28", "symbol": "AAPL", "reportedCurrency": "USD", "fiscalYear": "2024",
                   "period": "FY", "cashAndCashEquivalents": 29943000000, "totalAssets": 364980000000,
                   "totalLiabilities": 308030000000, "totalStockholdersEquity": 56950000000,
                   "totalDebt": 106629000000, "netDebt": 76686000000}],
    )
    def balance_sheet(self, symbol: str, period: str = "annual", limit: int = 4) -> list[dict[str, Any]]:
        rows = self._get("balance-sheet-statement", {"symbol": self._symbol(symbol), "period": period,
                                                     "limit": _bounded(limit, 1, 40)})
        return sorted(rows, key=lambda r: r.get("date", ""), reverse=True)[:limit]

    @BaseProxy.endpoint(
        category="Fundamentals", endpoint="income-statement", dt_cutoff=("date", "%Y-%m-%d"),
        description="Income statements, newest first: revenue, gross profit, operating income, net income, EPS.",
        params={"symbol*": (str, "AAPL", "ticker"),
                "period": {"type": str, "example": "annual", "default": "annual", "enum": _STATEMENT_PERIODS},
                "limit": {"type": int, "example": 4, "default": 4}},
        response=[{"date": "2024-09-28", "symbol": "AAPL", "reportedCurrency": "USD", "fiscalYear": "2024",
                   "period": "FY", "revenue": 391035000000, "grossProfit": 180683000000,
                   "operatingIncome": 123216000000, "netIncome": 93736000000, "eps": 6.11}],
    )
    def income_statement(self, symbol: str, period: str = "annual", limit: int = 4) -> list[dict[str, Any]]:
        rows = self._get("income-statement", {"symbol": self._symbol(symbol), "period": period,
                                              "limit": _bounded(limit, 1, 40)})
        return sorted(rows, key=lambda r: r.get("date", ""), reverse=True)[:limit]

    @BaseProxy.endpoint(
        category="Search", endpoint="search",
        description="Find ticker symbols by company name or symbol.",
        params={"query*": (str, "apple", "name or symbol"), "limit": {"type": int, "example": 10, "default": 10}},
        response=[{"symbol": "AAPL", "name": "Apple Inc.", "currency": "USD", "exchange": "NASDAQ",
                   "exchangeFullName": "NASDAQ Global Select"}],
    )
    def search(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        return self._get("search-symbol", {"query": query, "limit": _bounded(limit, 1, 100)})[:limit]


def _first(rows: Any, message: str) -> dict[str, Any]:
    if isinstance(rows, list) and rows:
        return rows[0]
    if isinstance(rows, dict) and rows:
        return rows
    raise ProxyError(message + "; check the symbol with fmp/search.")


def _bounded(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ProxyError(f"limit must be between {low} and {high}, got {value!r}.")
    return value
