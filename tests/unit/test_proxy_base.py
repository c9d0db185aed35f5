"""BaseProxy, @BaseProxy.endpoint and ProxyRegistrator: declaration, validation and dispatch by endpoint name."""

from __future__ import annotations

import pickle

import pytest

from lllm.errors import ConfigError, EndpointNotFound, ProxyError, UsageError
from lllm.proxies import PROXY_REGISTRY, BaseProxy, ProxyRegistrator, register_proxy
from lllm.proxies.base import response_shape, to_json_bytes


class Market(BaseProxy):
    @BaseProxy.endpoint(
        category="Prices", endpoint="price", description="Daily prices.",
        params={"symbol*": (str, "AAPL", "ticker"), "days": {"type": int, "example": 5, "default": 5},
                "scale": (float, 1.0)},
        response=[{"date": "2025-01-02", "close": 1.5}],
    )
    def price(self, symbol: str, days: int = 5, scale: float = 1.0) -> list[dict]:
        return [{"date": f"d{i}", "close": i * scale, "symbol": symbol} for i in range(days)]

    @BaseProxy.endpoint(category="Fundamentals", endpoint="balance-sheet", description="Statements.",
                        params={"symbol*": (str, "AAPL"), "period": {"type": "str", "enum": ["annual", "quarter"]}},
                        response=[{"assets": 1}], remove_keys=["secret"])
    def balance_sheet(self, params: dict) -> list[dict]:  # lllm-core 0.1 style: one params dict
        return [{"assets": 1, "secret": "x", "echo": params}]


def test_endpoint_specs_are_declared_in_order_with_parsed_params() -> None:
    specs = Market.endpoint_specs()
    assert list(specs) == ["price", "balance-sheet"]
    symbol, days, scale = specs["price"].params
    assert (symbol.name, symbol.type, symbol.required, symbol.example, symbol.description) == (
        "symbol", str, True, "AAPL", "ticker")
    assert (days.required, days.default, days.type_name) == (False, 5, "int")
    assert scale.type is float and not scale.required
    assert specs["balance-sheet"].param("period").enum == ("annual", "quarter")


def test_dispatch_goes_by_the_endpoint_name_the_docs_show() -> None:
    proxy = Market()
    assert proxy.call("price", {"symbol": "AAPL", "days": 2}) == [
        {"date": "d0", "close": 0.0, "symbol": "AAPL"}, {"date": "d1", "close": 1.0, "symbol": "AAPL"}]
    out = proxy.call("balance-sheet", {"symbol": "MSFT"})
    assert out == [{"assets": 1, "echo": {"symbol": "MSFT"}}]  # remove_keys applied, params passed as a dict
    with pytest.raises(EndpointNotFound) as err:
        proxy.call("balance_sheet", {"symbol": "MSFT"})  # the Python name is not an endpoint
    assert "'balance-sheet'" in str(err.value) and "'price'" in str(err.value)
    assert err.value.available == ["price", "balance-sheet"]


def test_defaults_are_filled_and_ints_widen_to_float() -> None:
    out = Market().call("price", {"symbol": "X", "scale": 2})
    assert len(out) == 5 and out[1]["close"] == 2.0


@pytest.mark.parametrize("params, needle", [
    ({}, "needs parameter 'symbol'"),
    ({"symbol": 3}, "must be str, got int"),
    ({"symbol": "A", "days": "5"}, "must be int"),
    ({"symbol": "A", "days": True}, "must be int"),
    ({"symbol": "A", "dayz": 5}, "has no parameter 'dayz'"),
])
def test_bad_params_are_refused_with_an_actionable_message(params: dict, needle: str) -> None:
    with pytest.raises(ProxyError) as err:
        Market().call("price", params)
    assert needle in str(err.value)
    assert "price" in str(err.value)


def test_enum_and_non_dict_params() -> None:
    with pytest.raises(ProxyError, match="one of \\['annual', 'quarter'\\]"):
        Market().call("balance-sheet", {"symbol": "A", "period": "weekly"})
    with pytest.raises(ProxyError, match="must be a dict"):
        Market().call("price", ["AAPL"])  # type: ignore[arg-type]


def test_duplicate_endpoint_names_fail_at_registration() -> None:
    with pytest.raises(ConfigError, match="declared twice"):
        @ProxyRegistrator(path="t_dup", name="Dup", description="d")
        class Dup(BaseProxy):
            @BaseProxy.endpoint(category="a", endpoint="x", description="one")
            def one(self) -> int:
                return 1

            @BaseProxy.endpoint(category="a", endpoint="x", description="two")
            def two(self) -> int:
                return 2


def test_bad_endpoint_names_and_registrations() -> None:
    with pytest.raises(ConfigError):
        BaseProxy.endpoint(category="a", endpoint="a/b", description="d")
    with pytest.raises(UsageError):
        register_proxy("t_x", object)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        register_proxy("/bad", Market)
    with pytest.raises(UsageError):
        register_proxy("t_x", Market, variant="sometimes")


def test_registrator_sets_metadata_and_registers_live_and_offline() -> None:
    @ProxyRegistrator(path="t_reg", name="Reg", description="A test proxy.")
    class Reg(Market):
        pass

    @ProxyRegistrator(path="t_reg", name="Reg offline", description="Offline.", variant="offline")
    class RegOffline(Market):
        pass

    try:
        assert PROXY_REGISTRY["live"]["t_reg"] is Reg and PROXY_REGISTRY["offline"]["t_reg"] is RegOffline
        assert Reg.proxy_path() == "t_reg"
        directory = Reg().api_directory()
        assert directory["id"] == "t_reg" and directory["display_name"] == "Reg"
        assert [e["endpoint"] for e in directory["endpoints"]] == ["price", "balance-sheet"]
        with pytest.raises(ConfigError, match="already registered"):
            register_proxy("t_reg", Market, overwrite=False)
    finally:
        PROXY_REGISTRY["live"].pop("t_reg", None)
        PROXY_REGISTRY["offline"].pop("t_reg", None)


def test_registrator_registers_with_a_runtime_too() -> None:
    seen = []

    class FakeRuntime:
        def register_proxy(self, path: str, cls: type, *, overwrite: bool) -> None:
            seen.append((path, cls, overwrite))

    @ProxyRegistrator(path="t_rt", name="Rt", description="d", runtime=FakeRuntime())
    class Rt(Market):
        pass

    PROXY_REGISTRY["live"].pop("t_rt", None)
    assert seen == [("t_rt", Rt, True)]


def test_postcall_hooks_see_every_result() -> None:
    class Hooked(Market):
        @BaseProxy.postcall
        def tag(self, endpoint: str, result: object) -> object:
            return {"endpoint": endpoint, "result": result}

    out = Hooked().call("price", {"symbol": "A", "days": 1})
    assert out["endpoint"] == "price" and out["result"][0]["symbol"] == "A"


def test_subclass_override_keeps_one_endpoint() -> None:
    class Cheaper(Market):
        @BaseProxy.endpoint(category="Prices", endpoint="price", description="Only one day.",
                            params={"symbol*": (str, "AAPL")})
        def price(self, symbol: str) -> list[dict]:  # type: ignore[override]
            return [{"symbol": symbol}]

    assert list(Cheaper.endpoint_specs()) == ["balance-sheet", "price"]
    assert Cheaper().call("price", {"symbol": "Z"}) == [{"symbol": "Z"}]


def test_response_shape_and_json() -> None:
    assert response_shape([{"date": "x", "close": 1.0, "n": 1, "ok": True, "x": None}]) == (
        "list[{date: str, close: float, n: int, ok: bool, x: null}]")
    assert response_shape({"a": [1]}) == "{a: list[int]}"
    assert to_json_bytes({"a": "é"}) == '{"a":"é"}'.encode()
    with pytest.raises(ProxyError, match="not JSON"):
        to_json_bytes({"a": object()})


def test_spec_docs_carry_types_required_examples() -> None:
    doc = Market.endpoint_specs()["price"].to_doc()
    assert doc["params"][0] == {"name": "symbol", "type": "str", "required": True, "example": "AAPL",
                                "description": "ticker"}
    assert doc["response_shape"] == "list[{date: str, close: float}]"


def test_errors_keep_facts_and_pickle() -> None:
    with pytest.raises(EndpointNotFound) as err:
        Market().call("nope")
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == str(err.value) and again.available == ["price", "balance-sheet"]


def test_cutoff_date_drops_rows_after_it() -> None:
    import datetime as dt

    class Dated(BaseProxy):
        @BaseProxy.endpoint(category="d", endpoint="rows", description="Dated rows.",
                            dt_cutoff=("date", "%Y-%m-%d"))
        def rows(self) -> list[dict]:
            return [{"date": "2024-12-30"}, {"date": "2024-12-31T18:00:00Z"}, {"date": "2025-01-01"},
                    {"date": "garbled"}, {"n": 1}]

        @BaseProxy.endpoint(category="d", endpoint="undated", description="No dt_cutoff.")
        def undated(self) -> list[dict]:
            return [{"date": "2030-01-01"}]

    assert len(Dated().call("rows")) == 5
    cut = Dated(cutoff_date="2024-12-31").call("rows")
    assert cut == [{"date": "2024-12-30"}, {"date": "2024-12-31T18:00:00Z"}, {"date": "garbled"}, {"n": 1}]
    assert Dated(cutoff_date=dt.date(2024, 12, 30)).call("rows")[0] == {"date": "2024-12-30"}
    assert Dated(cutoff_date="2000-01-01").call("undated") == [{"date": "2030-01-01"}]
    with pytest.raises(ConfigError, match="cutoff_date"):
        Dated(cutoff_date="last year")
