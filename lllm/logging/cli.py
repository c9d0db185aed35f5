"""`lllm logs ls|show|cost|serve`: read the SQLite log store from the command line (or in a browser: `serve`).

The database is `--db PATH`, else `$LLLM_LOG_DB`, else `[logging] db` of the nearest `lllm.toml` (relative
to that file). Nothing is created: a missing database is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lllm.errors import LLLMError, UsageError

__all__ = ["register", "resolve_db_path"]


def resolve_db_path(given: str | None, *, must_exist: bool = True) -> str:
    """The log database a command means (see the module docstring)."""
    path = given or os.environ.get("LLLM_LOG_DB")
    if not path:
        path = _db_from_toml()
    if not path:
        raise UsageError("no log database: pass --db PATH, set LLLM_LOG_DB, or add [logging] db = \"runs.db\" "
                         "to lllm.toml")
    if must_exist and path != ":memory:" and not Path(path).expanduser().is_file():
        raise UsageError(f"no log database at {path!r}; a tactic built with log_store=sqlite_store({path!r}) "
                         "creates it", path=path)
    return path


def _db_from_toml() -> str | None:
    import tomllib

    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        toml = folder / "lllm.toml"
        if toml.is_file():
            try:
                data = tomllib.loads(toml.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError):
                return None
            db = (data.get("logging") or {}).get("db")
            return str((folder / db).resolve()) if isinstance(db, str) and db else None
    return None


def parse_tags(items: list[str] | None) -> dict[str, str]:
    """`["env=prod", "v=1.2"]` -> `{"env": "prod", "v": "1.2"}`."""
    tags: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"a tag is KEY=VALUE, got {item!r}", value=item)
        tags[key] = value
    return tags


def _open(args: argparse.Namespace) -> Any:
    from lllm.logging import sqlite_store

    return sqlite_store(resolve_db_path(args.db), readonly=True)  # a reader never changes the log


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _cut(text: Any, n: int) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cmd_ls(args: argparse.Namespace) -> int:
    with _open(args) as store:
        sessions = store.list_sessions(tags=parse_tags(args.tag), state=args.state, since=args.since,
                                       tactic=args.tactic, batch_id=args.batch, include_children=args.all,
                                       limit=args.limit)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in sessions], indent=2))
        return 0
    rows = [[s.id[:12], s.tactic, s.state, _when(s.started_at), f"{s.duration_s or 0:.2f}s", f"${s.cost:.5f}",
             str(s.prompt_tokens + s.completion_tokens), _cut(json.dumps(s.tags) if s.tags else "", 30),
             _cut(s.error or s.last_event, 50)] for s in sessions]
    print(_table(rows, ["ID", "TACTIC", "STATE", "STARTED", "TIME", "COST", "TOKENS", "TAGS", "LAST EVENT / ERROR"]))
    return 0


def _indent(text: str, pad: str, full: bool, limit: int = 600) -> list[str]:
    if not full and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more chars; --full shows all)"
    return [pad + line for line in text.splitlines() or [""]]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _tool_arguments(raw: str | None) -> tuple[str, str | None]:
    """A tool call's arguments as a one-line summary, plus its code when it has a `code` argument."""
    if not raw:
        return "()", None
    try:
        args = json.loads(raw)
    except ValueError:
        return f"({_cut(raw, 80)})  [not valid JSON]", None
    if isinstance(args, dict) and isinstance(args.get("code"), str):
        rest = {k: v for k, v in args.items() if k != "code"}
        return f"({_cut(json.dumps(rest), 60)})" if rest else "", args["code"]
    return f"({_cut(json.dumps(args), 100)})", None


def _record_lines(r: Any, full: bool, tool: Any = None) -> list[str]:
    """One trace record: a summary line, then (indented) the code, output and payloads it carries. With `tool`
    (the tool call it ran inside) it is indented under it, and a cell's code or output that repeats the tool
    call's is not printed again."""
    if isinstance(r, dict):
        return [f"  {r.get('kind', '?'):15} {json.dumps(r)[:120]}"]
    kind = r.kind
    who = getattr(r, "agent", None) or ""
    dialog = getattr(r, "dialog", None)
    if dialog:
        who = f"{who}/{dialog}"
    status = getattr(r, "status", "")
    extra = ""
    body: list[tuple[str, str]] = []
    if kind == "model_call":
        extra = f"{r.model} {r.prompt_tokens}+{r.completion_tokens} tok ${r.cost:.5f} {r.latency_s * 1000:.0f} ms"
        if getattr(r, "cost_note", None):
            extra += f" (cost: {_cut(r.cost_note, 100)})"
    elif kind == "agent_call":
        extra = f"{r.model_calls} model calls, {r.exception_retries} retries, {r.interrupts} tool rounds"
    elif kind == "tool_call":
        summary, code = _tool_arguments(r.arguments)
        extra = f"{r.name}{summary} {r.duration_s * 1000:.0f} ms" + (f", {r.images} image(s)" if r.images else "")
        if code is not None:
            body.append(("code", code))
        if r.result is not None and r.status == "ok":
            body.append(("result", r.result))
    elif kind == "cell":
        extra = f"sandbox {r.sandbox_id[:12]} {r.duration_s:.2f}s" + (f", {len(r.images)} image(s)" if r.images else "")
        tool_code = _tool_arguments(tool.arguments)[1] if tool is not None else None
        if tool_code is not None and tool_code.strip() == r.code.strip():
            extra += " (the code above)"
        else:
            body.append(("code", r.code))
        if r.output and not (tool is not None and r.output.strip() in (tool.result or "")):
            body.append(("output", r.output))
        for notice in r.notices:
            body.append(("notice", notice))
    elif kind == "api_call":
        extra = f"{r.proxy}/{r.endpoint} {r.latency_s * 1000:.0f} ms" + (f" x{r.count}" if r.count > 1 else "")
        if r.params:
            body.append(("params", r.params))
        if r.answer:
            body.append(("answer", r.answer))
    elif kind == "package":
        extra = f"{r.package or '?'} {r.version or ''} {r.bytes} bytes from {r.index_url}".replace("  ", " ")
        if r.filename:
            extra += f" ({r.filename})"
    elif kind == "browser_action":
        extra = f"{r.action} {_cut(r.target, 40)}"
        if r.url:
            body.append(("page", r.url))
        if r.screenshot:
            body.append(("screenshot", f"{r.screenshot_mime or 'image'}, {len(r.screenshot) * 3 // 4 // 1024} KB "
                                       "(`lllm logs serve` shows it)"))
        if r.code:
            body.append(("code", r.code))
        if r.result:
            body.append(("result", r.result))
    elif kind == "test_run":
        status = "passed" if r.exit_code == 0 else f"exit {r.exit_code}"
        extra = (f"{_cut(r.path, 40)}{' ' + _cut(r.selection, 40) if r.selection else ''}: {r.passed} passed, "
                 f"{r.failed} failed, {r.errors} errors in {r.duration_s:.2f}s")
        if r.summary:
            body.append(("summary", r.summary))
    err = f"  error: {_cut(r.error, 80) if not full else r.error}" if getattr(r, "error", None) else ""
    pad = "    " if tool is not None else ""
    lines = [f"  {_when(r.started_at)}  {pad}{kind:15} {who:24} {status:8} {extra}{err}"]
    for label, text in body:
        if label in ("page", "screenshot"):  # one short line each
            lines.append(f"      {pad}{label}: {text if full else _cut(text, 160)}")
            continue
        lines.append(f"      {pad}{label}:")
        lines += _indent(text, f"        {pad}", full)
    return lines


def _inside(records: list[Any]) -> dict[int, Any]:
    """index of a cell, CALL_API or browser action -> the tool call it ran inside (same agent, or none recorded,
    started within the call's time span)."""
    tools = [r for r in records if getattr(r, "kind", None) == "tool_call"]
    out: dict[int, Any] = {}
    for i, r in enumerate(records):
        if getattr(r, "kind", None) not in ("cell", "api_call", "browser_action"):
            continue
        agent = getattr(r, "agent", None)
        for t in tools:
            if t.started_at <= r.started_at <= t.started_at + t.duration_s + 0.005 and agent in (None, t.agent):
                out[i] = t
    return out


def _message_text(m: dict[str, Any], full: bool) -> str:
    content = m.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") if p.get("type") == "text" else f"[{p.get('type', 'part')}]" for p in content
                 if isinstance(p, dict)]
        text = " ".join(x for x in parts if x)
    else:
        text = "" if content is None else str(content)
    calls = m.get("tool_calls") or []
    if calls:
        shown = []
        for call in calls:
            summary, code = _tool_arguments(call.get("raw_arguments") or json.dumps(call.get("arguments") or {}))
            shown.append(f"{call.get('name')}{summary}" + (f" code: {code if full else _cut(code, 100)}" if code else ""))
        text = (text + " " if text else "") + "calls " + "; ".join(shown)
    if m.get("role") == "tool":
        text = f"[{m.get('name') or 'tool'}] {text}"
    return text if full else _cut(text, 160)


def _dialog_lines(data: dict[str, Any], depth: int, full: bool) -> list[str]:
    pad = "  " * depth
    split = data.get("split_point")
    head = f"{pad}- dialog {data.get('name')!r}" + (f" (forked at message {split})" if split is not None else "")
    lines = [head]
    start = split or 0
    for m in (data.get("messages") or [])[start:]:
        lines.append(f"{pad}    {m.get('role', '?')}: {_message_text(m, full)}")
    for child in data.get("children") or []:
        lines += _dialog_lines(child, depth + 1, full)
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        detail = store.load_session(args.session_id)
    if args.json:
        print(json.dumps(detail.model_dump(mode="json"), indent=2, default=str))
        return 0
    s = detail.session
    print(f"session  {s.id}\ntactic   {s.tactic}\nstate    {s.state}  (last event: {s.last_event})")
    print(f"started  {_when(s.started_at)}   ended {_when(s.ended_at)}   took {s.duration_s or 0:.3f}s")
    print(f"cost     ${s.cost:.6f}   tokens {s.prompt_tokens} prompt + {s.completion_tokens} completion   "
          f"{_count(s.model_calls, 'model call')}, {_count(s.agent_calls, 'agent call')}")
    for agent, path in sorted((s.metadata.get("notebooks") or {}).items()):
        image = (s.metadata.get("sandbox_images") or {}).get(agent)
        print(f"notebook {agent}: {path}" + (f"   (sandbox image {image})" if image else ""))
    if s.tags:
        print(f"tags     {json.dumps(s.tags)}")
    if s.batch_id:
        print(f"batch    {s.batch_id} task {s.task_index}")
    if s.metadata.get("dropped_records"):
        print(f"dropped  {s.metadata['dropped_records']} trace records (the log's writer fell too far behind)")
    notebooks = s.metadata.get("notebooks")
    if isinstance(notebooks, dict):
        for agent, path in sorted(notebooks.items()):
            print(f"notebook {agent}: {path}")
    if s.metadata.get("sandbox_session"):
        print(f"sandbox  session {s.metadata['sandbox_session']!r} (kept between calls)")
    if s.task is not None:
        print(f"task     {s.task if args.full else _cut(s.task, 200)}")
    if s.state == "ok":
        print(f"result   {s.result if args.full else _cut(s.result, 200)}")
    if s.error:
        print(f"error    {s.error}")
        if s.traceback:
            print(s.traceback.rstrip())
    print(f"trace ({len(detail.records)} records; what ran inside a tool call is indented under it):")
    inside = _inside(detail.records)
    for i, r in enumerate(detail.records):
        for line in _record_lines(r, args.full, inside.get(i)):
            print(line)
    for child in detail.children:
        print(f"  sub-tactic {child.tactic} {child.id[:12]} {child.state} ${child.cost:.5f}")
    if detail.dialogs:
        print("dialogs:")
        for row in detail.dialogs:
            print(f"  agent {row.agent}:")
            for line in _dialog_lines(row.data, 2, args.full):
                print(line)
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    with _open(args) as store:
        rows = store.cost_summary(group_by=args.by, since=args.since, tags=parse_tags(args.tag))
    if args.json:
        print(json.dumps([r.model_dump() for r in rows], indent=2))
        return 0
    table = [[str(r.group), str(r.sessions), str(r.errors), f"${r.cost:.5f}", str(r.prompt_tokens),
              str(r.completion_tokens)] for r in rows]
    total = sum(r.cost for r in rows)
    print(_table(table, [args.by.upper(), "SESSIONS", "ERRORS", "COST", "PROMPT TOK", "COMPLETION TOK"]))
    print(f"total ${total:.5f}")
    noted = [(r.group, note) for r in rows for note in r.notes]
    if noted:  # a $0 that is not a real zero, or a simulated figure, must say so next to the sum
        print("notes on these costs:")
        for group, note in noted:
            print(f"  {group}: {note}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from lllm.logging.explorer import serve

    serve(resolve_db_path(args.db), port=args.port, host=args.host, open_browser=args.open, session=args.session)
    return 0


def register(subparsers: Any) -> None:
    """Add the `logs` command group to the `lllm` parser."""
    logs = subparsers.add_parser("logs", help="read the SQLite log of tactic calls",
                                 description="Read the SQLite log store: sessions, traces, dialogs and costs. "
                                             "The database is --db, else $LLLM_LOG_DB, else [logging] db in lllm.toml.")
    logs.set_defaults(func=lambda a: (logs.print_help(), 0)[1])
    sub = logs.add_subparsers(dest="logs_command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="the log database (default: $LLLM_LOG_DB or [logging] db in lllm.toml)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ls = sub.add_parser("ls", help="list sessions, newest first", description="List tactic call sessions, newest first.")
    common(ls)
    ls.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only sessions with this tag (repeatable)")
    ls.add_argument("--state", choices=["running", "ok", "error"], help="only sessions in this state")
    ls.add_argument("--since", help="only sessions started since: 30m, 2h, 7d, an ISO date or a unix time")
    ls.add_argument("--tactic", help="only this tactic")
    ls.add_argument("--batch", help="only the sessions of this batch id")
    ls.add_argument("--all", action="store_true", help="include sub-tactic sessions")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.set_defaults(func=_cmd_ls)

    show = sub.add_parser("show", help="one session: its trace, error and dialogs",
                          description="Show one session: totals, every trace record, the error with its "
                                      "traceback, sub-tactic calls and each agent's dialog tree.")
    common(show)
    show.add_argument("session_id", help="the session id (a unique prefix is enough)")
    show.add_argument("--full", action="store_true", help="do not shorten messages, task and result")
    show.set_defaults(func=_cmd_show)

    cost = sub.add_parser("cost", help="cost and tokens grouped by tactic, tag, batch, state or model",
                          description="Sum cost and tokens of top-level sessions by a group.")
    common(cost)
    cost.add_argument("--by", default="tactic", help="tactic (default), tag:KEY, batch, state or model")
    cost.add_argument("--since", help="only sessions started since: 30m, 2h, 7d, an ISO date or a unix time")
    cost.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only sessions with this tag")
    cost.set_defaults(func=_cmd_cost)

    serve = sub.add_parser("serve", help="the run explorer: a local web app over the log (read-only)",
                           description="Serve the run explorer on this machine: sessions (filter, sort, search), "
                                       "each session's timeline, dialogs, cells, CALL_APIs and browser steps, costs "
                                       "and batches, plus Datasette's table browsing. The log is opened read-only; "
                                       "runs may keep writing to it (reload to see new sessions). Needs no internet.")
    serve.add_argument("--db", help="the log database (default: $LLLM_LOG_DB or [logging] db in lllm.toml)")
    serve.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1, this "
                                                           "machine only)")
    serve.add_argument("--open", action="store_true", help="open the explorer in the default web browser")
    serve.add_argument("--session", help="start at this session's page (an id or a unique prefix; checked first)")
    serve.set_defaults(func=_cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """`python -m lllm.logging.cli ...` (the same as `lllm logs ...`; the `lllm` command sits above this room)."""
    parser = argparse.ArgumentParser(prog="python -m lllm.logging.cli", description="Read the SQLite log store.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["logs", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args) or 0)
    except LLLMError as exc:
        print(f"lllm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
