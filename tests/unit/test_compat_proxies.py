"""lllm-core's proxy helpers and `lllm.utils`, as core/proxy-and-sandbox.md and Lesson 4 use them:
`load_builtin_proxies()`, `ProxyManager.retrieve_api_docs()` with and without a name, and
`find_all_xml_tags_sorted` for a notebook parser."""

from __future__ import annotations

import pytest

from lllm.errors import ProxyNotActivated
from lllm.proxies import PROXY_REGISTRY, ProxyManager, load_builtin_proxies
from lllm.utils import find_all_xml_tags_sorted


def test_load_builtin_proxies_imports_ours_and_reports_what_failed() -> None:
    loaded, errors = load_builtin_proxies()
    assert {"proxies.fmp", "proxies.fred", "proxies.exa", "proxies.offline"} <= set(loaded) and errors == {}
    assert {"fmp", "fred", "exa"} <= set(PROXY_REGISTRY["live"]) and {"fmp"} <= set(PROXY_REGISTRY["offline"])
    loaded, errors = load_builtin_proxies(["lllm.proxies.builtin.wa_proxy", "proxies.fred"])
    assert loaded == ["proxies.fred"] and isinstance(errors["lllm.proxies.builtin.wa_proxy"], ModuleNotFoundError)


def test_retrieve_api_docs_of_one_or_of_all() -> None:
    pm = ProxyManager(activate_proxies=["fmp", "fred"], source="offline")
    assert pm.retrieve_api_docs("fmp") == pm.api_doc("fmp")
    everything = pm.retrieve_api_docs()
    assert everything == pm.api_doc("fmp") + "\n\n" + pm.api_doc("fred")
    with pytest.raises(ProxyNotActivated):
        pm.retrieve_api_docs("exa")


def test_find_all_xml_tags_sorted_keeps_the_order_of_the_answer() -> None:
    answer = ("Plan first.\n<markdown_cell>## Load</markdown_cell>\n<python_cell>\nx = 1\n</python_cell>\n"
              "<python_cell>print(x)</python_cell> <TERMINATE_NOTEBOOK>")
    found = find_all_xml_tags_sorted(answer)
    assert [(m["tag"], m["content"]) for m in found] == [
        ("markdown_cell", "## Load"), ("python_cell", "x = 1"), ("python_cell", "print(x)")]
    assert [m["pos"] for m in found] == sorted(m["pos"] for m in found)
    assert answer[found[1]["start"]:found[1]["end"]] == "<python_cell>\nx = 1\n</python_cell>"
    assert find_all_xml_tags_sorted("no tags <SIGNAL>") == []
