"""The `lllm browser` command group: replay scripts from the log store, and URL policy checks.

- `lllm browser replay SESSION_ID [--db runs.db] [--agent NAME] [-o replay.py]` writes the browser actions a
  session recorded as a plain Playwright script that replays them without a model.
- `lllm browser check URL... [--allow DOMAIN ...] [--allow-private] [--allow-file]` says whether a
  `computer_use:` policy would let the browser reach each URL, and why not.

Nothing heavy loads at start-up: the log store and the policy load when a command runs; Playwright never.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lllm.errors import UsageError

__all__ = ["register"]


def _cmd_replay(args: argparse.Namespace) -> int:
    from lllm.logging.cli import resolve_db_path
    from lllm.logging import sqlite_store
    from lllm.tools.cua.replay import script_from_records

    with sqlite_store(resolve_db_path(args.db)) as store:
        detail = store.load_session(args.session_id)
    records = [r for r in detail.of_kind("browser_action") if args.agent is None or r.agent == args.agent]
    if not records:
        agents = sorted({r.agent or "?" for r in detail.of_kind("browser_action")})
        hint = f" (agents with browser actions: {agents})" if agents else ""
        raise UsageError(f"session {detail.session.id!r} recorded no browser actions"
                         f"{' of agent ' + repr(args.agent) if args.agent else ''}{hint}", session=args.session_id)
    several = {r.agent for r in records}
    if len(several) > 1:
        raise UsageError(f"session {detail.session.id!r} has browser actions of several agents {sorted(map(str, several))}; "
                         "pick one with --agent", session=args.session_id)
    name = Path(args.output).name if args.output else "replay.py"
    script = script_from_records(records, filename=name)
    if args.output:
        Path(args.output).write_text(script, encoding="utf-8")
        print(f"wrote {args.output} ({len(records)} actions)")
    else:
        sys.stdout.write(script)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from lllm.tools.cua.safety import UrlPolicy

    policy = UrlPolicy(allowed_domains=args.allow, allow_private=args.allow_private, allow_file=args.allow_file)
    blocked = 0
    for url in args.urls:
        verdict = policy.check_url(url)
        if verdict.allowed:
            where = f" -> {', '.join(verdict.addresses)}" if verdict.addresses else ""
            print(f"allowed  {url}{where}")
        else:
            blocked += 1
            hook = " (a confirmation hook may allow it)" if verdict.off_allowlist else ""
            print(f"blocked  {url}: {verdict.reason}{hook}")
    return 1 if blocked else 0


def register(subparsers: Any) -> None:
    """Add the `browser` command group to the `lllm` parser."""
    browser = subparsers.add_parser("browser", help="the computer-use browser: replay scripts and URL checks",
                                    description="Tools for the computer-use browser (lllm.tools.cua).")
    browser.set_defaults(func=lambda a: (browser.print_help(), 0)[1])
    sub = browser.add_subparsers(dest="browser_command", metavar="COMMAND")

    replay = sub.add_parser("replay", help="a session's browser actions as a Playwright script",
                            description="Write the browser actions a session recorded in the log store as a "
                                        "plain Playwright script that replays them without a model.")
    replay.add_argument("session_id", help="the session id (a unique prefix is enough)")
    replay.add_argument("--db", help="the log database (default: $LLLM_LOG_DB or [logging] db in lllm.toml)")
    replay.add_argument("--agent", help="the agent whose actions to replay (when several agents browsed)")
    replay.add_argument("-o", "--output", help="write the script to this file instead of stdout")
    replay.set_defaults(func=_cmd_replay)

    check = sub.add_parser("check", help="would the browser policy allow these URLs?",
                           description="Check URLs against a computer_use policy; exits 1 when any is blocked.")
    check.add_argument("urls", nargs="+", help="the URLs to check")
    check.add_argument("--allow", action="append", metavar="DOMAIN",
                       help="an allowed_domains entry (repeatable); without any, every public host is allowed")
    check.add_argument("--allow-private", action="store_true", help="allow private and loopback addresses")
    check.add_argument("--allow-file", action="store_true", help="allow file:// URLs")
    check.set_defaults(func=_cmd_check)
