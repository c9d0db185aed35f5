"""Benchmark: the computer-use browser against raw Playwright, measured in the same run on the same machine.

Figures (p50 over N runs, after a warm-up), each next to its baseline and as a ratio:
- browser start: `BrowserDriver.start()` (driver thread + Playwright + Chromium) vs raw `sync_playwright()` +
  `chromium.launch()`;
- session start: `BrowserSession.start()` (egress proxy + context with routing + first tab) vs raw
  `browser.new_context()` + `new_page()`;
- click, type, snapshot on a fixture page: `session.perform(...)` / `session.observe()` (marshalled to the
  driver thread, policy-routed and proxied, logged with code) vs raw sync Playwright doing the same action
  in its own context (no routing, no proxy);
- one tool step as the model sees it (click + capped observation) vs raw click + `aria_snapshot`.

Run: .venv/bin/python bench/bench_browser.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from fixture_server import FixtureServer  # noqa: E402

from lllm.tools.cua import BrowserDriver, BrowserSession  # noqa: E402
from lllm.tools.cua.config import DEFAULT_CHROMIUM, LAUNCH_ARGS  # noqa: E402


def p50(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(name: str, ours: float, base: float, base_name: str) -> None:
    print(f"{name:<34} {ours * 1000:9.1f} ms   {base_name:<36} {base * 1000:9.1f} ms   x{ours / base:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    runs = args.runs
    server = FixtureServer().start()
    url = server.url("form.html")
    print(f"Chromium {DEFAULT_CHROMIUM}; p50 of {runs} runs (browser start: of 5); fixture page {url}\n")
    print(f"{'figure':<34} {'lllm':>12}   {'baseline':<36} {'':>12}   ratio")

    from playwright.sync_api import sync_playwright

    # --- browser start: launch only (closing is not timed); the two alternate so machine drift hits both alike
    raw_times, our_times = [], []
    for _ in range(6):
        t = time.perf_counter()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=list(LAUNCH_ARGS))
            raw_times.append(time.perf_counter() - t)
            browser.close()
        t = time.perf_counter()
        driver = BrowserDriver(executable_path=DEFAULT_CHROMIUM, args=LAUNCH_ARGS)
        driver.start()
        our_times.append(time.perf_counter() - t)
        driver.close()
    row("browser start", statistics.median(our_times[1:]), statistics.median(raw_times[1:]),
        "raw sync_playwright + launch")

    # Raw Playwright runs on its own thread (the sync API is bound to the thread that started it).
    results: dict[str, float] = {}

    def raw_actions() -> None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=list(LAUNCH_ARGS))

            def new_ctx() -> None:
                ctx = browser.new_context()
                ctx.new_page()
                ctx.close()

            results["session"] = p50(new_ctx, runs)
            page = browser.new_context().new_page()
            page.goto(url)
            results["click"] = p50(lambda: page.click("input[name=newsletter]"), runs)
            results["type"] = p50(lambda: page.fill("input[name=name]", "Ada Lovelace"), runs)
            results["snapshot"] = p50(lambda: page.aria_snapshot(mode="ai"), runs)

            def step() -> None:
                page.click("input[name=newsletter]")
                page.aria_snapshot(mode="ai")

            results["step"] = p50(step, runs)
            browser.close()

    t = threading.Thread(target=raw_actions)
    t.start()
    t.join()

    driver = BrowserDriver(executable_path=DEFAULT_CHROMIUM, args=LAUNCH_ARGS)
    driver.start()
    block = {"allowed_domains": [f"127.0.0.1:{server.port}"]}

    def our_session() -> None:
        BrowserSession(block, driver=driver).start().close()

    row("session start (context + proxy)", p50(our_session, runs), results["session"], "raw new_context + new_page")
    session = BrowserSession(block, driver=driver).start()
    session.perform("navigate", url=url)
    row("click", p50(lambda: session.perform("click", selector="input[name=newsletter]"), runs), results["click"],
        "raw page.click")
    row("type", p50(lambda: session.perform("type_text", selector="input[name=name]", text="Ada Lovelace"), runs),
        results["type"], "raw page.fill")
    row("snapshot (capped observation)", p50(session.observe, runs), results["snapshot"], "raw aria_snapshot(mode=ai)")

    def our_step() -> None:
        session.perform("click", selector="input[name=newsletter]")
        session.observe()

    row("tool step: click + observation", p50(our_step, runs), results["step"], "raw click + aria_snapshot")
    session.close()
    driver.close()
    server.close()
    print("\nlllm's click also asks the page whether it opened a pop-up (one evaluate) and waits for it if so.")


if __name__ == "__main__":
    main()
