"""Per-session budgets of API proxies: how many calls (and how many USD, where a proxy has a price) one session
may spend on each proxy before its calls are refused with `ApiBudgetExceeded`.

```yaml
proxy:
  activate_proxies: [fmp, fred]
  budgets:
    fmp: {calls: 500, cost: 2.0}     # per tactic call session
    "*": {calls: 1000}               # every other proxy
```

Live proxies that need a key spend the host's API quota, so they get `DEFAULT_LIVE_BUDGET` unless a budget
names them (or `"*"` does); proxies without a key (offline data, your own) are unlimited by default. A field
left out keeps the default; `null` lifts that limit. A call is charged before it runs (a failed upstream call
has spent the quota too), and a refused call never reaches the proxy.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from lllm.errors import ApiBudgetExceeded

__all__ = ["DEFAULT_LIVE_BUDGET", "ProxyBudget", "SessionBudgets"]


class ProxyBudget(BaseModel):
    """What one session may spend on one proxy."""

    model_config = ConfigDict(extra="forbid")

    calls: int | None = Field(default=None, ge=0)
    """Calls at most (None: no limit)."""
    cost: float | None = Field(default=None, ge=0)
    """USD at most, counted from the proxy's declared price per call (None: no limit)."""


DEFAULT_LIVE_BUDGET = ProxyBudget(calls=200, cost=1.0)
"""The budget of a live proxy that needs an API key, in a session whose config names none for it."""


class _Spend:
    __slots__ = ("budget", "calls", "cost")

    def __init__(self, budget: ProxyBudget) -> None:
        self.budget = budget
        self.calls = 0
        self.cost = 0.0


class SessionBudgets:
    """What one session spent on each proxy, against its budgets; `charge` is thread-safe.

    Args:
        budgets: per proxy path, plus `"*"` for every proxy not named; values are `ProxyBudget`s or dicts.
    """

    def __init__(self, budgets: Mapping[str, ProxyBudget | Mapping[str, Any]] | None = None) -> None:
        self.budgets = {name: b if isinstance(b, ProxyBudget) else ProxyBudget.model_validate(b)
                        for name, b in (budgets or {}).items()}
        self._spend: dict[str, _Spend] = {}
        self._lock = threading.Lock()

    def budget_for(self, name: str, proxy: Any) -> ProxyBudget:
        """The budget of proxy `name` in this session: its own fields over `"*"` over the default."""
        base = DEFAULT_LIVE_BUDGET if getattr(proxy, "keyed_live", False) else ProxyBudget()
        merged = base.model_dump()
        for key in ("*", name):
            given = self.budgets.get(key)
            if given is not None:
                merged.update({field: getattr(given, field) for field in given.model_fields_set})
        return ProxyBudget(**merged)

    def charge(self, name: str, proxy: Any, endpoint: str) -> None:
        """Count one call of `name/endpoint` before it runs.

        Raises:
            ApiBudgetExceeded: the call would go over the session's budget for that proxy (nothing is counted).
        """
        price = proxy.endpoint_price(endpoint) if hasattr(proxy, "endpoint_price") else 0.0
        with self._lock:
            spend = self._spend.get(name)
            if spend is None:
                spend = self._spend[name] = _Spend(self.budget_for(name, proxy))
            budget = spend.budget
            if budget.calls is not None and spend.calls + 1 > budget.calls:
                raise ApiBudgetExceeded(
                    f"this session's budget for proxy {name!r} is spent: {spend.calls} of {budget.calls} calls "
                    f"used, so '{name}/{endpoint}' was not called. Work with the data you already fetched; to "
                    f"allow more, raise proxy.budgets.{name}.calls in the agent config.",
                    proxy=name, spent=spend.calls, limit=budget.calls, unit="calls")
            if budget.cost is not None and price and spend.cost + price > budget.cost + 1e-12:
                raise ApiBudgetExceeded(
                    f"this session's budget for proxy {name!r} is spent: ${spend.cost:.4f} of ${budget.cost:.4f} "
                    f"used and '{name}/{endpoint}' costs ${price:.4f}, so it was not called. Work with the data "
                    f"you already fetched; to allow more, raise proxy.budgets.{name}.cost in the agent config.",
                    proxy=name, spent=spend.cost, limit=budget.cost, unit="USD")
            spend.calls += 1
            spend.cost += price

    def spent(self) -> dict[str, dict[str, float]]:
        """`{proxy: {"calls": n, "cost": usd}}` so far."""
        with self._lock:
            return {name: {"calls": s.calls, "cost": s.cost} for name, s in self._spend.items()}
