"""The `exa` proxy: Exa's web search (search with text snippets, and page contents by URL).

Docs of the API behind it: https://docs.exa.ai/reference/search. Key: `EXA_API_KEY` (the `x-api-key` header);
base URL: `EXA_BASE_URL` (default https://api.exa.ai).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lllm.errors import ProxyError
from lllm.proxies.base import BaseProxy, ProxyRegistrator
from proxies._http import HTTPProxy


@ProxyRegistrator(
    path="exa",
    name="Exa web search",
    description="Web and news search for language models: results with title, URL, date and a text snippet; "
                "page contents by URL.",
)
class ExaProxy(HTTPProxy):
    """Exa (https://exa.ai)."""

    api_key_env: ClassVar[str | None] = "EXA_API_KEY"
    base_url_env: ClassVar[str] = "EXA_BASE_URL"
    default_base_url: ClassVar[str] = "https://api.exa.ai"
    service: ClassVar[str] = "Exa"

    def _auth(self, params: dict[str, Any], headers: dict[str, str]) -> None:
        headers["x-api-key"] = self._require_key()

    @BaseProxy.endpoint(
        category="Search", endpoint="search", dt_cutoff=("published_date", "%Y-%m-%d"),
        description="Search the web; returns results best first, each with title, url, published_date, author "
                    "and the first text_chars characters of the page.",
        params={"query*": (str, "Apple earnings outlook 2025", "what to look for, in plain words"),
                "num_results": {"type": int, "example": 5, "default": 5, "description": "1 to 25"},
                "start_published_date": (str, "2025-01-01", "only pages published on or after, YYYY-MM-DD"),
                "include_domains": (list, ["reuters.com"], "only these domains"),
                "text_chars": {"type": int, "example": 500, "default": 500,
                               "description": "characters of page text per result (0: none)"}},
        response=[{"title": "Apple beats estimates ...", "url": "https://example.com/apple-q2",
                   "published_date": "2025-05-01", "author": "Jane Doe", "text": "Apple reported ..."}],
        method="POST",
    )
    def search(self, query: str, num_results: int = 5, start_published_date: str | None = None,
               include_domains: list[str] | None = None, text_chars: int = 500) -> list[dict[str, Any]]:
        if not 1 <= num_results <= 25:
            raise ProxyError(f"num_results must be between 1 and 25, got {num_results!r}.")
        if not 0 <= text_chars <= 20000:
            raise ProxyError(f"text_chars must be between 0 and 20000, got {text_chars!r}.")
        body: dict[str, Any] = {"query": query, "numResults": num_results, "type": "auto"}
        if start_published_date:
            body["startPublishedDate"] = start_published_date
        if self.cutoff_date is not None:
            body["endPublishedDate"] = self.cutoff_date.date().isoformat()
        if include_domains:
            body["includeDomains"] = list(include_domains)
        if text_chars:
            body["contents"] = {"text": {"maxCharacters": text_chars}}
        reply = self._post("search", body)
        return [_result(r, text_chars) for r in (reply.get("results") or [])][:num_results]

    @BaseProxy.endpoint(
        category="Contents", endpoint="contents",
        description="The text of pages by URL (for results you want to read in full).",
        params={"urls*": (list, ["https://example.com/apple-q2"], "1 to 10 URLs"),
                "text_chars": {"type": int, "example": 3000, "default": 3000}},
        response=[{"title": "Apple beats estimates ...", "url": "https://example.com/apple-q2",
                   "published_date": "2025-05-01", "author": "Jane Doe", "text": "Apple reported ..."}],
        method="POST",
    )
    def contents(self, urls: list[str], text_chars: int = 3000) -> list[dict[str, Any]]:
        if not urls or len(urls) > 10 or not all(isinstance(u, str) for u in urls):
            raise ProxyError(f"urls must be a list of 1 to 10 URL strings, got {urls!r:.200}.")
        reply = self._post("contents", {"urls": urls, "text": {"maxCharacters": text_chars}})
        return [_result(r, text_chars) for r in (reply.get("results") or [])]


def _result(r: dict[str, Any], text_chars: int) -> dict[str, Any]:
    date = r.get("publishedDate")
    return {"title": r.get("title") or "", "url": r.get("url") or "",
            "published_date": date[:10] if isinstance(date, str) else None, "author": r.get("author"),
            "text": (r.get("text") or "")[:text_chars]}
