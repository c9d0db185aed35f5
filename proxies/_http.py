"""HTTPProxy: the shared HTTP layer of the built-in proxies (httpx, keys from the environment, error mapping).

Subclasses set `api_key_env`, `base_url_env` and `default_base_url`, and call `self._get(path, params)` or
`self._post(path, json)`. The key is read from the host's environment when the proxy is built and sent by
`_auth()`, in a header wherever the API accepts one (FMP, Exa; FRED takes it only in the query string). It is
registered with `lllm.proxies.redact` at once, so it is scrubbed from every result, error and httpx log line;
an upstream's error page is scrubbed before an excerpt of it is cut (a cut could leave half a key).
The offline variants override `_get`/`_post`.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, ClassVar

from lllm.errors import ProxyError
from lllm.proxies.base import BaseProxy
from lllm.proxies.redact import register_secret, scrub

PERIODS: dict[str, int] = {"1m": 31, "3m": 92, "6m": 183, "1y": 366, "2y": 731, "5y": 1827, "10y": 3653}
"""`period` values of date-ranged endpoints, in days back from today (or from the offline data's last day)."""


class HTTPProxy(BaseProxy):
    """A BaseProxy over one HTTP API.

    Args:
        api_key: the key (default: from the environment variable `api_key_env`).
        base_url: the API's root (default: `$<base_url_env>` or `default_base_url`); tests point it at a fake.
        timeout: seconds per HTTP request.
    """

    api_key_env: ClassVar[str | None] = None
    base_url_env: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    service: ClassVar[str] = "the API"

    def __init__(self, *args: Any, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api_key = api_key if api_key is not None else (os.environ.get(self.api_key_env or "") or None)
        register_secret(self.api_key, self.api_key_env or type(self).__name__)
        self.base_url = (base_url or os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")
        self.timeout = timeout
        self._client: Any = None

    # ------------------------------------------------------------------ transport
    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout, headers={"User-Agent": "lllm-proxy/0.1"})
        return self._client

    def _require_key(self) -> str:
        if not self.api_key:
            raise ProxyError(
                f"{self.service} needs an API key: set {self.api_key_env} in the host's environment (it never "
                "enters the sandbox), or run with proxy source 'offline' for the bundled sample data.",
                proxy=self.proxy_path())
        return self.api_key

    def _auth(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        """Add the key to a request (subclasses say where it goes)."""

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 json: Any = None) -> Any:
        import httpx

        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers: dict[str, str] = {}
        self._auth(query, headers)
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            response = self._http().request(method, url, params=query, json=json, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProxyError(f"{self.service} did not answer within {self.timeout:g}s ({type(exc).__name__}); "
                             "try again or ask for less.", proxy=self.proxy_path()) from exc
        except httpx.HTTPError as exc:
            raise ProxyError(f"{self.service} could not be reached: {type(exc).__name__}: {exc}",
                             proxy=self.proxy_path()) from exc
        status = response.status_code
        if status in (401, 403):
            raise ProxyError(f"{self.service} refused the API key (HTTP {status}); check {self.api_key_env} on "
                             "the host.", proxy=self.proxy_path(), status_code=status)
        if status == 429:
            raise ProxyError(f"{self.service} rate-limited this key (HTTP 429); wait and retry, or make fewer "
                             "calls.", proxy=self.proxy_path(), status_code=status)
        if status >= 400:
            raise ProxyError(f"{self.service} answered HTTP {status} for {path!r}: {_excerpt(response.text)}",
                             proxy=self.proxy_path(), status_code=status)
        try:
            return response.json()
        except ValueError as exc:
            raise ProxyError(f"{self.service} sent a reply that is not JSON for {path!r}: "
                             f"{_excerpt(response.text)}", proxy=self.proxy_path()) from exc

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        return self._request("GET", path, params=params)

    def _post(self, path: str, json: dict[str, Any]) -> Any:
        return self._request("POST", path, json=json)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ dates
    def _today(self) -> dt.date:
        """The default end of date ranges: today, or the cutoff date when one is set."""
        today = dt.date.today()
        return min(today, self.cutoff_date.date()) if self.cutoff_date is not None else today

    def _date_range(self, period: str | None, start: str | None, end: str | None) -> tuple[str, str]:
        """`(from, to)` as ISO dates from a `period` ("1y") or explicit `start`/`end`."""
        for name, value in (("start", start), ("end", end)):
            if value is not None:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ProxyError(f"{name} must be a date YYYY-MM-DD, got {value!r}.") from None
        to = end or self._today().isoformat()
        if start:
            return start, to
        days = PERIODS.get(period or "1y")
        if days is None:
            raise ProxyError(f"period must be one of {list(PERIODS)!r}, got {period!r}.")
        return (dt.date.fromisoformat(to) - dt.timedelta(days=days)).isoformat(), to


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(scrub(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
