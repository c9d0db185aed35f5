"""`lllm proxies ls|doc|call` on the bundled offline proxies."""

from __future__ import annotations

import json

import pytest

from lllm import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["proxies", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ls_doc_and_call(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no lllm.toml here
    code, out, _ = run(capsys, "ls", "--source", "offline")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == ["exa", "fmp", "fred"]
    code, out, _ = run(capsys, "ls", "--source", "offline", "--json")
    assert code == 0 and "price" in [e["endpoint"] for e in json.loads(out)["fmp"]["endpoints"]]
    code, out, _ = run(capsys, "doc", "fred", "--source", "offline")
    assert code == 0 and "### fred/series" in out
    code, out, _ = run(capsys, "call", "fred/series", '{"series_id": "GDP", "limit": 2}', "--source", "offline")
    assert code == 0 and [r["date"] for r in json.loads(out)] == ["2024-10-01", "2025-01-01"]


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "call", "fmp/nope", "{}", "--source", "offline")
    assert code == 1 and err.startswith("error: proxy 'fmp' has no endpoint 'nope'") and err.count("\n") == 1
    code, _, err = run(capsys, "call", "fmp/price", "[1]", "--source", "offline")
    assert code == 2 and "JSON object" in err
    code, _, err = run(capsys, "doc", "weather", "--source", "offline")
    assert code == 1 and "'weather'" in err
    monkeypatch.delenv("FMP_API_KEY", raising=False)
    code, _, err = run(capsys, "call", "fmp/quote", '{"symbol": "AAPL"}', "--source", "live")
    assert code == 1 and "FMP_API_KEY" in err
