"""`lllm demo`: the project's main job, a multi-proxy research session (the seed's Pattern 1) in a sandbox.

The analyst's code runs in a Docker sandbox with no network; it reaches market data (`fmp`), macro series
(`fred`) and news (`exa`) only through `CALL_API`, served by the gateway on the host. Offline by default: the
model is `scripted_analyst` below (a deterministic policy that plays the session the seed describes) and the
proxies answer from bundled data. With `LLLM_MODEL` set (and that provider's key in the environment), the same
tactic runs against the real model through litellm, and proxies whose API keys are set answer live.

Prints the transcript, where the code really ran, the cost, and where the log and the notebook are. When the
machinery fails (no Docker engine, no sandbox image, a sandbox that does not start) the run ends with that
error: the transcript so far is printed, the session is logged as an error, and `lllm demo` exits non-zero
with the error's message; it never claims that code ran where it did not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["register", "run_demo", "scripted_analyst", "DEFAULT_TASK"]

DEFAULT_TASK = ("How did Apple's stock do over the last year, how does that compare with US GDP growth, and what "
                "is the news saying about its earnings outlook?")
EXAMPLE_PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "research"

# The session of the seed's Pattern 1, turn by turn: discover, pull, cross-reference, then analyse with the
# variables the earlier turns left in the interpreter.
_TURNS: list[tuple[str, dict[str, str]]] = [
    ("query_api_doc", {"proxy_name": "fmp"}),
    ("run_python", {"code": textwrap.dedent("""\
        prices = CALL_API("fmp/price", {"symbol": "AAPL", "period": "1y"})
        macro = CALL_API("fred/series", {"series_id": "GDP"})
        print(f"Got {len(prices)} price points, latest GDP: {macro[-1]['value']}")""")}),
    ("run_python", {"code": textwrap.dedent("""\
        news = CALL_API("exa/search", {"query": "Apple earnings outlook 2025", "num_results": 5})
        for article in news:
            print(article["title"], article["url"])""")}),
    ("run_python", {"code": textwrap.dedent("""\
        import statistics
        closes = [p["close"] for p in sorted(prices, key=lambda p: p["date"])]
        stock_return = closes[-1] / closes[0] - 1
        daily = [b / a - 1 for a, b in zip(closes, closes[1:])]
        volatility = statistics.pstdev(daily) * 252 ** 0.5
        gdp_growth = macro[-1]["value"] / macro[-5]["value"] - 1
        print(f"AAPL 1y return: {stock_return:+.1%}  annualised volatility: {volatility:.1%}")
        print(f"US nominal GDP growth over the last 4 quarters: {gdp_growth:+.1%}")
        print(f"Headlines read: {len(news)}")""")}),
]


def scripted_analyst(messages: list[dict[str, Any]]) -> Any:
    """The offline analyst: plays the turns above, then answers from what its own code printed."""
    done = sum(1 for m in messages if m.get("role") == "tool")
    if done < len(_TURNS):
        name, arguments = _TURNS[done]
        return {"content": None, "tool_calls": [{"name": name, "arguments": arguments}]}
    outputs = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
    analysis = outputs[-1] if outputs else ""
    headlines = [line for line in (outputs[2] if len(outputs) > 2 else "").splitlines() if "http" in line][:3]
    return ("Findings (from the sandboxed analysis):\n" + "\n".join(f"- {ln.strip()}" for ln in analysis.splitlines()
                                                                    if ln.strip() and not ln.startswith("[")) +
            "\nNews read:\n" + "\n".join(f"- {h}" for h in headlines) +
            "\nSources: fmp/price (AAPL, 1y), fred/series (GDP), exa/search.")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _config(runtime: Any, *, backend: str, model: str | None) -> dict[str, Any]:
    config = runtime.get_config("research")
    config = json.loads(json.dumps(config))  # a private copy
    if model:
        config["invoker"] = "litellm"
        config.pop("invoker_config", None)
        for agent in config["agent_configs"]:
            agent["model_name"] = model
    for agent in config["agent_configs"]:
        agent.setdefault("proxy", {}).setdefault("sandbox", {})["backend"] = backend
    return config


def run_demo(*, task: str = DEFAULT_TASK, backend: str = "docker", db: str | Path = "runs/demo.db",
             workdir: str | Path = "runs", model: str | None = None, out: Any = None, live: Any = None) -> Any:
    """Run the research tactic once and print its transcript; returns the tactic call session.

    `live`: a stream that shows what each cell prints while it runs (`lllm demo` gives stderr), or None."""
    from lllm._textsafe import safe_writer
    from lllm.core.runtime import build_tactic, get_default_runtime, load_package
    from lllm.logging import sqlite_store
    from lllm.sandbox.live import TerminalEcho, watch_cells

    out = safe_writer(out or sys.stdout)  # the transcript carries sandbox text: no terminal controls
    load_package(EXAMPLE_PACKAGE, strict=True)
    config = _config(get_default_runtime(), backend=backend, model=model)
    config["workdir"] = str(Path(workdir).resolve())
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    store = sqlite_store(str(db))
    try:
        tactic = build_tactic(config, log_store=store)
        try:
            with watch_cells(TerminalEcho(live)) if live is not None else contextlib.nullcontext():
                session = tactic(task, return_session=True, tags={"job": "demo"})
        except BaseException:
            failed = tactic.last_session
            if failed is not None:  # what happened before the failure, and where it is logged
                _print_transcript(failed, out)
                print(f"\nthe run FAILED; {_where_code_ran(failed)}", file=out)
                _print_log_line(failed, db, out)
            raise
        _print_transcript(session, out)
        cost = session.total_cost
        notebooks = sorted(Path(config["workdir"]).glob(f"{session.session_id}/*.ipynb"))
        print(f"\n{_where_code_ran(session)}", file=out)
        print(f"cost: ${cost.cost:.6f} ({cost.prompt_tokens} prompt + {cost.completion_tokens} completion tokens)"
              + _cost_notes(session), file=out)
        _print_log_line(session, db, out)
        for nb in notebooks:
            print(f"notebook: {nb}", file=out)
        print(f"explore it: lllm logs serve --db {db} --open --session {session.session_id[:12]}", file=out)
        return session
    finally:
        store.close()


def _where_code_ran(session: Any) -> str:
    """Where the agents' cells ran, from the sandboxes that really started (not from the configured backend)."""
    places = []
    for agent in session.agents.values():
        tools = getattr(agent, "proxy_tools", None)
        if tools is not None and tools.ran_in and tools.cells:
            removed = ", removed when the call ended" if tools.ran_in.startswith("a Docker") else ""
            places.append(f"{tools.ran_in}{removed}: {tools.cells} cell(s)")
    return "code ran in: " + ("; ".join(places) if places else "nowhere (no cell ran)")


def _cost_notes(session: Any) -> str:
    """Why the cost may not be a provider's bill (no price known for the model, a simulated price)."""
    notes = sorted({r.cost_note for r in session.records if getattr(r, "kind", None) == "model_call"
                    and getattr(r, "cost_note", None)})
    return "".join(f"\n  note: {note}" for note in notes)


def _print_log_line(session: Any, db: str | Path, out: Any) -> None:
    print(f"log: {Path(db).resolve()} (session {session.session_id}; `lllm logs show {session.session_id[:12]}"
          f" --db {db}`)", file=out)


def _print_transcript(session: Any, out: Any) -> None:
    for agent_name, agent in session.agents.items():
        for alias, dialog in agent.dialogs.items():
            print(f"=== {agent_name} / {alias} ===", file=out)
            for message in dialog.messages:
                role = getattr(message.role, "value", message.role)
                if role == "system":
                    continue
                if message.tool_calls:
                    said = _text(message.content).strip()
                    if said:  # a real model often says what it is about to do, in the same message
                        print(f"[{role}]\n{textwrap.indent(said, '    ')}", file=out)
                    for call in message.tool_calls:
                        args = call.arguments if isinstance(call.arguments, dict) else {"raw": call.arguments}
                        body = args.get("code") or json.dumps(args)
                        print(f"[{agent_name} -> {call.name}]\n{textwrap.indent(str(body), '    ')}", file=out)
                    continue
                text = _text(message.content)
                if role == "tool":
                    text = re.sub(r"\n{3,}", "\n\n", text)
                    shown = text if len(text) < 1500 else text[:1500] + f"\n... ({len(text)} chars)"
                    print(f"[{message.name or 'tool'} result]\n{textwrap.indent(shown, '    ')}", file=out)
                else:
                    print(f"[{role}]\n{textwrap.indent(text, '    ')}", file=out)


def _cmd_demo(args: argparse.Namespace) -> int:
    model = args.model or os.environ.get("LLLM_MODEL") or None
    run_demo(task=args.task, backend=args.backend, db=args.db, workdir=args.workdir, model=model,
             live=sys.stderr if args.live else None)
    return 0


def register(subparsers: Any) -> None:
    """Add `lllm demo` to the `lllm` command."""
    demo = subparsers.add_parser(
        "demo", help="the main job: a multi-proxy research session whose code runs in a Docker sandbox",
        description="Run the research analyst of examples/research (the seed's Pattern 1): query_api_doc, then "
                    "run_python calls in a Docker sandbox reaching fmp, fred and exa only through CALL_API. Offline "
                    "by default (scripted model, bundled data); --model or $LLLM_MODEL runs a real model.")
    demo.add_argument("--task", default=DEFAULT_TASK, help="the research question")
    demo.add_argument("--backend", choices=["docker", "local"], default="docker",
                      help="where the code runs (default docker; local is a kernel on the host, NOT isolated)")
    demo.add_argument("--db", default="runs/demo.db", help="the SQLite log (default runs/demo.db)")
    demo.add_argument("--workdir", default="runs", help="where notebooks go (default runs/)")
    demo.add_argument("--model", help="a litellm model name (e.g. gpt-4o); needs that provider's key")
    demo.add_argument("--no-live", dest="live", action="store_false",
                      help="do not show what the analyst's cells print while they run (on stderr, by default)")
    demo.set_defaults(func=_cmd_demo)
