"""The built-in API proxies: Financial Modeling Prep (`fmp`), FRED (`fred`), Exa search (`exa`), and offline
stand-ins with the same endpoints over data shipped in `proxies/data/` (no key, no network).

Each live proxy calls its real HTTP API with httpx, with its key from the host's environment (`FMP_API_KEY`,
`FRED_API_KEY`, `EXA_API_KEY`) and a base URL that `FMP_BASE_URL`, `FRED_BASE_URL`, `EXA_BASE_URL` (or the
`base_url=` argument) override. `ProxyManager(activate_proxies=["fmp"], source="offline")` picks the offline
variant; `source="auto"` picks it only for proxies whose key is not set.
"""
