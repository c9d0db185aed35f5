"""Per-session budgets of proxies: calls and cost, defaults for live keyed proxies, the `proxy.budgets` block."""

from __future__ import annotations

import pytest

from lllm.errors import ApiBudgetExceeded, ConfigError, ProxyError
from lllm.proxies import BaseProxy, ProxyManager
from lllm.tools.code import ProxyConfig
from lllm.proxies.budget import DEFAULT_LIVE_BUDGET, ProxyBudget, SessionBudgets


class Priced(BaseProxy):
    price_per_call = 0.01
    calls = 0

    @BaseProxy.endpoint(category="t", endpoint="cheap", description="One cent.", params={"x": (int, 1)})
    def cheap(self, x: int = 0) -> int:
        Priced.calls += 1
        return x

    @BaseProxy.endpoint(category="t", endpoint="dear", description="Ten cents.", price=0.10)
    def dear(self) -> str:
        Priced.calls += 1
        return "dear"


class Keyed(Priced):
    api_key_env = "UNIT_KEYED_KEY"


def test_calls_and_cost_budgets_refuse_before_the_endpoint_runs() -> None:
    Priced.calls = 0
    m = ProxyManager(proxies={"p": Priced()}, budgets={"p": {"calls": 5, "cost": 0.15}})
    assert [m.call("p/cheap", {"x": i}) for i in range(3)] == [0, 1, 2]
    assert m.call("p/dear") == "dear"  # $0.13 spent
    with pytest.raises(ApiBudgetExceeded, match=r"\$0\.1300 of \$0\.1500 used and 'p/dear' costs \$0\.1000") as err:
        m.call("p/dear")
    assert (err.value.proxy, err.value.unit) == ("p", "USD")
    assert m.call("p/cheap") == 0  # $0.14, 5 calls
    with pytest.raises(ApiBudgetExceeded, match=r"5 of 5 calls used.*proxy\.budgets\.p\.calls"):
        m.call("p/cheap")
    assert Priced.calls == 5 and m.budgets.spent() == {"p": {"calls": 5, "cost": pytest.approx(0.14)}}
    # a call with bad parameters or to an unknown endpoint is refused by the proxy and costs nothing
    m2 = ProxyManager(proxies={"p": Priced()}, budgets={"p": {"calls": 1}})
    with pytest.raises(ProxyError, match="must be int"):
        m2.call("p/cheap", {"x": "seven"})
    with pytest.raises(ProxyError):
        m2.call("p/nope")
    assert m2.call("p/cheap", {"x": 4}) == 4


def test_defaults_wildcards_and_lifting_a_limit() -> None:
    b = SessionBudgets({"*": {"calls": 50}, "k": {"cost": None}})
    assert b.budget_for("k", Keyed()) == ProxyBudget(calls=50, cost=None)  # "*" then its own fields
    assert b.budget_for("p", Priced()) == ProxyBudget(calls=50)
    assert SessionBudgets().budget_for("k", Keyed()) == DEFAULT_LIVE_BUDGET  # live + keyed: the low default
    assert SessionBudgets().budget_for("p", Priced()) == ProxyBudget()  # no key: unlimited
    assert SessionBudgets({"k": {"calls": None}}).budget_for("k", Keyed()).calls is None
    offline = ProxyManager(["fmp"], source="offline")
    assert offline.budgets.budget_for("fmp", offline.proxies["fmp"]) == ProxyBudget()


def test_the_proxy_block_takes_budgets_and_checks_them() -> None:
    cfg = ProxyConfig.model_validate({"activate_proxies": ["fmp"], "budgets": {"fmp": {"calls": 10, "cost": 2}}})
    assert cfg.budgets["fmp"] == ProxyBudget(calls=10, cost=2.0)
    for bad in ({"fmp": {"calls": -1}}, {"fmp": {"calsl": 3}}):
        with pytest.raises(ValueError):
            ProxyConfig.model_validate({"budgets": bad})
    with pytest.raises(ConfigError, match="proxy budgets are invalid"):
        ProxyManager(proxies={"p": Priced()}, budgets={"p": {"calls": "many"}})


def test_the_gateway_sends_the_budget_error_type() -> None:
    from lllm.proxies.wire import ERROR_TYPES

    assert "ApiBudgetExceeded" in ERROR_TYPES
