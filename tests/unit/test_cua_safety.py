"""The browser's URL policy, secrets, config and snapshot capping: pure Python, no browser."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lllm.errors import ConfigError, UsageError
from lllm.tools.cua.config import BrowserConfig
from lllm.tools.cua.safety import ConfirmRequest, Secrets, UrlPolicy, allow_all_but_leaving, load_confirm_hook
from lllm.tools.cua.snapshot import cap_snapshot, find_lines

PUBLIC = {"shop.example.com": ["93.184.216.34"], "cdn.shop.example.com": ["93.184.216.35"],
          "rebind.example.com": ["10.0.0.7"], "example.com": ["93.184.216.34"], "evil.test": ["8.8.4.4"],
          "localhost": ["127.0.0.1"], "v6.example.com": ["::ffff:192.168.1.1"]}


def resolver(host: str) -> list[str]:
    if host not in PUBLIC:
        raise OSError(f"no such host {host}")
    return PUBLIC[host]


def policy(**kwargs: object) -> UrlPolicy:
    return UrlPolicy(resolver=resolver, **kwargs)  # type: ignore[arg-type]


def test_allowlist_matches_domain_and_subdomains() -> None:
    p = policy(allowed_domains=["shop.example.com"])
    assert p.check_url("https://shop.example.com/cart").allowed
    assert p.check_url("https://cdn.shop.example.com/x.js").allowed
    verdict = p.check_url("https://evil.test/steal")
    assert not verdict.allowed and verdict.off_allowlist
    assert "evil.test:443 is not on the allowlist" in verdict.reason
    # a suffix that is not a subdomain does not match
    assert not p.check_url("https://notshop.example.com/").allowed


def test_wildcard_entry_allows_only_subdomains() -> None:
    p = policy(allowed_domains=["*.shop.example.com"])
    assert p.check_url("https://cdn.shop.example.com/").allowed
    assert not p.check_url("https://shop.example.com/").allowed


def test_port_in_entry_is_exact() -> None:
    p = policy(allowed_domains=["127.0.0.1:8123"])
    assert p.check_url("http://127.0.0.1:8123/form.html").allowed
    other = p.check_url("http://127.0.0.1:8124/")
    assert not other.allowed and other.off_allowlist


def test_private_addresses_blocked_by_default() -> None:
    p = policy()
    for url in ("http://127.0.0.1/", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/latest/",
                "http://[::1]/", "http://localhost:8080/", "http://0.0.0.0/", "http://v6.example.com/"):
        verdict = p.check_url(url)
        assert not verdict.allowed, url
        assert not verdict.off_allowlist, url  # a hard block: no confirmation hook can lift it
    assert "private address" in p.check_url("http://10.1.2.3/").reason


def test_hostname_resolving_to_private_is_blocked_even_on_the_allowlist() -> None:
    p = policy(allowed_domains=["example.com"])
    verdict = p.check_url("https://rebind.example.com/")
    assert not verdict.allowed and "10.0.0.7" in verdict.reason


def test_exact_entry_allows_a_private_host_and_allow_private_allows_all() -> None:
    assert policy(allowed_domains=["127.0.0.1:5000"]).check_url("http://127.0.0.1:5000/").allowed
    assert policy(allowed_domains=["localhost"]).check_url("http://localhost:3000/").allowed
    assert policy(allow_private=True).check_url("http://10.0.0.1/").allowed


def test_confirmed_host_does_not_lift_the_private_block() -> None:
    p = policy(allowed_domains=["example.com"])
    p.allow_host("localhost", 80)
    assert not p.check_url("http://localhost/").allowed
    p.allow_host("evil.test", 443)
    assert p.check_url("https://evil.test/").allowed


def test_schemes() -> None:
    p = policy()
    assert p.check_url("about:blank").allowed
    assert not p.check_url("about:config").allowed
    assert "allow_file is off" in p.check_url("file:///etc/passwd").reason
    assert policy(allow_file=True).check_url("file:///tmp/x.html").allowed
    for url in ("ftp://example.com/x", "javascript:alert(1)", "chrome://settings", "data:text/html,hi"):
        assert not p.check_url(url).allowed, url
    assert policy(allowed_schemes=["http", "https", "data"]).check_url("data:text/html,hi").allowed
    assert p.check_url("wss://example.com/socket").allowed  # websockets follow http(s)
    assert not p.check_url("http://[::1").allowed  # malformed


def test_unresolvable_host_is_blocked_with_reason() -> None:
    verdict = policy().check_url("https://nowhere.invalid/")
    assert not verdict.allowed and "does not resolve" in verdict.reason


def test_allowed_verdict_carries_the_checked_addresses() -> None:
    verdict = policy().check_host("example.com", 443)
    assert verdict.allowed and verdict.addresses == ("93.184.216.34",)


def test_secrets_fill_and_redact() -> None:
    s = Secrets({"PW": "hunter2 x&y", "TOKEN": "abc123"})
    assert s.fill("user:{{secret:PW}} t={{ secret:TOKEN }}") == "user:hunter2 x&y t=abc123"
    text = "typed hunter2 x&y, in a URL ?p=hunter2+x%26y and abc123"
    assert s.redact(text) == "typed {{secret:PW}}, in a URL ?p={{secret:PW}} and {{secret:TOKEN}}"
    with pytest.raises(UsageError, match="unknown secret 'NOPE'.*known secrets: \\['PW', 'TOKEN'\\]"):
        s.fill("{{secret:NOPE}}")
    assert s.names == ["PW", "TOKEN"]


def test_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_PW", "s3cret")
    cfg = BrowserConfig.from_block({"secrets": {"PW": "env:SHOP_PW", "PIN": "1234"}})
    assert cfg.secret_values() == {"PW": "s3cret", "PIN": "1234"}
    assert "s3cret" not in repr(cfg) and "1234" not in repr(cfg)
    monkeypatch.delenv("SHOP_PW")
    with pytest.raises(ConfigError, match="SHOP_PW"):
        cfg.secret_values()


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"computer_use\.snapshot_tokens"):
        BrowserConfig.from_block({"snapshot_tokens": 5})
    with pytest.raises(ConfigError, match=r"computer_use\.colour"):
        BrowserConfig.from_block({"colour": "red"})
    with pytest.raises(ConfigError, match="not a host"):
        BrowserConfig.from_block({"allowed_domains": ["https://example.com/path"]})
    with pytest.raises(ConfigError, match="<hidden>"):
        BrowserConfig.from_block({"secrets": {"PW": 123456789}})


def test_confirm_hooks() -> None:
    assert allow_all_but_leaving(ConfirmRequest("submit", "click"))
    assert not allow_all_but_leaving(ConfirmRequest("navigation", "navigate", url="https://evil.test/"))
    hook = load_confirm_hook("lllm.tools.cua.safety:allow_all_but_leaving")
    assert hook is allow_all_but_leaving
    with pytest.raises(ConfigError, match="computer_use.confirm"):
        load_confirm_hook("no.such.module:fn")


def test_cap_snapshot_cuts_at_budget_with_marker() -> None:
    snap = "\n".join(f"- listitem [ref=e{i}]: item number {i}" for i in range(5000))
    capped = cap_snapshot(snap, budget_tokens=500)
    assert capped.truncated and len(capped.text) < 500 * 4 + 400
    assert "snapshot cut to ~500 tokens" in capped.text and "snapshot(start_line=" in capped.text
    nxt = capped.shown[1] + 1
    page2 = cap_snapshot(snap, budget_tokens=500, start_line=nxt)
    assert page2.text.startswith(f"- listitem [ref=e{nxt - 1}]")
    whole = cap_snapshot("- heading \"Hi\" [ref=e1]", budget_tokens=500)
    assert not whole.truncated and whole.text == "- heading \"Hi\" [ref=e1]"


def test_cap_snapshot_cuts_one_enormous_line() -> None:
    capped = cap_snapshot("- paragraph: " + "lorem ipsum " * 400_000, budget_tokens=1000)
    assert capped.truncated and len(capped.text) < 1000 * 4 + 400 and "line cut" in capped.text


def test_find_lines() -> None:
    snap = "- heading \"Prices\" [ref=e1]\n- cell \"Red teapot\" [ref=e7]\n- cell \"34.00\" [ref=e8]"
    out = find_lines(snap, "teapot")
    assert "2: - cell \"Red teapot\" [ref=e7]" in out
    assert "no line" in find_lines(snap, "zebra")


def test_importing_the_toolset_does_not_import_playwright() -> None:
    code = ("import sys, lllm, lllm.tools, lllm.tools.cua as cua; "
            "[getattr(cua, name) for name in cua.__all__]; "
            "import lllm.tools.cua.actions, lllm.tools.cua.replay, lllm.tools.cli; "
            "print('playwright' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_cli_check(capsys: pytest.CaptureFixture[str]) -> None:
    from lllm.cli import main

    assert main(["browser", "check", "http://127.0.0.1:8080/x", "--allow", "127.0.0.1:8080"]) == 0
    assert "allowed  http://127.0.0.1:8080/x -> 127.0.0.1" in capsys.readouterr().out
    assert main(["browser", "check", "file:///etc/passwd", "http://10.0.0.1/"]) == 1
    out = capsys.readouterr().out
    assert "blocked  file:///etc/passwd: file:// URLs are blocked" in out and "private address" in out


def test_system_prompt_template_shows_the_placeholder_syntax() -> None:
    from lllm.core.prompt import Prompt
    from lllm.tools.cua.tactic import COMPUTER_USE_SYSTEM_PROMPT

    rendered = Prompt(path="cua/system", prompt=COMPUTER_USE_SYSTEM_PROMPT).render()
    assert "Type secrets as {{secret:NAME}}." in rendered
    assert Secrets({"NAME": "v"}).fill("{{secret:NAME}}") == "v"
