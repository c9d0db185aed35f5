"""ProxyManager: activation, dispatch by path, the compact directory and the full api_doc."""

from __future__ import annotations

import pytest

from lllm.errors import ConfigError, EndpointNotFound, ProxyError, ProxyNotActivated
from lllm.proxies import PROXY_REGISTRY, BaseProxy, ProxyManager, ProxyRegistrator


class Weather(BaseProxy):
    _proxy_name = "Weather"
    _proxy_description = "Forecasts and observations for any city. Second sentence is not in the directory."

    @BaseProxy.endpoint(category="Forecast", endpoint="forecast", description="Hourly forecast for a city.",
                        params={"city*": (str, "Paris", "city name"), "hours": {"type": int, "example": 24,
                                                                                "default": 24}},
                        response=[{"time": "2025-01-01T00:00", "temp_c": 3.5}])
    def forecast(self, city: str, hours: int = 24) -> list[dict]:
        return [{"time": f"t{i}", "temp_c": 1.0} for i in range(hours)]

    @BaseProxy.endpoint(category="Forecast", endpoint="boom", description="Always fails.")
    def boom(self) -> None:
        raise RuntimeError("upstream exploded")


class Nested(BaseProxy):
    @BaseProxy.endpoint(category="x", endpoint="ping", description="Pong.")
    def ping(self) -> str:
        return "nested"


def test_call_dispatches_by_path_and_wraps_foreign_errors() -> None:
    m = ProxyManager(proxies={"weather": Weather()})
    assert len(m.call("weather/forecast", {"city": "Oslo", "hours": 3})) == 3
    assert m("weather/forecast", {"city": "Oslo", "hours": 1}) == [{"time": "t0", "temp_c": 1.0}]
    with pytest.raises(ProxyError, match="'weather/boom' failed: RuntimeError: upstream exploded") as err:
        m.call("weather/boom")
    assert isinstance(err.value.__cause__, RuntimeError)


def test_not_activated_and_bad_paths() -> None:
    m = ProxyManager(proxies={"weather": Weather()})
    with pytest.raises(ProxyNotActivated, match="'fmp' is not activated.*\\['weather'\\]"):
        m.call("fmp/price", {"symbol": "AAPL"})
    with pytest.raises(ProxyError, match="must be '<proxy>/<endpoint>'"):
        m.call("weather")
    with pytest.raises(EndpointNotFound, match="'forecast', 'boom'"):
        m.call("weather/forcast", {"city": "x"})
    with pytest.raises(ProxyNotActivated):
        m.api_doc("fred")


def test_longest_proxy_path_wins() -> None:
    m = ProxyManager(proxies={"acme": Weather(), "acme/sub": Nested()})
    assert m.call("acme/sub/ping") == "nested"
    assert m.resolve("acme/forecast")[1:] == ("acme", "forecast")


def test_activation_uses_the_registry_and_names_unknown_proxies() -> None:
    @ProxyRegistrator(path="t_weather", name="Weather", description="Forecasts.")
    class RegisteredWeather(Weather):
        pass

    try:
        m = ProxyManager(activate_proxies=["t_weather"])
        assert m.available() == ["t_weather"]
        assert m.activate_proxies == ["t_weather"]
        with pytest.raises(ConfigError, match="'nope'.*known: .*'fmp'.*'t_weather'"):
            ProxyManager(activate_proxies=["t_weather", "nope"])
    finally:
        PROXY_REGISTRY["live"].pop("t_weather", None)


def test_builtin_proxies_load_on_demand_in_each_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxies.fmp import FMPProxy
    from proxies.offline import OfflineFMPProxy

    assert isinstance(ProxyManager(["fmp"]).get("fmp"), FMPProxy)
    assert isinstance(ProxyManager(["fmp"], source="offline").get("fmp"), OfflineFMPProxy)
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    assert isinstance(ProxyManager(["fmp"], source="auto").get("fmp"), OfflineFMPProxy)
    monkeypatch.setenv("FMP_API_KEY", "k")
    proxy = ProxyManager(["fmp"], source="auto").get("fmp")
    assert type(proxy) is FMPProxy and proxy.api_key == "k"
    with pytest.raises(ConfigError, match="source"):
        ProxyManager(["fmp"], source="sometimes")  # type: ignore[arg-type]


def test_directory_is_compact_one_line_per_proxy() -> None:
    m = ProxyManager(["fmp", "fred", "exa"], source="offline")
    lines = m.directory().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["exa", "fmp", "fred"]
    fmp = next(line for line in lines if line.startswith("- fmp "))
    assert "price, quote, profile, earnings, balance-sheet" in fmp
    assert all(len(line) < 220 for line in lines)
    assert "symbol" not in m.directory()  # parameters belong to api_doc, not the system prompt
    assert len(m.directory()) < len(m.api_doc("fmp")) / 5


def test_api_doc_has_descriptions_params_required_examples_and_response_shape() -> None:
    m = ProxyManager(proxies={"weather": Weather()})
    doc = m.api_doc("weather")
    assert doc.startswith("# Weather (weather)")
    assert "### weather/forecast" in doc and "Hourly forecast for a city." in doc
    assert "- city (str, required): city name; e.g. 'Paris'" in doc
    assert "- hours (int, optional, default 24); e.g. 24" in doc
    assert "Returns: list[{time: str, temp_c: float}]" in doc
    assert 'Example response: [{"time": "2025-01-01T00:00", "temp_c": 3.5}]' in doc
    assert 'Example: CALL_API("weather/forecast", {\'city\': \'Paris\'})' in doc
    assert "Parameters: none" in doc  # boom
    assert m.retrieve_api_docs("weather") == doc  # lllm-core 0.1 name


def test_every_builtin_endpoint_in_the_docs_dispatches() -> None:
    m = ProxyManager(["fmp", "fred", "exa"], source="offline")
    for name in m.available():
        doc = m.api_doc(name)
        for endpoint in m.endpoint_names(name):
            assert f"### {name}/{endpoint}" in doc
            proxy, _, ep = m.resolve(f"{name}/{endpoint}")
            assert ep in proxy.endpoint_specs()


def test_instances_must_be_proxies() -> None:
    with pytest.raises(Exception, match="BaseProxy instance"):
        ProxyManager(proxies={"x": object()})  # type: ignore[dict-item]


def test_proxies_import_light() -> None:
    import subprocess
    import sys

    code = ("import sys, lllm.proxies, lllm.proxies.gateway, lllm.tools.code\n"
            "from lllm.proxies import ProxyManager\n"
            "m = ProxyManager(['fmp', 'fred', 'exa'], source='live')\n"
            "print(sorted(x for x in ('httpx', 'docker', 'litellm', 'jupyter_client', 'zmq') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # httpx loads on the first live request, docker with the first sandbox
